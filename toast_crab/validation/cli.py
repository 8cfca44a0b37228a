"""``crab-validate``: compare generator bundles with the reference MC and write a report.

Example::

    crab-validate --bundle toast_crab/data/default_model/seamless.keras \\
        --mc data/mc_train_v1.h5 --out out/validation

The report folder contains ``metrics.json`` (every metric with its MC-vs-MC values,
threshold and verdict, the model cards, MC provenance, seeds and the command),
PNG plots and ``report.md``. Exit status: 0 when the report was written (whatever
the verdicts), 2 on invalid input.
"""

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time

import numpy as np

__all__ = ["build_parser", "main", "run_validation"]

# Defaults of the command line; docs/validation.md states the wall times they give.
DEFAULT_N_CHUNKS = 2000
DEFAULT_N_CALIBRATION = 5
DEFAULT_SPLIT_FRACTION = 0.1


def build_parser():
    """Return the argument parser of crab-validate."""
    parser = argparse.ArgumentParser(
        prog="crab-validate",
        description="Compare generator model bundles with the reference cosmic-ray MC on "
        "held-out data: timestream metrics calibrated on MC-vs-MC, optional map-level "
        "comparison, JSON + PNG + Markdown report.",
    )
    parser.add_argument(
        "--bundle", action="append", default=None, metavar="PATH",
        help="Model bundle ('.keras' or its '.json' card); repeat for several bundles side "
        "by side. Default: the bundle shipped with toast_crab",
    )
    parser.add_argument("--mc", required=True, metavar="PATH",
                        help="MC training-set file (HDF5 written by crab-mc)")
    parser.add_argument("--out", required=True, metavar="DIR", help="Report folder (created)")
    parser.add_argument(
        "--group-mc", default=None, metavar="PATH",
        help="MC training-set file of detector groups (format version 2, from crab-mc "
        "--n-detectors N); adds the detector correlation-matrix metrics of generated "
        "groups in the 'detector' and 'wafer' stream modes of InjectCRAB",
    )

    parser.add_argument("--n-chunks", type=int, default=DEFAULT_N_CHUNKS,
                        help="Chunks per set (reference, each MC set, each generator draw); "
                        "cut to the held-out size if larger")
    parser.add_argument("--n-calibration", type=int, default=DEFAULT_N_CALIBRATION,
                        help="Independent MC sets compared with the reference to set the noise "
                        "floor (at least 2)")
    parser.add_argument("--n-c2st-calibration", type=int, default=3,
                        help="MC-vs-MC classifier tests (each trains a network); at most "
                        "--n-calibration")

    parser.add_argument("--seed", type=int, default=0,
                        help="Seed: generator realization (the independence draw uses seed + 1), "
                        "C2ST classifiers and fresh MC")
    parser.add_argument("--fresh-mc", action="store_true",
                        help="Simulate the reference and calibration MC with the MC file's "
                        "configuration and a new seed instead of using held-out runs")
    parser.add_argument("--split-fraction", type=float, default=DEFAULT_SPLIT_FRACTION,
                        help="Validation fraction assumed for bundles whose card does not "
                        "record their split")

    parser.add_argument("--split-seed", type=int, default=None,
                        help="Split seed assumed for such bundles (default: the card's "
                        "training seed, else 0)")
    parser.add_argument("--no-c2st", action="store_true", help="Skip the classifier test")
    parser.add_argument("--batch-size", type=int, default=256, help="Generator batch size")
    parser.add_argument("--mc-workers", type=int, default=1,
                        help="Processes for fresh MC simulation")

    parser.add_argument("--maps", action="store_true",
                        help="Also compare binned CR maps and their spectra (TOAST; minutes)")
    parser.add_argument("--map-realizations", type=int, default=6,
                        help="Realizations per injector at map level")
    parser.add_argument("--map-hours", type=float, default=2.0,
                        help="Observation length of the map-level run, hours")
    parser.add_argument("--map-detectors", type=int, default=4,
                        help="Detectors of the map-level run (even)")
    parser.add_argument("--map-nside", type=int, default=32, help="HEALPix nside of the maps")

    parser.add_argument("--phi-gv", type=float, default=None,
                        help="Solar modulation potential (GV) for flux-conditioned bundles; "
                        "default: the phi_gv label of the held-out MC runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow threads; 0 uses OMP_NUM_THREADS, or every core "
                        "when it is unset")
    parser.add_argument("--quiet", action="store_true", help="No progress bar")
    return parser


def _check_options(args):
    if args.n_chunks < 16:
        raise ValueError(f"--n-chunks must be at least 16. Got {args.n_chunks}.")
    if args.n_calibration < 2:
        raise ValueError(
            f"--n-calibration must be at least 2 (the noise floor needs several MC sets). "
            f"Got {args.n_calibration}."
        )
    if args.n_c2st_calibration < 1 and not args.no_c2st:
        raise ValueError(
            f"--n-c2st-calibration must be at least 1 (or pass --no-c2st). "
            f"Got {args.n_c2st_calibration}."
        )
    if not 0 < args.split_fraction < 1:
        raise ValueError(f"--split-fraction must be in (0, 1). Got {args.split_fraction}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1. Got {args.batch_size}.")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0. Got {args.threads}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0. Got {args.seed}.")


def _unique_labels(cards):
    labels = []
    for card in cards:
        label = str(card.get("name", "bundle"))
        while label in labels or label in ("held-out MC",) or label.startswith("MC set "):
            label = f"{label}#{len(labels) + 1}"
        labels.append(label)
    return labels


class _Progress:
    """A tqdm bar over the named steps of a run (or silence)."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="crab-validate", unit="step", file=sys.stderr)
        self.started = False

    def __call__(self, message):
        if self.bar is None:
            return
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(message[:40])

    def close(self):
        if self.bar is not None:
            if self.started:
                self.bar.update(1)
            # The step count is estimated before the run; end the bar at 100 %.
            self.bar.total = self.bar.n
            self.bar.refresh()
            self.bar.close()


def _load_mc(path, notes):
    from ..datasets import read_training_set

    training_set = read_training_set(path)
    if training_set.chunks.ndim == 3:
        notes.append(
            f"The MC file holds groups of {training_set.chunks.shape[1]} detectors; detector 0 "
            "of each group is used (generators make single-detector chunks)."
        )
        training_set.chunks = np.ascontiguousarray(training_set.chunks[:, 0, :])
    return training_set


def _held_out(cards, labels, training_set, mc_path, mc_sha256, args, notes):
    from .sources import bundle_split

    held_out = set(int(r) for r in np.unique(training_set.labels["run_id"]))
    training_runs = {}
    for card, label in zip(cards, labels):
        seed = args.split_seed
        if seed is None:
            seed = int(card.get("training", {}).get("seed", 0) or 0)
        split = bundle_split(card, training_set, mc_path, mc_sha256, args.split_fraction, seed)
        notes.append(split.note)
        held_out &= set(int(r) for r in split.held_out_runs)
        training_runs[label] = split.training_runs
    return np.array(sorted(held_out), dtype=np.int64), training_runs


def _mc_sets(args, training_set, held_out_runs, notes, progress):
    """Return (reference, calibration list, description dict)."""
    from .sources import fresh_mc_sets, reference_and_calibration

    mc_config = training_set.provenance.get("mc_config")
    runs_in_file = np.unique(training_set.labels["run_id"]).size
    chunks_per_run = max(1, training_set.n_chunks // runs_in_file)
    descriptions = {}
    if args.fresh_mc:
        if mc_config is None:
            raise ValueError(
                f"--fresh-mc needs the MC configuration, but {args.mc} has no 'mc_config' in "
                "its provenance. Drop --fresh-mc to use held-out runs of the file."
            )
        n_runs = max(1, args.n_chunks // chunks_per_run)
        progress("simulating fresh MC")
        labels = ["held-out MC"] + [f"MC set {i + 1}" for i in range(args.n_calibration)]
        sets = fresh_mc_sets(mc_config, labels, args.n_chunks, n_runs, training_set.chunk_length,
                             args.seed, n_workers=args.mc_workers)
        for index, chunk_set in enumerate(sets):
            descriptions[chunk_set.label] = (
                f"fresh MC, {n_runs} runs, seed SeedSequence([{args.seed}, {index}])"
            )
        return sets[0], sets[1:], descriptions

    reference, calibration, runs_of = reference_and_calibration(
        training_set, held_out_runs, args.n_chunks, args.n_calibration
    )
    for label, runs in runs_of.items():
        descriptions[label] = f"runs {runs} of the MC file"
    if reference.n_chunks < args.n_chunks:
        notes.append(
            f"Only {reference.n_chunks} held-out chunks exist; every set has that size."
        )
    missing = args.n_calibration - len(calibration)
    if missing > 0:
        if mc_config is None:
            raise ValueError(
                f"The MC file gives only {len(calibration)} calibration sets of "
                f"{reference.n_chunks} chunks and has no 'mc_config' to simulate more. Lower "
                "--n-calibration or --n-chunks."
            )
        progress("simulating extra MC sets")
        labels = [f"MC set {len(calibration) + i + 1}" for i in range(missing)]
        n_runs = max(1, reference.n_chunks // chunks_per_run)
        extra = fresh_mc_sets(mc_config, labels, reference.n_chunks, n_runs,
                              training_set.chunk_length, args.seed + 1, n_workers=args.mc_workers)
        for index, chunk_set in enumerate(extra):
            descriptions[chunk_set.label] = (
                f"fresh MC, {n_runs} runs, seed SeedSequence([{args.seed + 1}, {index}])"
            )
        calibration += extra
        notes.append(f"{missing} calibration sets were simulated because the file has too few runs.")
    return reference, calibration, descriptions


def _mc_phi_gv(training_set, held_out_runs, args):
    """Return phi (GV) of the held-out MC for conditioned bundles."""
    if args.phi_gv is not None:
        return float(args.phi_gv)
    labels = training_set.labels
    if "phi_gv" not in labels:
        raise ValueError(
            f"MC file {args.mc} has no phi_gv label, so the phi of a flux-conditioned bundle "
            "is unknown. Pass --phi-gv with the MC's modulation potential in GV."
        )
    rows = np.isin(labels["run_id"], held_out_runs)
    values = np.unique(np.round(np.asarray(labels["phi_gv"])[rows], 6))
    if values.size != 1:
        raise ValueError(
            f"The held-out runs of {args.mc} span phi = {values.min():g}-{values.max():g} GV; "
            "a flux-conditioned bundle needs one value. Validate against MC made at one phi "
            "(crab-mc --phi-gv) or pass --phi-gv."
        )
    return float(values[0])


def _condition(card, phi_gv, path):
    """Return the network-space condition of a bundle at ``phi_gv``."""
    from ..bundle import network_condition

    if not card["conditioning"]:
        return ()
    try:
        return network_condition(card, phi_gv)
    except ValueError as err:
        raise ValueError(
            f"{err} The MC's phi is used for bundle {path}; validate it against MC made "
            "inside that range (crab-mc --phi-gv) or pass --phi-gv."
        ) from err


def _load_group_mc(args, training_set, bundle_paths, cards):
    """Read and check the --group-mc file; return its TrainingSet."""
    from ..datasets import read_training_set
    from .sources import check_bundle_compatible

    group_set = read_training_set(args.group_mc)
    if group_set.chunks.ndim != 3:
        raise ValueError(
            f"--group-mc {args.group_mc} contains single-detector chunks of shape "
            f"{group_set.chunks.shape} (format version 1); the correlation matrix needs "
            "detector groups (format version 2). Make them with crab-mc --n-detectors 8."
        )
    if not np.isclose(group_set.sample_rate_hz, training_set.sample_rate_hz, rtol=1e-6):
        raise ValueError(
            f"--group-mc {args.group_mc} is sampled at {group_set.sample_rate_hz:g} Hz but "
            f"--mc {args.mc} at {training_set.sample_rate_hz:g} Hz. Simulate the groups at "
            f"{training_set.sample_rate_hz:g} Hz."
        )
    for path, card in zip(bundle_paths, cards):
        try:
            check_bundle_compatible(card, group_set.sample_rate_hz, group_set.chunk_length, path)
        except ValueError as err:
            raise ValueError(f"--group-mc {args.group_mc}: {err}") from None
    if "chunk_index" not in group_set.labels:
        raise ValueError(
            f"--group-mc {args.group_mc} has no chunk_index label (labels: "
            f"{sorted(group_set.labels)}), so the chunk grid of its runs is unknown. "
            "Use a file written by crab-mc."
        )
    n_runs = np.unique(group_set.labels["run_id"]).size
    n_sets = 1 + args.n_calibration
    if n_runs < n_sets:
        raise ValueError(
            f"--group-mc {args.group_mc} has {n_runs} MC runs, but the correlation check "
            f"needs at least {n_sets}: one for the reference and one for each of the "
            f"--n-calibration {args.n_calibration} MC sets. Simulate more runs (crab-mc "
            "--n-runs) or lower --n-calibration."
        )
    return group_set


def _group_sets(group_set, args):
    """Cut the reference and calibration detector groups from disjoint runs.

    The runs are split into 1 + n_calibration blocks of equal run count, and every set
    takes the first chunks of its block in run order, as many as the smallest block
    has (at most --n-chunks).

    Returns:
        (tuple): (reference DetectorGroups, list of calibration DetectorGroups,
        (n,) run id and (n,) chunk index of the reference chunks, dict label -> run ids).
    """
    from .panel import DetectorGroups

    run_id = np.asarray(group_set.labels["run_id"])
    chunk_index = np.asarray(group_set.labels["chunk_index"])
    runs = np.unique(run_id)
    n_sets = 1 + args.n_calibration
    per_set = runs.size // n_sets
    blocks = [runs[i * per_set:(i + 1) * per_set] for i in range(n_sets)]
    rows = []
    for block in blocks:
        chosen = np.flatnonzero(np.isin(run_id, block))
        rows.append(chosen[np.lexsort((chunk_index[chosen], run_id[chosen]))])
    n_chunks = min(args.n_chunks, min(r.size for r in rows))
    rows = [r[:n_chunks] for r in rows]

    labels = ["held-out group MC"] + [f"group MC set {i + 1}" for i in range(args.n_calibration)]
    sets = [DetectorGroups(label, group_set.chunks[r]) for label, r in zip(labels, rows)]
    runs_of = {label: sorted(set(int(v) for v in run_id[r])) for label, r in zip(labels, rows)}
    layout = (run_id[rows[0]], chunk_index[rows[0]])
    return sets[0], sets[1:], layout, runs_of


def _group_stream_uids(mode, n_detectors):
    """Return the uid that keys each detector's stream, as InjectCRAB chooses it."""
    if mode == "detector":
        return list(range(n_detectors))
    from toast.utils import name_UID

    # InjectCRAB keys a wafer's stream on the uid of "wafer:<wafer name>".
    return [int(name_UID("wafer:group"))] * n_detectors


def _draw_groups(chunk_generator, label, layout, n_detectors, chunk_length, realization,
                 mode, condition=()):
    """Draw detector groups with InjectCRAB's stream keys and sample requests.

    Group row ``i`` plays MC run ``layout[0][i]`` as the session (session uid = run
    id, telescope uid 0) and chunk ``layout[1][i]`` of that session's chunk grid.
    With mode "detector" detector ``d`` is keyed on uid ``d``, so every detector has
    its own stream. With mode "wafer" all detectors share one uid and one stream.

    Args:
        chunk_generator (ChunkGenerator or SequenceGenerator): From
            :func:`toast_crab.generation.make_generator`.
        label (str): Label of the new set.
        layout (tuple): ((n,) run id, (n,) chunk index) of the groups to draw.
        n_detectors (int): Detectors per group.
        chunk_length (int): Samples per chunk.
        realization (int): Realization index of the keys.
        mode (str): "detector" or "wafer".
        condition (tuple): Network-space condition of a conditioned sequence model.

    Returns:
        (DetectorGroups): (n, n_detectors, chunk_length) float64 chunks in W.
    """
    from ..generation import StreamRequest, stream_keys
    from .panel import DetectorGroups

    members = {}
    for detector, uid in enumerate(_group_stream_uids(mode, n_detectors)):
        members.setdefault(uid, []).append(detector)
    requests, targets = [], []
    for row, (run, index) in enumerate(zip(*layout)):
        for uid, detectors in members.items():
            keys = stream_keys(realization, 0, int(run), uid)
            requests.append(
                StreamRequest(keys, int(index) * chunk_length, chunk_length, tuple(condition))
            )
            targets.append((row, detectors))

    chunks = np.zeros((len(layout[0]), n_detectors, chunk_length))
    for request_index, offset, values_w in chunk_generator.iter_segments(requests):
        row, detectors = targets[request_index]
        chunks[row, detectors, offset:offset + values_w.size] = values_w
    return DetectorGroups(label, chunks)


def _generate_groups(bundle_paths, labels, layout, group_set, args, progress, phi_gv=None):
    """Return stream mode -> {bundle label: DetectorGroups} for every bundle."""
    from ..bundle import load_bundle
    from ..generation import make_generator
    from .panel import GROUP_STREAM_MODES

    candidates = {mode: {} for mode in GROUP_STREAM_MODES}
    for path, label in zip(bundle_paths, labels):
        progress(f"generating groups of {label}")
        bundle = load_bundle(path)
        generator = make_generator(bundle, batch_size=args.batch_size)
        condition = _condition(bundle.card, phi_gv, path) if bundle.conditioning else ()
        for mode in GROUP_STREAM_MODES:
            candidates[mode][label] = _draw_groups(
                generator, f"{label} ({mode} streams)", layout, group_set.n_detectors,
                group_set.chunk_length, args.seed, mode, condition,
            )
    return candidates


def _evaluate_groups(group_set, bundle_paths, labels, args, config, progress, phi_gv, notes):
    """Run the detector-group comparison; return (document dict, GroupResult)."""
    from .panel import evaluate_groups
    from .sources import file_sha256

    reference, calibration, layout, runs_of = _group_sets(group_set, args)
    if phi_gv is not None and "phi_gv" in group_set.labels:
        group_phi = np.unique(np.round(np.asarray(group_set.labels["phi_gv"]), 6))
        if group_phi.size != 1 or not np.isclose(group_phi[0], phi_gv):
            notes.append(
                f"detector groups: the group MC has phi = {group_phi.tolist()} GV but "
                f"flux-conditioned bundles run at {phi_gv:g} GV, the value of --mc."
            )
    candidates = _generate_groups(bundle_paths, labels, layout, group_set, args, progress, phi_gv)
    progress("detector correlation matrices")
    result = evaluate_groups(reference, calibration, candidates, config)
    document = {
        "path": os.path.abspath(args.group_mc),
        "sha256": file_sha256(args.group_mc),
        "n_detectors": group_set.n_detectors,
        "n_chunks_in_file": group_set.n_chunks,
        "chunks_per_set": reference.chunks.shape[0],
        "provenance": group_set.provenance,
        "reference_label": result.reference_label,
        "runs": runs_of,
        "sigma_w": result.sigma_w,
        "stream_keys": (
            "stream_keys(realization=--seed, telescope 0, session = MC run id, uid): uid = "
            "detector index in 'detector' mode, one shared wafer uid in 'wafer' mode"
        ),
        "candidate_sets": result.candidate_sets,
        "matrices": {
            label: {quantity: matrix.tolist() for quantity, matrix in pair.items()}
            for label, pair in result.matrices.items()
        },
    }
    return document, result


def _generate(bundle_paths, labels, reference, args, progress, phi_gv=None):
    from ..bundle import load_bundle
    from ..generation import make_generator
    from .sources import generate_chunk_set

    candidates, second_draws = [], {}
    for path, label in zip(bundle_paths, labels):
        progress(f"generating {label}")
        bundle = load_bundle(path)
        generator = make_generator(bundle, batch_size=args.batch_size)
        condition = _condition(bundle.card, phi_gv, path) if bundle.conditioning else ()
        first = generate_chunk_set(generator, label, reference, realization=args.seed,
                                   condition=condition)
        second = generate_chunk_set(generator, f"{label} (realization {args.seed + 1})", reference,
                                    realization=args.seed + 1, condition=condition)
        for chunk_set in (first, second):
            bad = int(np.sum(~np.isfinite(chunk_set.chunks)))
            if bad:
                raise ValueError(
                    f"Bundle {path} produced {bad} non-finite samples (overflow of its amplitude "
                    "transform). The bundle is broken; retrain or re-export it."
                )
        candidates.append(first)
        second_draws[label] = second
    return candidates, second_draws


def _training_chunks(training_set, training_runs, labels, notes):
    """Return (training ChunkSet or None, labels whose memorization it measures)."""
    from .panel import ChunkSet

    known = [(label, runs) for label, runs in training_runs.items() if runs is not None]
    if not known:
        return None, []
    first_runs = known[0][1]
    same = [label for label, runs in known if np.array_equal(runs, first_runs)]
    for label in labels:
        if label not in same:
            notes.append(
                f"memorization: not measured for {label!r} (its training runs differ from those "
                f"of {same[0]!r} or are unknown)."
            )
    rows = np.isin(training_set.labels["run_id"], first_runs)
    chunk_set = ChunkSet(
        label="training MC",
        chunks=training_set.chunks[rows],
        stream_id=training_set.labels["run_id"][rows],
        chunk_index=training_set.labels["chunk_index"][rows],
        sample_rate_hz=training_set.sample_rate_hz,
    )
    return chunk_set, same


def run_validation(args, command=None):
    """Run the whole validation for parsed crab-validate arguments.

    Args:
        args (argparse.Namespace): Output of :func:`build_parser`.
        command (str): Command line recorded in the report.

    Returns:
        (dict): The document written to ``metrics.json``.

    Raises:
        FileNotFoundError: For a missing MC file or bundle.
        ValueError: For invalid options or a bundle that does not match the MC set.
    """
    from .. import __version__
    from ..bundle import default_bundle_path, read_card
    from ..generation import configure_tensorflow_threads
    from .panel import PanelConfig, evaluate_panel
    from .report import git_commit, plot_groups, plot_panel, write_json, write_markdown
    from .sources import check_bundle_compatible, file_sha256

    started = time.perf_counter()
    _check_options(args)
    bundle_paths = args.bundle or [default_bundle_path()]
    cards = [read_card(path) for path in bundle_paths]
    labels = _unique_labels(cards)
    notes = []
    training_set = _load_mc(args.mc, notes)
    for path, card in zip(bundle_paths, cards):
        check_bundle_compatible(card, training_set.sample_rate_hz, training_set.chunk_length, path)
    group_set = None
    if args.group_mc is not None:
        group_set = _load_group_mc(args, training_set, bundle_paths, cards)
    os.makedirs(args.out, exist_ok=True)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count()
    configure_tensorflow_threads(threads)

    # hash, generation, summaries, independence, memorization, C2ST, maps
    n_steps = 1 + len(labels) + (1 + args.n_calibration + len(labels)) + 1 + 1
    n_steps += 0 if args.no_c2st else min(args.n_c2st_calibration, args.n_calibration) + len(labels)
    # detector groups: one generation step per bundle and the matrices
    n_steps += 0 if group_set is None else len(labels) + 1
    progress = _Progress(n_steps + (1 if args.maps else 0), enabled=not args.quiet)
    progress("hashing the MC file")
    mc_sha256 = file_sha256(args.mc)
    held_out_runs, training_runs = _held_out(cards, labels, training_set, args.mc, mc_sha256, args, notes)
    if held_out_runs.size == 0 and not args.fresh_mc:
        raise ValueError(
            f"No run of {args.mc} is held out from every bundle ({', '.join(labels)}). "
            "Use --fresh-mc to validate on freshly simulated MC."
        )
    reference, calibration, descriptions = _mc_sets(args, training_set, held_out_runs, notes, progress)
    phi_gv = None
    if any(card["conditioning"] for card in cards):
        phi_gv = _mc_phi_gv(training_set, held_out_runs, args)
        notes.append(f"flux-conditioned bundles run at phi = {phi_gv:g} GV, the MC's value.")
    candidates, second_draws = _generate(bundle_paths, labels, reference, args, progress, phi_gv)
    training, memorization_labels = _training_chunks(training_set, training_runs, labels, notes)

    n_c2st_calibration = max(1, min(args.n_c2st_calibration, args.n_calibration))
    config = PanelConfig(n_c2st_calibration=n_c2st_calibration, seed=args.seed)
    result = evaluate_panel(
        reference, candidates, calibration, second_draws=second_draws, training=training,
        memorization_labels=memorization_labels, config=config, run_c2st=not args.no_c2st,
        progress=progress,
    )
    notes += result.notes
    groups_document, group_result = None, None
    if group_set is not None:
        groups_document, group_result = _evaluate_groups(
            group_set, bundle_paths, labels, args, config, progress, phi_gv, notes
        )
        result.metrics += group_result.metrics
    calibration_labels = [c.label for c in calibration]
    plots = plot_panel(result, reference.label, calibration_labels, labels, args.out)

    if group_result is not None:
        groups_document["plot"] = "correlation.png"
        plot_groups(group_result, labels, os.path.join(args.out, groups_document["plot"]))

    maps_document, map_plot = None, None
    if args.maps:
        from .maps import MapSetup, run_map_comparison

        progress("map-level comparison")
        setup = MapSetup(
            n_detectors=args.map_detectors, obs_hours=args.map_hours, nside=args.map_nside,
            sample_rate_hz=training_set.sample_rate_hz,
        )
        # The FITS maps are intermediate products; only the plot and numbers stay.
        with tempfile.TemporaryDirectory(prefix="crab_validate_maps_") as work_dir:
            maps_document, map_plot = run_map_comparison(
                dict(zip(labels, bundle_paths)), training_set.provenance.get("mc_config"), setup,
                args.map_realizations, args.out, progress=progress, work_dir=work_dir,
            )
    progress.close()

    document = {
        "tool": "crab-validate",
        "toast_crab_version": __version__,
        "git_commit": git_commit(),
        "command": command or "crab-validate (called from Python)",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "wall_time_s": time.perf_counter() - started,
        "seeds": {"generator_realization": args.seed, "independence_realization": args.seed + 1,
                  "c2st_seed": args.seed, "fresh_mc_seed": args.seed},
        "notes": notes,
        "bundles": [
            {"label": label, "path": os.path.abspath(path), "card": card}
            for label, path, card in zip(labels, bundle_paths, cards)
        ],
        "mc": {
            "path": os.path.abspath(args.mc),
            "sha256": mc_sha256,
            "sample_rate_hz": training_set.sample_rate_hz,
            "chunk_length": training_set.chunk_length,
            "n_chunks_in_file": training_set.n_chunks,
            "provenance": training_set.provenance,
            "reference": {
                "n_chunks": reference.n_chunks,
                "runs": sorted(set(int(r) for r in reference.stream_id)),
                "description": descriptions[reference.label],
            },
            "calibration": [
                {"label": c.label, "n_chunks": c.n_chunks, "description": descriptions[c.label]}
                for c in calibration
            ],
        },
        "panel": {
            "config": dataclasses.asdict(config),
            "sigma_w": result.sigma_w,
            "metrics": [metric.to_dict() for metric in result.metrics],
            "verdicts": {label: list(v) for label, v in result.verdicts().items()},
            "c2st": result.c2st,
        },
        "plots": plots,
        "groups": groups_document,
        "maps": maps_document,
    }
    write_json(os.path.join(args.out, "metrics.json"), document)
    write_markdown(os.path.join(args.out, "report.md"), document, plots, map_plot)
    return document


def main(argv=None):
    """Entry point of crab-validate; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    words = sys.argv[1:] if argv is None else list(argv)
    command = "crab-validate " + " ".join(shlex.quote(word) for word in words)
    from ..bundle import BundleError

    try:
        document = run_validation(args, command=command)
    except (ValueError, TypeError, FileNotFoundError, BundleError) as err:
        print(f"crab-validate: error: {err}", file=sys.stderr)
        return 2
    for bundle in document["bundles"]:
        passed, total = document["panel"]["verdicts"].get(bundle["label"], (0, 0))
        print(f"crab-validate: {bundle['label']}: passes {passed} of {total} timestream metrics")
    print(f"crab-validate: wrote {os.path.join(args.out, 'report.md')} and metrics.json "
          f"in {document['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
