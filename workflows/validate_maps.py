#!/usr/bin/env python3
"""Compare binned cosmic-ray maps from the reference MC and from generator bundles.

The same small LiteBIRD observation is simulated several times with cosmic rays from
``toast_crab.ops.SimCosmicRayMC`` (the reference MC) and from
``toast_crab.ops.InjectCRAB`` (each bundle). Every realization is binned into CR-only
IQU maps. The script compares the map RMS and the TT, EE and BB spectra of each
bundle with the MC mean and its realization scatter
(``toast_crab.validation.maps``), and writes ``maps.json``, ``maps.png``,
``maps.md`` and the FITS maps to ``--out_dir``.

Run the default size (8 detectors of L4-140, 6 h, nside 32, 6 realizations each):

    export OMP_NUM_THREADS=1
    mpiexec -n 2 python workflows/validate_maps.py \\
        --mc data/mc_train_v1.h5 --out_dir out/validate_maps

``--mc`` takes the MC configuration and phi from a training-set file, so the MC maps
match the data the bundle was trained on; without it SimCosmicRayMC runs the MC
defaults at phi = 0.35 GV.
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

import toast
from toast.mpi import MPI

from toast_crab import __version__
from toast_crab.bundle import default_bundle_path, read_card
from toast_crab.validation.maps import MapSetup, run_map_comparison
from toast_crab.validation.report import git_commit, write_json

# phi of the reference training set mc_train_v1, used without --mc.
DEFAULT_PHI_GV = 0.35


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Map-level comparison of cosmic-ray maps: reference MC "
        "(SimCosmicRayMC) vs generator bundles (InjectCRAB)."
    )
    parser.add_argument("--bundle", action="append", default=None,
                        help="Model bundle ('.keras' or '.json'); repeat for several. "
                        "Default: the bundle shipped with toast_crab")
    parser.add_argument("--mc", default=None,
                        help="MC training-set file whose MC configuration and phi are used")
    parser.add_argument("--out_dir", default="out/validate_maps", help="Output folder")
    parser.add_argument("--realizations", type=int, default=6,
                        help="Realizations per injector (>= 2)")
    parser.add_argument("--channel", default="L4-140", help="LiteBIRD IMo channel")
    parser.add_argument("--n_detectors", type=int, default=8,
                        help="Detectors in IMo order (even)")
    parser.add_argument("--obs_hours", type=float, default=6.0, help="Observation length, hours")
    parser.add_argument("--num_obs", type=int, default=1, help="Number of observations")
    parser.add_argument("--nside", type=int, default=32, help="HEALPix nside")
    parser.add_argument("--sample_rate", type=float, default=19.1,
                        help="Sample rate in Hz; it must match the bundles")
    return parser.parse_args(argv)


def mc_configuration(path):
    """Return the MC configuration dict of a training-set file (or the defaults)."""
    if path is None:
        from toast_crab.mc import MCConfig

        config = MCConfig().to_dict()
        config["environment"]["phi_gv"] = DEFAULT_PHI_GV
        return config, "MC defaults with phi = 0.35 GV"
    from toast_crab.datasets import read_training_set

    provenance = read_training_set(path).provenance
    if "mc_config" not in provenance:
        raise ValueError(f"{path} has no 'mc_config' in its provenance; drop --mc.")
    return provenance["mc_config"], f"MC configuration of {os.path.abspath(path)}"


def write_markdown(path, document):
    lines = ["# Map-level validation", "", document["description"], "",
             "| quantity | statistic | " + " | ".join(document["candidates"]) + " |",
             "|---|---|" + "---|" * len(document["candidates"])]
    for row in document["rows"]:
        cells = [row["quantity"], row["statistic"]]
        for label in document["candidates"]:
            entry = row["values"].get(label)
            verdict = "pass" if entry and entry["passed"] else "**FAIL**"
            cells.append(f"{entry['value']:.3g} {verdict}" if entry else "n/a")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", "![spectra and map RMS](maps.png)", ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def main(argv=None):
    args = parse_arguments(argv)
    comm, n_procs, rank = toast.get_world()
    started = time.perf_counter()
    bundles = args.bundle or [default_bundle_path()]
    cards = [read_card(path) for path in bundles]
    labels = []
    for card in cards:
        label = card["name"]
        while label in labels or label == "MC half vs half":
            label += "#"
        labels.append(label)
    mc_config, mc_source = mc_configuration(args.mc)
    setup = MapSetup(
        channel=args.channel, n_detectors=args.n_detectors, obs_hours=args.obs_hours,
        num_obs=args.num_obs, nside=args.nside, sample_rate_hz=args.sample_rate,
    )
    if rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
    if comm is not None:
        comm.barrier()

    def progress(message):
        if rank == 0:
            print(f"validate_maps: {message} ({time.perf_counter() - started:.0f} s)", flush=True)

    document, plot = run_map_comparison(
        dict(zip(labels, bundles)), mc_config, setup, args.realizations, args.out_dir,
        progress=progress, comm=comm,
    )
    if rank != 0:
        return 0
    if document.get("skipped"):
        print(f"validate_maps: skipped: {document['skipped']}", file=sys.stderr)
        return 1
    document.update({
        "command": " ".join(sys.argv),
        "toast_crab_version": __version__,
        "git_commit": git_commit(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "n_processes": n_procs,
        "mc_source": mc_source,
        "bundles": [{"label": label, "path": os.path.abspath(path), "card": card}
                    for label, path, card in zip(labels, bundles, cards)],
        "wall_time_s": time.perf_counter() - started,
    })
    write_json(os.path.join(args.out_dir, "maps.json"), document)
    write_markdown(os.path.join(args.out_dir, "maps.md"), document)
    for row in document["rows"]:
        verdicts = ", ".join(
            f"{label}: {'pass' if entry['passed'] else 'FAIL'} ({entry['value']:.3g})"
            for label, entry in row["values"].items()
        )
        print(f"validate_maps: {row['quantity']}: {verdicts}")
    print(f"validate_maps: wrote {args.out_dir}/maps.md, maps.json and {plot} in "
          f"{document['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    world = toast.get_world()[0]
    try:
        status = main()
    except (ValueError, FileNotFoundError) as err:
        print(f"validate_maps: error: {err}", file=sys.stderr)
        status = 2
        if world is not None and world.size > 1:
            world.Abort(status)
    sys.exit(status)
