"""Training sets of cosmic-ray timestream chunks in HDF5.

Layout of a training-set file:

* ``/chunks``: float64, W. Optical-power-equivalent change of absorbed power, baseline
  removed. Format version 1: (n_chunks, chunk_length), one detector per chunk. Format
  version 2: (n_chunks, n_detectors, chunk_length), a group of detectors on one wafer
  per chunk, recorded simultaneously.
* ``/labels/<name>``: (n_chunks,) arrays, one per label. ``run_id`` is required: it
  names the independent MC run (one continuous timeline) that a chunk was cut from.
* root attributes: ``format``, ``format_version``, ``sample_rate_hz``, ``chunk_length``,
  ``unit`` and ``provenance`` (a JSON string: MC config, seeds, versions, command);
  version 2 adds ``n_detectors``.

Single-detector sets are written as version 1, so readers that know only version 1
still read them; group sets are version 2.

Splits go by run, never by chunk, because adjacent chunks of one run share decaying
tails and are not independent.
"""

import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GROUP_FORMAT_VERSION",
    "TrainingSet",
    "read_training_set",
    "split_by_run",
    "write_training_set",
]

FORMAT_NAME = "toast_crab.training_set"
# Version of single-detector sets, (n_chunks, chunk_length).
FORMAT_VERSION = 1
# Version of detector-group sets, (n_chunks, n_detectors, chunk_length).
GROUP_FORMAT_VERSION = 2
_READABLE_VERSIONS = (FORMAT_VERSION, GROUP_FORMAT_VERSION)


@dataclass
class TrainingSet:
    """Chunks of cosmic-ray timestream with their labels.

    Attributes:
        chunks (ndarray): (n_chunks, chunk_length) float64, W, for one detector, or
            (n_chunks, n_detectors, chunk_length) for a group of detectors.
        labels (dict): label name -> (n_chunks,) array. Always has ``run_id``.
        sample_rate_hz (float): Sample rate of the chunks.
        provenance (dict): How the chunks were made (MC config, seeds, versions).
    """

    chunks: np.ndarray
    labels: dict
    sample_rate_hz: float
    provenance: dict = field(default_factory=dict)

    @property
    def chunk_length(self):
        """Samples per chunk (int)."""
        return int(self.chunks.shape[-1])

    @property
    def n_detectors(self):
        """Detectors per chunk (int): 1 for 2-D chunks."""
        return 1 if self.chunks.ndim == 2 else int(self.chunks.shape[1])

    @property
    def n_chunks(self):
        return int(self.chunks.shape[0])

    def subset(self, index):
        """Return a new TrainingSet with the chunks selected by ``index``."""
        labels = {name: np.asarray(value)[index] for name, value in self.labels.items()}
        return TrainingSet(
            chunks=self.chunks[index],
            labels=labels,
            sample_rate_hz=self.sample_rate_hz,
            provenance=dict(self.provenance),
        )


def _check_inputs(chunks, labels, sample_rate_hz):
    if chunks.ndim not in (2, 3) or 0 in chunks.shape:
        raise ValueError(
            f"chunks must be a non-empty 2-D array (n_chunks, chunk_length) or 3-D array "
            f"(n_chunks, n_detectors, chunk_length). Got shape {chunks.shape}."
        )
    if not np.all(np.isfinite(chunks)):
        raise ValueError("chunks contain NaN or infinite values; fix the MC output first.")
    if "run_id" not in labels:
        raise ValueError(
            "labels must contain 'run_id' (the independent MC run of each chunk), "
            f"so that splits can go by run. Got labels {sorted(labels)}."
        )
    for name, value in labels.items():
        if np.shape(value) != (chunks.shape[0],):
            raise ValueError(
                f"label {name!r} has shape {np.shape(value)}; expected "
                f"({chunks.shape[0]},), one value per chunk."
            )
    if not (np.isfinite(sample_rate_hz) and sample_rate_hz > 0):
        raise ValueError(f"sample_rate_hz must be positive. Got {sample_rate_hz!r}.")


def write_training_set(path, chunks, labels, sample_rate_hz, provenance=None):
    """Write chunks and labels to an HDF5 training-set file.

    Args:
        path (str): Output file; its folder is created if missing. An existing file
            is replaced.
        chunks (array): (n_chunks, chunk_length) float64, W, written as format
            version 1; or (n_chunks, n_detectors, chunk_length), written as version 2.
        labels (dict): label name -> (n_chunks,) array; must include ``run_id``.
        sample_rate_hz (float): Sample rate of the chunks.
        provenance (dict): JSON-serializable record of how the chunks were made.

    Returns:
        (str): The path written.
    """
    chunks = np.asarray(chunks, dtype=np.float64)
    labels = {name: np.asarray(value) for name, value in labels.items()}
    _check_inputs(chunks, labels, float(sample_rate_hz))
    provenance_json = json.dumps(provenance or {}, sort_keys=True, default=str)

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with h5py.File(path, "w") as hf:
        hf.attrs["format"] = FORMAT_NAME
        hf.attrs["format_version"] = FORMAT_VERSION if chunks.ndim == 2 else GROUP_FORMAT_VERSION
        hf.attrs["sample_rate_hz"] = float(sample_rate_hz)
        hf.attrs["chunk_length"] = int(chunks.shape[-1])
        if chunks.ndim == 3:
            hf.attrs["n_detectors"] = int(chunks.shape[1])
        hf.attrs["unit"] = "W"
        hf.attrs["provenance"] = provenance_json
        hf.create_dataset("chunks", data=chunks, compression="gzip", shuffle=True)
        group = hf.create_group("labels")
        for name, value in labels.items():
            group.create_dataset(name, data=value)
    return path


def read_training_set(path):
    """Read a training-set file written by :func:`write_training_set`.

    Args:
        path (str): The HDF5 file.

    Returns:
        (TrainingSet): The chunks, labels, sample rate and provenance.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a toast_crab training set of a known version.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Training set {path!r} not found. Make one with `crab-mc --config "
            f"examples/mc_default.toml --n-chunks 20000 --n-runs 100 --out {path}`."
        )
    try:
        hf = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path!r} is not a readable HDF5 file ({err}).") from err
    with hf:
        fmt = hf.attrs.get("format")
        version = hf.attrs.get("format_version")
        # h5py returns numpy scalars; show them as plain numbers in messages.
        version = version.item() if hasattr(version, "item") else version
        if fmt != FORMAT_NAME:
            raise ValueError(
                f"{path!r} is not a toast_crab training set (format attribute {fmt!r}, "
                f"expected {FORMAT_NAME!r}). Make one with `crab-mc`."
            )
        if version not in _READABLE_VERSIONS:
            raise ValueError(
                f"{path!r} has training-set format version {version!r}; this "
                f"toast_crab reads versions {list(_READABLE_VERSIONS)}. Regenerate it "
                "with `crab-mc`."
            )
        chunks = hf["chunks"][...]
        expected_ndim = 2 if version == FORMAT_VERSION else 3
        if chunks.ndim != expected_ndim:
            raise ValueError(
                f"{path!r} is format version {version} but its chunks have shape "
                f"{chunks.shape}; version {version} stores {expected_ndim}-D chunks. "
                "The file is damaged; regenerate it with `crab-mc`."
            )
        labels = {name: hf["labels"][name][...] for name in hf["labels"]}
        sample_rate_hz = float(hf.attrs["sample_rate_hz"])
        provenance = json.loads(hf.attrs["provenance"])
    return TrainingSet(
        chunks=chunks, labels=labels, sample_rate_hz=sample_rate_hz, provenance=provenance
    )


def split_by_run(training_set, validation_fraction, seed):
    """Split a training set into training and validation parts by MC run.

    Whole runs go to one side, so no validation chunk shares a timeline with a
    training chunk.

    Args:
        training_set (TrainingSet): The full set.
        validation_fraction (float): Target fraction of runs for validation, in (0, 1).
        seed (int): Seed of the run shuffle.

    Returns:
        (tuple): (training TrainingSet, validation TrainingSet).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1). Got {validation_fraction!r}."
        )
    run_ids = np.unique(training_set.labels["run_id"])
    if run_ids.size < 2:
        raise ValueError(
            f"Splitting by run needs at least 2 MC runs; the set has {run_ids.size}. "
            "Make the set with more runs (crab-mc --n-runs)."
        )
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    shuffled = rng.permutation(run_ids)
    n_val = min(max(1, int(round(validation_fraction * run_ids.size))), run_ids.size - 1)
    val_runs = np.sort(shuffled[:n_val])
    is_val = np.isin(training_set.labels["run_id"], val_runs)
    return training_set.subset(~is_val), training_set.subset(is_val)
