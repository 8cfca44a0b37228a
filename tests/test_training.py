"""Checks of the crab_bce trainer and the crab-train command on a tiny synthetic set."""

import csv
import glob
import hashlib
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from helpers import synthetic_spike_chunks
from toast_crab.bundle import load_bundle
from toast_crab.datasets import read_training_set, split_by_run, write_training_set
from toast_crab.training import CrabBCEConfig, compare_chunks, robust_sigma, train_crab_bce
from toast_crab.training.cli import load_config, main, run_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO, "configs", "crab_bce_smoke.toml")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "crab_bce.toml")
CHUNK_LENGTH = 1060
CONTINUUM_W = 1e-17

LOG_COLUMNS = {
    "step", "phase", "d_loss", "g_loss", "d_acc_real", "d_acc_fake", "d_real", "d_fake",
    "instance_noise_std", "step_ms",
}


@pytest.fixture(scope="module")
def training_set_path(tmp_path_factory):
    chunks, run_ids = synthetic_spike_chunks(
        n_runs=4, chunks_per_run=16, seed=11, chunk_length=CHUNK_LENGTH, spike_rate=2e-3,
        kernel_length=8,
    )
    path = str(tmp_path_factory.mktemp("data") / "synthetic.h5")
    write_training_set(
        path, chunks, {"run_id": run_ids}, 19.1, {"kind": "synthetic test set", "seed": 11}
    )
    return path


@pytest.fixture(scope="module")
def smoke_run(training_set_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("smoke"))
    family, config = load_config(SMOKE_CONFIG, data=training_set_path, out=out)
    result = run_training(family, config, progress=False)
    return config, result


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_smoke_log_complete(smoke_run):
    config, result = smoke_run
    rows = _read_rows(result["log_csv"])
    card = result["card"]
    assert set(rows[0]) == LOG_COLUMNS
    assert len(rows) == card["training"]["pretrain_steps"] + config.steps
    assert [row["phase"] for row in rows].count("adversarial") == config.steps
    assert card["training"]["pretrain_steps"] > 0


def test_smoke_losses_finite(smoke_run):
    _, result = smoke_run
    for row in _read_rows(result["log_csv"]):
        values = [float(value) for key, value in row.items() if key != "phase"]
        assert np.all(np.isfinite(values)), row


def test_smoke_outputs_written(smoke_run):
    config, result = smoke_run
    names = {os.path.basename(path) for path in result["plots"]}
    expected = {
        "losses.png", "discriminator_accuracy.png", "discriminator_response.png",
        "examples.png", "histogram.png", "psd.png", "evaluation.png",
    }
    assert names == expected
    for path in result["plots"]:
        assert os.path.getsize(path) > 1000
    checkpoints = sorted(os.listdir(os.path.join(config.out_dir, "checkpoints")))
    assert checkpoints == ["final.weights.h5", "step_0000003.weights.h5", "step_0000006.weights.h5"]
    assert len(_read_rows(os.path.join(config.out_dir, "eval.csv"))) == 2


def test_smoke_tensorboard_scalars(smoke_run):
    config, _ = smoke_run
    tags = set()
    for path in glob.glob(os.path.join(config.out_dir, "tensorboard", "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {"d_loss", "g_loss", "d_real", "d_fake"} <= tags


def test_smoke_bundle_reloads(smoke_run):
    config, result = smoke_run
    bundle = load_bundle(result["bundle"])
    assert bundle.card["family"] == "crab_bce"
    assert bundle.chunk_length == CHUNK_LENGTH
    assert bundle.latent_shape == (config.latent_dim,)
    latents = np.random.default_rng(np.random.SeedSequence(3)).standard_normal((5, 100))
    chunks_w = bundle.transform.inverse(bundle.generator.predict_on_batch(latents))
    assert chunks_w.shape == (5, CHUNK_LENGTH)
    assert np.all(np.isfinite(chunks_w))


def test_smoke_card_scale_and_data(smoke_run, training_set_path):
    config, result = smoke_run
    card = result["card"]
    train_set, val_set = split_by_run(
        read_training_set(training_set_path), config.validation_fraction, config.seed
    )
    assert card["transform"] == {"name": "asinh", "scale_w": robust_sigma(train_set.chunks)}
    # The MAD of a Gaussian continuum with rare spikes is close to its sigma.
    assert card["transform"]["scale_w"] == pytest.approx(CONTINUUM_W, rel=0.05)
    data = card["training_data"]
    with open(training_set_path, "rb") as handle:
        assert data["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert data["n_chunks_train"] == train_set.n_chunks
    assert data["n_chunks_validation"] == val_set.n_chunks
    assert data["n_runs"] == 4
    assert data["provenance"] == {"kind": "synthetic test set", "seed": 11}
    figures = card["validation"]["figures"]
    assert figures["n_chunks"] == {"reference": val_set.n_chunks, "generated": val_set.n_chunks}
    assert 0.0 <= figures["ks_samples"] <= 1.0


def test_same_seed_same_first_losses(smoke_run, training_set_path, tmp_path):
    config, result = smoke_run
    family, repeat = load_config(
        SMOKE_CONFIG, data=training_set_path, out=str(tmp_path), steps=1
    )
    repeat_result = run_training(family, repeat, progress=False)
    first = _read_rows(result["log_csv"])
    again = _read_rows(repeat_result["log_csv"])
    n_compare = repeat_result["card"]["training"]["pretrain_steps"] + 1
    for row_a, row_b in zip(first[:n_compare], again[:n_compare]):
        row_a.pop("step_ms")
        row_b.pop("step_ms")
        assert row_a == row_b


def test_unknown_family_rejected(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('family = "wgan_made_up"\n[data]\npath = "x.h5"\n')
    with pytest.raises(ValueError, match="Unknown model family 'wgan_made_up'.*crab_bce"):
        load_config(str(path))


def test_cli_unknown_family_exit_code(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('family = "wgan_made_up"\n')
    assert main(["--config", str(path)]) == 2
    assert "Unknown model family 'wgan_made_up'" in capsys.readouterr().err


def test_missing_training_set(tmp_path, capsys):
    missing = str(tmp_path / "nowhere.h5")
    _, config = load_config(SMOKE_CONFIG, data=missing, out=str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="Training set .*nowhere.h5' not found"):
        train_crab_bce(config)
    assert main(["--config", SMOKE_CONFIG, "--data", missing]) == 2
    assert "nowhere.h5' not found" in capsys.readouterr().err


def test_config_rejects_bad_entries(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('family = "crab_bce"\n[training]\nbatchsize = 64\n')
    with pytest.raises(ValueError, match="unknown key 'batchsize' in \\[training\\]"):
        load_config(str(path), data="x.h5")
    with pytest.raises(TypeError, match="'steps' must be of type int. Got '10'"):
        CrabBCEConfig(data_path="x.h5", steps="10")
    with pytest.raises(ValueError, match="'real_label_smoothing' must be in \\[0, 1\\). Got 1.5"):
        CrabBCEConfig(data_path="x.h5", real_label_smoothing=1.5)
    with pytest.raises(ValueError, match="sets both pretrain_epochs \\(1\\) and pretrain_steps \\(5\\)"):
        CrabBCEConfig(data_path="x.h5", pretrain_epochs=1, pretrain_steps=5)
    with pytest.raises(ValueError, match="no training set"):
        load_config(SMOKE_CONFIG)


def test_default_config_loads():
    family, config = load_config(DEFAULT_CONFIG, data="x.h5")
    assert family == "crab_bce"
    assert config.batch_size == 64
    assert config.resolved_bundle_path().endswith("models/crab_default.keras")


def test_robust_sigma_gaussian():
    rng = np.random.default_rng(np.random.SeedSequence(5))
    samples = 3.0 * rng.standard_normal(100_000)
    # The MAD estimate of sigma has variance 1.36 sigma^2 / n for Gaussian data,
    # so the relative standard error here is 0.0037; allow 5 of them.
    assert robust_sigma(samples) == pytest.approx(3.0, rel=5 * 0.0037)


def test_compare_chunks_identical_and_scaled():
    chunks, _ = synthetic_spike_chunks(
        n_runs=1, chunks_per_run=8, seed=4, chunk_length=CHUNK_LENGTH, spike_rate=2e-3,
        kernel_length=8,
    )
    same = compare_chunks(chunks, chunks.copy(), 19.1)
    assert same["ks_samples"] == 0.0
    assert same["rms_w"]["generated"] == same["rms_w"]["reference"]
    assert all(value == pytest.approx(0.0, abs=1e-12) for value in same["psd_log10_ratio"].values())
    assert same["large_max_fraction"]["reference"] == pytest.approx(0.125)  # 1 of 8 chunks
    assert same["max_at_edge_fraction"]["generated"] == same["max_at_edge_fraction"]["reference"]
    doubled = compare_chunks(chunks, 2.0 * chunks, 19.1)
    assert doubled["rms_w"]["generated"] == pytest.approx(2.0 * doubled["rms_w"]["reference"])
    assert all(value == pytest.approx(np.log10(4.0)) for value in doubled["psd_log10_ratio"].values())
    assert doubled["fraction_beyond_5_sigma"]["generated"] > doubled["fraction_beyond_5_sigma"]["reference"]


def test_compare_chunks_edge_maxima():
    chunks = np.zeros((4, 100))
    chunks[0, 0] = 1.0
    chunks[1, 99] = 1.0
    chunks[2, 50] = 1.0
    chunks[3, 10] = 1.0
    figures = compare_chunks(chunks, chunks, 19.1)
    assert figures["max_at_edge_fraction"]["reference"] == 0.5


def test_crab_default_bundle_loads():
    # The CRAB BCE model shipped as the reference that the other families must beat.
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "toast_crab", "data", "models", "crab_default.keras")
    bundle = load_bundle(path)
    assert bundle.card["family"] == "crab_bce"
    assert bundle.card["training"]["generator_params"] == bundle.generator.count_params() == 33_766
    assert bundle.sample_rate_hz == 19.1
    latents = np.random.default_rng(np.random.SeedSequence(8)).standard_normal((4, 100))
    chunks_w = bundle.transform.inverse(bundle.generator.predict_on_batch(latents))
    assert chunks_w.shape == (4, bundle.chunk_length)
    assert np.all(np.isfinite(chunks_w))


def test_smoke_bundle_runs_in_inject_crab(smoke_run):
    from helpers import create_comm, create_satellite_data
    from toast_crab.ops import InjectCRAB

    _, result = smoke_run
    data = create_satellite_data(create_comm(None), n_pix=1, n_obs=1, obs_minutes=1.0)
    try:
        InjectCRAB(model=result["bundle"], det_data="cr").apply(data)
        for ob in data.obs:
            values = np.asarray(ob.detdata["cr"].data)
            assert np.all(np.isfinite(values))
            assert np.any(values != 0)
    finally:
        data.clear()
