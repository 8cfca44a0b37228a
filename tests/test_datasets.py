"""Tests of the HDF5 training-set format (toast_crab.datasets): single detectors and groups."""

import h5py
import numpy as np
import pytest

from toast_crab.datasets import (
    FORMAT_VERSION,
    GROUP_FORMAT_VERSION,
    read_training_set,
    split_by_run,
    write_training_set,
)


def _labels(n_chunks, n_runs):
    return {
        "run_id": np.repeat(np.arange(n_runs), n_chunks // n_runs),
        "phi_gv": np.full(n_chunks, 0.35),
    }


def test_single_detector_round_trip(tmp_path):
    path = str(tmp_path / "single.h5")
    chunks = np.random.default_rng(1).normal(size=(6, 50))
    write_training_set(path, chunks, _labels(6, 3), 19.1, {"seed": 1})
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format_version"] == FORMAT_VERSION == 1
        assert handle.attrs["chunk_length"] == 50
        assert "n_detectors" not in handle.attrs
    training_set = read_training_set(path)
    assert np.array_equal(training_set.chunks, chunks)
    assert training_set.chunk_length == 50
    assert training_set.n_detectors == 1
    assert training_set.provenance == {"seed": 1}
    assert training_set.sample_rate_hz == 19.1


def test_group_round_trip(tmp_path):
    path = str(tmp_path / "group.h5")
    chunks = np.random.default_rng(2).normal(size=(6, 4, 50))
    write_training_set(path, chunks, _labels(6, 2), 19.1)
    with h5py.File(path, "r") as handle:
        assert handle.attrs["format_version"] == GROUP_FORMAT_VERSION == 2
        assert handle.attrs["n_detectors"] == 4
        assert handle.attrs["chunk_length"] == 50
    training_set = read_training_set(path)
    assert np.array_equal(training_set.chunks, chunks)
    assert training_set.n_detectors == 4
    assert training_set.chunk_length == 50
    assert training_set.n_chunks == 6


def test_group_split_by_run_keeps_detectors(tmp_path):
    path = str(tmp_path / "group.h5")
    chunks = np.random.default_rng(3).normal(size=(8, 3, 20))
    write_training_set(path, chunks, _labels(8, 4), 19.1)
    train, validation = split_by_run(read_training_set(path), 0.25, seed=0)
    assert train.chunks.shape == (6, 3, 20)
    assert validation.chunks.shape == (2, 3, 20)
    assert set(train.labels["run_id"]).isdisjoint(validation.labels["run_id"])


@pytest.mark.parametrize("shape", [(5,), (0, 20), (2, 0, 20), (2, 3, 4, 5)])
def test_write_rejects_bad_shapes(tmp_path, shape):
    with pytest.raises(ValueError, match="non-empty 2-D array .* or 3-D array"):
        write_training_set(str(tmp_path / "bad.h5"), np.zeros(shape), {"run_id": np.zeros(1)}, 19.1)


def test_write_rejects_label_length(tmp_path):
    with pytest.raises(ValueError, match="label 'run_id' has shape"):
        write_training_set(str(tmp_path / "bad.h5"), np.zeros((3, 2, 5)), {"run_id": np.zeros(2)}, 19.1)


def test_read_rejects_unknown_version(tmp_path):
    path = str(tmp_path / "future.h5")
    write_training_set(path, np.zeros((2, 5)), {"run_id": np.zeros(2)}, 19.1)
    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = 7
    with pytest.raises(ValueError, match="format version 7; this toast_crab reads versions \\[1, 2\\]"):
        read_training_set(path)


def test_read_rejects_mismatched_dimensions(tmp_path):
    path = str(tmp_path / "damaged.h5")
    write_training_set(path, np.zeros((2, 5)), {"run_id": np.zeros(2)}, 19.1)
    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = GROUP_FORMAT_VERSION
    with pytest.raises(ValueError, match="version 2 stores 3-D chunks"):
        read_training_set(path)


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_training_set(str(tmp_path / "none.h5"))
