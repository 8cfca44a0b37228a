"""Chunk sets for validation: held-out and calibration MC, and generator draws.

Held-out MC
    A generator must be compared with MC runs it never saw. When a bundle's card
    names the training-set file (``training_data.sha256`` or ``path``) and its split
    (``training_data.split``, e.g. ``"split_by_run(validation_fraction=0.1,
    seed=7)"``), the same :func:`toast_crab.datasets.split_by_run` call gives back
    its validation runs. A card that names another file means that none of the runs
    of this file were used for training. A card without either entry is assumed to
    use this file with the split given on the command line, and a note records that.
    With several bundles, only runs held out from all of them are used.

Calibration MC
    Further MC sets of the reference size cut from the remaining runs of the file
    (training runs included: MC-vs-MC comparisons involve no generator), or fresh
    MC from :func:`toast_crab.mc.simulate_training_chunks` when the file has too
    few runs.

Generator draws
    A candidate set mirrors the reference layout: stream ``s`` plays MC run ``s``
    and its chunks have the reference chunk indices, so a stream of consecutive
    chunks is a continuous timeline as InjectCRAB would build it. The latents come
    from :func:`toast_crab.generation.draw_latents` keyed on the realization and the
    stream, as for a detector in a TOAST simulation.
"""

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np

from ..datasets import split_by_run
from .panel import ChunkSet

__all__ = [
    "BundleSplit",
    "bundle_split",
    "check_bundle_compatible",
    "file_sha256",
    "fresh_mc_sets",
    "generate_chunk_set",
    "parse_split",
    "reference_and_calibration",
    "select_runs",
]

_SPLIT_PATTERN = re.compile(
    r"split_by_run\(\s*validation_fraction\s*=\s*([0-9.eE+-]+)\s*,\s*seed\s*=\s*(-?\d+)\s*\)"
)

# Relative tolerance of sample-rate equality between a bundle and the MC set.
_RATE_RTOL = 1.0e-6


def file_sha256(path, block_bytes=1 << 22):
    """Return the SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(block_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_split(text):
    """Parse ``"split_by_run(validation_fraction=F, seed=S)"``; None if it does not match.

    Returns:
        (tuple): (fraction float, seed int) or None.
    """
    match = _SPLIT_PATTERN.search(str(text or ""))
    if match is None:
        return None
    return float(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class BundleSplit:
    """Held-out and training runs of a bundle in an MC file.

    Attributes:
        held_out_runs (ndarray): Run ids not used for training.
        training_runs (ndarray): Run ids used for training; None if the bundle was
            trained on another file.
        note (str): How the split was found, for the report.
    """

    held_out_runs: np.ndarray
    training_runs: object
    note: str


def bundle_split(card, training_set, mc_path, mc_sha256, default_fraction, default_seed):
    """Find the held-out runs of a bundle in an MC training-set file.

    Args:
        card (dict): The bundle's model card.
        training_set (TrainingSet): The MC file's content.
        mc_path (str): The MC file.
        mc_sha256 (str): Its SHA-256.
        default_fraction (float): Validation fraction assumed when the card has none.
        default_seed (int): Split seed assumed when the card has none.

    Returns:
        (BundleSplit): Held-out and training runs with an explanation.
    """
    data = card.get("training_data") or {}
    all_runs = np.unique(training_set.labels["run_id"])
    name = card.get("name", "?")
    files = data.get("files")
    if isinstance(files, list) and files and "path" not in data and "sha256" not in data:
        # A bundle trained on several files (flux conditioning): every run of an MC
        # file that is not one of them is held out.
        used = [entry for entry in files if isinstance(entry, dict) and (
            entry.get("sha256") == mc_sha256
            or (entry.get("path") and os.path.exists(str(entry["path"]))
                and os.path.samefile(str(entry["path"]), mc_path))
        )]
        if not used:
            return BundleSplit(
                held_out_runs=all_runs,
                training_runs=None,
                note=(
                    f"{name}: trained on {len(files)} other files; every run of {mc_path} is "
                    "held out, and memorization is not measured."
                ),
            )
        entry = used[0]
        if not entry.get("n_train"):
            return BundleSplit(
                held_out_runs=all_runs,
                training_runs=None,
                note=f"{name}: {mc_path} is a held-out level of its training; every run is held out.",
            )
        if "validation_runs" in entry:
            held_out = np.asarray(entry["validation_runs"], dtype=all_runs.dtype)
            return BundleSplit(
                held_out_runs=np.intersect1d(all_runs, held_out),
                training_runs=np.setdiff1d(all_runs, held_out),
                note=f"{name}: held-out runs {list(map(int, held_out))} of {mc_path} from its card.",
            )
        data = dict(entry, split=data.get("split"))
    same_hash = data.get("sha256") == mc_sha256
    same_path = data.get("path") is not None and os.path.exists(str(data["path"])) and (
        os.path.samefile(str(data["path"]), mc_path)
    )
    known_file = "sha256" in data or "path" in data
    if known_file and not (same_hash or same_path):
        return BundleSplit(
            held_out_runs=all_runs,
            training_runs=None,
            note=(
                f"{name}: trained on another file ({data.get('path')}); every run of "
                f"{mc_path} is held out, and memorization is not measured."
            ),
        )
    split = parse_split(data.get("split"))
    if split is not None and known_file:
        fraction, seed = split
        split_text = f"the card's split_by_run(validation_fraction={fraction:g}, seed={seed})"
    else:
        fraction, seed = default_fraction, default_seed
        split_text = (
            f"ASSUMED split_by_run(validation_fraction={fraction:g}, seed={seed}) because "
            "the card does not record its training file and split"
        )
    train, held_out = split_by_run(training_set, fraction, seed)
    return BundleSplit(
        held_out_runs=np.unique(held_out.labels["run_id"]),
        training_runs=np.unique(train.labels["run_id"]),
        note=f"{name}: held-out runs from {split_text}.",
    )


def select_runs(training_set, runs, n_chunks, label):
    """Cut a chunk set of whole runs, in run order, up to ``n_chunks`` chunks.

    The last run may be cut short; its chunks stay consecutive from the first one.

    Returns:
        (tuple): (ChunkSet, list of run ids used).
    """
    run_id = training_set.labels["run_id"]
    chunk_index = training_set.labels["chunk_index"]
    rows, used = [], []
    for run in np.sort(np.asarray(runs)):
        if sum(len(r) for r in rows) >= n_chunks:
            break
        run_rows = np.flatnonzero(run_id == run)
        run_rows = run_rows[np.argsort(chunk_index[run_rows], kind="stable")]
        rows.append(run_rows)
        used.append(int(run))
    rows = np.concatenate(rows)[:n_chunks] if rows else np.zeros(0, dtype=np.int64)
    chunk_set = ChunkSet(
        label=label,
        chunks=training_set.chunks[rows],
        stream_id=run_id[rows],
        chunk_index=chunk_index[rows],
        sample_rate_hz=training_set.sample_rate_hz,
    )
    return chunk_set, used


def reference_and_calibration(training_set, held_out_runs, n_chunks, n_calibration):
    """Cut the reference set from held-out runs and calibration sets from the rest.

    Args:
        training_set (TrainingSet): The MC file.
        held_out_runs (array): Runs no bundle was trained on.
        n_chunks (int): Chunks per set; reduced to the held-out size if larger.
        n_calibration (int): Calibration sets wanted.

    Returns:
        (tuple): (reference ChunkSet, list of calibration ChunkSet (possibly fewer
        than requested), dict of run ids per set).
    """
    held_out_runs = np.asarray(held_out_runs)
    n_held_out = int(np.isin(training_set.labels["run_id"], held_out_runs).sum())
    n_chunks = min(int(n_chunks), n_held_out)
    if n_chunks < 16:
        raise ValueError(
            f"Only {n_held_out} held-out MC chunks are available; validation needs at least "
            "16. Use --fresh-mc to simulate held-out MC, or an MC file with more runs."
        )
    reference, used = select_runs(training_set, held_out_runs, n_chunks, "held-out MC")
    runs_of = {reference.label: used}
    remaining = [r for r in np.unique(training_set.labels["run_id"]) if r not in set(used)]
    calibration = []
    while len(calibration) < n_calibration and remaining:
        label = f"MC set {len(calibration) + 1}"
        chunk_set, used = select_runs(training_set, remaining, n_chunks, label)
        if chunk_set.n_chunks < n_chunks:
            break
        calibration.append(chunk_set)
        runs_of[label] = used
        remaining = [r for r in remaining if r not in set(used)]
    return reference, calibration, runs_of


def fresh_mc_sets(mc_config_dict, labels, n_chunks, n_runs, chunk_length, seed, n_workers=1,
                  progress=None):
    """Simulate independent MC sets with the reference MC.

    Args:
        mc_config_dict (dict): ``MCConfig.to_dict()`` output (e.g. from provenance).
        labels (list): One label per set.
        n_chunks (int): Chunks per set.
        n_runs (int): Runs per set.
        chunk_length (int): Samples per chunk.
        seed (int): Root seed; set i uses ``SeedSequence([seed, i])`` entropy.
        n_workers (int): Processes of the MC.
        progress (callable): Called with the number of chunks finished.

    Returns:
        (list): ChunkSet per label.
    """
    from ..mc import MCConfig, simulate_training_chunks

    config = MCConfig.from_dict(mc_config_dict)
    sets = []
    for index, label in enumerate(labels):
        set_seed = int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])
        result = simulate_training_chunks(
            config, n_chunks=n_chunks, chunk_length=chunk_length, seed=set_seed,
            n_runs=n_runs, progress=progress, n_workers=n_workers,
        )
        sets.append(
            ChunkSet(
                label=label,
                chunks=result.chunks,
                stream_id=result.labels["run_id"],
                chunk_index=result.labels["chunk_index"],
                sample_rate_hz=result.sample_rate_hz,
            )
        )
    return sets


def check_bundle_compatible(card, sample_rate_hz, chunk_length, source):
    """Raise ValueError if a bundle's sample rate or chunk length differs from the MC's.

    Args:
        card (dict): The bundle's card.
        sample_rate_hz (float): Sample rate of the MC set.
        chunk_length (int): Chunk length of the MC set.
        source (str): Bundle path, for the message.
    """
    bundle_rate = float(card["sample_rate_hz"])
    if not np.isclose(bundle_rate, sample_rate_hz, rtol=_RATE_RTOL, atol=0):
        raise ValueError(
            f"Bundle {source} was trained at {bundle_rate:g} Hz but the MC set is at "
            f"{sample_rate_hz:g} Hz. Validate it against MC simulated at {bundle_rate:g} Hz "
            "(crab-mc with readout.sample_rate_hz set to that rate)."
        )
    from ..bundle import SEQUENCE_FAMILIES

    if card.get("family") in SEQUENCE_FAMILIES:
        # Sequence generators make timestreams of any length.
        return
    if int(card["chunk_length"]) != int(chunk_length):
        raise ValueError(
            f"Bundle {source} makes chunks of {card['chunk_length']} samples but the MC set "
            f"has chunks of {chunk_length}. Validate it against MC cut into "
            f"{card['chunk_length']}-sample chunks (crab-mc --chunk-length)."
        )


def generate_chunk_set(chunk_generator, label, layout, realization, condition=()):
    """Draw chunks from a generator with the stream layout of another set.

    Stream ``s`` uses the RNG keys of detector uid ``s`` (telescope and session uid
    0) in the given realization, so two realizations give independent streams. A
    sequence generator fills chunk ``k`` of a stream with samples
    ``[k * n, (k + 1) * n)`` of the stream's continuous timeline (``n`` = the
    layout's chunk length), as InjectCRAB would.

    Args:
        chunk_generator (ChunkGenerator or SequenceGenerator): Batched inference of a
            loaded bundle.
        label (str): Label of the new set.
        layout (ChunkSet): Set whose ``stream_id`` and ``chunk_index`` are copied.
        realization (int): Realization index of the keys.
        condition (tuple): Network-space condition of a conditioned sequence model.

    Returns:
        (ChunkSet): (layout.n_chunks, chunk_length) float64 chunks in W.
    """
    from ..generation import StreamRequest, draw_latents, stream_keys

    keys = [stream_keys(realization, 0, 0, int(stream)) for stream in layout.stream_id]
    if chunk_generator.bundle.is_sequence:
        length = layout.chunks.shape[-1]
        requests = [
            StreamRequest(key, int(index) * length, length, tuple(condition))
            for key, index in zip(keys, layout.chunk_index)
        ]
        chunks = np.zeros((len(requests), length))
        for row, offset, values in chunk_generator.iter_segments(requests):
            chunks[row, offset : offset + values.size] = values
        return ChunkSet(
            label=label,
            chunks=chunks,
            stream_id=layout.stream_id.copy(),
            chunk_index=layout.chunk_index.copy(),
            sample_rate_hz=chunk_generator.bundle.sample_rate_hz,
        )
    latents = draw_latents(
        keys, [int(index) for index in layout.chunk_index], chunk_generator.latent_dim,
        chunk_generator.component,
    )
    chunks = chunk_generator.generate_chunks(latents)
    return ChunkSet(
        label=label,
        chunks=chunks,
        stream_id=layout.stream_id.copy(),
        chunk_index=layout.chunk_index.copy(),
        sample_rate_hz=chunk_generator.bundle.sample_rate_hz,
    )
