"""``crab-mc``: write a training set of reference-MC chunks to HDF5.

Example::

    crab-mc --config examples/mc_default.toml --n-chunks 20000 --n-runs 100 --seed 1 \\
        --out train.h5 --plot train.png
    crab-mc --n-chunks 2000 --n-detectors 12 --out group.h5   # 12 neighbouring detectors
    crab-mc --n-chunks 4000 --n-runs 20 --phi-gv 0.75 --out solar_max.h5
"""

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from toast_crab import _version
from toast_crab.mc.config import MCConfig
from toast_crab.mc.simulate import simulate_training_chunks

__all__ = ["main", "build_parser"]


def build_parser():
    """Build the argument parser of ``crab-mc``."""
    parser = argparse.ArgumentParser(
        prog="crab-mc",
        description=(
            "Simulate cosmic-ray timestream chunks with the toast_crab reference MC and write "
            "them as an HDF5 training set (chunks in W, per-chunk labels, provenance)."
        ),
    )
    parser.add_argument(
        "--config", type=Path, default=None,
        help="TOML file with [environment], [detector], [wafer], [readout] tables; "
        "built-in defaults when left out",
    )
    parser.add_argument("--n-chunks", type=int, required=True, help="number of chunks to write")
    parser.add_argument(
        "--n-runs", type=int, default=None,
        help="independent continuous MC runs the chunks are cut from (default: one run per "
        "200 chunks, at least 1)",
    )
    parser.add_argument("--chunk-length", type=int, default=1060, help="samples per chunk")
    parser.add_argument(
        "--n-detectors", type=int, default=1,
        help="detectors per chunk on one wafer: 1 writes (n_chunks, chunk_length) chunks, "
        "N > 1 writes (n_chunks, N, chunk_length) chunks of neighbouring detectors",
    )
    parser.add_argument(
        "--phi-gv", type=float, default=None,
        help="solar modulation potential in GV for every run; replaces the config's "
        "phi_gv, phi_range_gv and mission_date (e.g. 0.30 at solar minimum, 0.75 at maximum)",
    )
    parser.add_argument("--seed", type=int, default=0, help="root seed (non-negative integer)")
    parser.add_argument("--workers", type=int, default=1, help="processes that simulate runs")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file")
    parser.add_argument(
        "--plot", type=Path, default=None,
        help="also write a PNG with a stretch of timestream and the sample histogram",
    )
    return parser


def _git_commit():
    """Return the git commit of the source tree, or None outside a repository."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def main(argv=None):
    """Run ``crab-mc``; returns the exit status (0 success, 2 invalid input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = sys.argv[1:] if argv is None else list(argv)

    try:
        config = MCConfig() if args.config is None else MCConfig.from_toml(args.config)
        if args.phi_gv is not None:
            import dataclasses

            environment = dataclasses.replace(
                config.environment, phi_gv=args.phi_gv, phi_range_gv=None, mission_date=None
            )
            config = dataclasses.replace(config, environment=environment)
        n_runs = args.n_runs if args.n_runs is not None else max(1, args.n_chunks // 200)
        from toast_crab.datasets import write_training_set

        start = time.perf_counter()
        with tqdm(total=args.n_chunks, unit="chunk", desc="crab-mc") as bar:
            result = simulate_training_chunks(
                config, args.n_chunks, chunk_length=args.chunk_length, seed=args.seed,
                n_runs=n_runs, n_detectors=args.n_detectors, progress=bar.update,
                n_workers=args.workers,
            )
        simulate_s = time.perf_counter() - start
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"crab-mc: error: {error}", file=sys.stderr)
        return 2

    provenance = dict(result.provenance)
    provenance.update(
        {
            "command": shlex.join(["crab-mc", *argv_list]),
            "config_file": None if args.config is None else str(args.config.resolve()),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
            "toast_crab_version": _version.__version__,
            "simulation_seconds": round(simulate_s, 3),
        }
    )
    write_training_set(
        str(args.out), result.chunks, result.labels, result.sample_rate_hz, provenance
    )
    total_s = time.perf_counter() - start
    size_mb = os.path.getsize(args.out) / 1.0e6
    detectors = "" if args.n_detectors == 1 else f"{args.n_detectors} detectors x "
    print(
        f"crab-mc: wrote {args.out} ({size_mb:.1f} MB): {args.n_chunks} chunks x {detectors}"
        f"{args.chunk_length} samples at {result.sample_rate_hz:g} Hz from {n_runs} runs, "
        f"seed {args.seed}, in {total_s:.1f} s ({args.n_chunks / simulate_s:.1f} chunks/s "
        "simulated)"
    )
    if args.plot is not None:
        from toast_crab.mc.plots import plot_chunks

        plot_chunks(
            result.chunks, result.sample_rate_hz, args.plot, labels=result.labels,
            title=f"toast_crab reference MC, phi = {result.labels['phi_gv'][0]:.3g} GV",
        )
        print(f"crab-mc: wrote plot {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
