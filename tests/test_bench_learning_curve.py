"""Checks of the learning-curve benchmark's core on a tiny synthetic pool."""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

from toast_crab.datasets import write_training_set
from toast_crab.training.cli import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO, "configs", "crab_bce_smoke.toml")
CHUNK_LENGTH = 1060
CHUNKS_PER_RUN = 16
CONTINUUM_W = 1e-17


def _load_benchmark():
    path = os.path.join(REPO, "benchmarks", "bench_learning_curve.py")
    spec = importlib.util.spec_from_file_location("bench_learning_curve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_set(path, n_runs, seed):
    """Gaussian continuum with rare exponential glitches, CHUNKS_PER_RUN chunks per run."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n_samples = n_runs * CHUNKS_PER_RUN * CHUNK_LENGTH
    timeline = CONTINUUM_W * rng.standard_normal(n_samples)
    spikes = np.zeros(n_samples)
    n_glitches = rng.poisson(2e-3 * n_samples)
    np.add.at(spikes, rng.integers(0, n_samples, n_glitches), 20.0 * CONTINUUM_W)
    timeline += np.convolve(spikes, np.exp(-np.arange(8) / 1.5))[:n_samples]
    run_ids = np.repeat(np.arange(n_runs), CHUNKS_PER_RUN)
    write_training_set(
        path, timeline.reshape(-1, CHUNK_LENGTH), {"run_id": run_ids}, 19.1,
        {"kind": "synthetic test set", "seed": seed},
    )
    return path


@pytest.fixture(scope="module")
def bench():
    return _load_benchmark()


def test_subsets_nested_by_run(bench):
    run_ids = np.repeat(np.arange(10), 5)
    small, large = bench.nested_run_subsets(run_ids, [12, 30], seed=3)
    assert small.size == 15
    assert large.size == 30
    assert set(small) <= set(large)
    for rows in (small, large):
        runs = np.unique(run_ids[rows])
        assert np.sum(np.isin(run_ids, runs)) == rows.size


def test_subsets_bad_sizes(bench):
    run_ids = np.repeat(np.arange(4), 5)
    with pytest.raises(ValueError, match="strictly increasing"):
        bench.nested_run_subsets(run_ids, [10, 5], seed=0)
    with pytest.raises(ValueError, match=r"largest size \(40 chunks\) exceeds the pool \(20"):
        bench.nested_run_subsets(run_ids, [5, 40], seed=0)


def test_learning_curve_two_sizes(bench, tmp_path):
    pool = _write_set(str(tmp_path / "pool.h5"), n_runs=8, seed=1)
    heldout = _write_set(str(tmp_path / "heldout.h5"), n_runs=2, seed=2)
    _, config = load_config(SMOKE_CONFIG, data=pool, steps=2)
    # No pre-training and one evaluation keep the number of traced functions small.
    config = dataclasses.replace(config, pretrain_epochs=0, pretrain_steps=0, eval_interval=2)
    results = bench.run_learning_curve(
        config, pool, heldout, [48, 96], n_eval=32, seed=4, c2st=False,
        work_dir=str(tmp_path / "runs"), progress=False,
    )
    entries = results["sizes"]
    assert [entry["n_chunks"] for entry in entries] == [48, 96]
    assert [entry["n_runs"] for entry in entries] == [3, 6]
    for entry in entries:
        assert np.isfinite(entry["score"])
        assert entry["exported_generator"] in ("raw", "ema")
        assert entry["exported_step"] == 2
        assert os.path.isfile(entry["bundle"])
        # The subset file is removed after training; only the run folder stays.
        size_dir = tmp_path / "runs" / f"size_{entry['size_requested']:06d}"
        assert os.listdir(size_dir) == ["run"]
    floor = results["mc_vs_mc"]
    # Two draws of one synthetic process: far from collapse.
    assert not floor["collapsed"]
    assert floor["figures"]["ks_samples"] < 0.1
    json.dumps(results, default=float)
