"""Checks of the VAE networks, Student-t likelihood and trainer on a tiny synthetic set."""

import csv
import dataclasses
import os

import numpy as np
import pytest
from scipy import stats

from helpers import create_comm, create_satellite_data, synthetic_spike_chunks
from toast_crab.bundle import load_bundle
from toast_crab.datasets import write_training_set
from toast_crab.models.vae import (
    LatentSlice,
    PositiveScale,
    StudentTNoise,
    build_vae_decoder,
    build_vae_encoder,
    build_vae_generator,
    latent_code_dim,
    student_t_log_prob,
)
from toast_crab.ops import InjectCRAB
from toast_crab.training.cli import load_config, run_training
from toast_crab.training.vae import VAEConfig, kl_divergence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO, "configs", "vae_smoke.toml")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "vae.toml")
CHUNK_LENGTH = 128
SAMPLE_RATE_HZ = 19.1


@pytest.fixture(scope="module")
def training_set_path(tmp_path_factory):
    chunks, run_ids = synthetic_spike_chunks(
        n_runs=4, chunks_per_run=40, seed=31, chunk_length=CHUNK_LENGTH
    )
    path = str(tmp_path_factory.mktemp("data") / "synthetic.h5")
    write_training_set(
        path, chunks, {"run_id": run_ids}, SAMPLE_RATE_HZ, {"kind": "synthetic test set"}
    )
    return path


@pytest.fixture(scope="module")
def smoke_run(training_set_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vae_smoke"))
    family, config = load_config(SMOKE_CONFIG, data=training_set_path, out=out)
    result = run_training(family, config, progress=False)
    return config, result


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_student_t_log_prob_matches_scipy():
    y = np.array([-30.0, -2.5, -0.1, 0.0, 0.7, 3.0, 12.0, 250.0], dtype=np.float32)
    loc = np.array([0.0, 1.5, -0.3, 0.0, 2.0, 1.5, 1.0, 1.5], dtype=np.float32)
    scale = np.array([1.0, 0.4, 2.0, 0.01, 0.3, 0.45, 5.0, 0.5], dtype=np.float32)
    for dof in (1, 2, 3, 4, 7.5, 30):
        got = np.asarray(student_t_log_prob(y, loc, scale, dof))
        expected = stats.t.logpdf(y, df=dof, loc=loc, scale=scale)
        # float32 arithmetic: relative error of a few ulp on terms up to ~40 nats.
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-5, err_msg=f"dof={dof}")


def test_student_t_log_prob_rejects_dof():
    with pytest.raises(ValueError, match="Student-t dof must be positive. Got 0"):
        student_t_log_prob(np.zeros(2), 0.0, 1.0, 0)


def test_student_t_noise_distribution():
    dof, length, n_rows = 3, 500, 400
    rng = np.random.default_rng(np.random.SeedSequence(5))
    normals = rng.standard_normal((n_rows, (dof + 1) * length)).astype(np.float32)
    noise = np.asarray(StudentTNoise(dof, length)(normals))
    assert noise.shape == (n_rows, length)
    # 200,000 independent variates: the KS statistic of the true law exceeds
    # 1.95 / sqrt(n) = 0.0044 with probability 0.001.
    statistic = stats.kstest(noise.ravel(), stats.t(dof).cdf).statistic
    assert statistic < 1.95 / np.sqrt(noise.size)
    # The same check rejects a standard normal, so it can fail.
    assert stats.kstest(noise.ravel(), stats.norm(scale=1.0).cdf).statistic > 0.02


def test_student_t_noise_layout():
    # Row 0 contains the numerators, rows 1..dof the chi-square normals of each sample.
    normals = np.array([[1.0, -2.0, 3.0, 4.0, 2.0, 2.0, 0.0, 0.0]], dtype=np.float32)
    noise = np.asarray(StudentTNoise(3, 2)(normals))
    expected = [1.0 / np.sqrt((9 + 4 + 0) / 3), -2.0 / np.sqrt((16 + 4 + 0) / 3)]
    np.testing.assert_allclose(noise[0], expected, rtol=1e-6)


def test_student_t_noise_zero_latents_finite():
    noise = np.asarray(StudentTNoise(4, 10)(np.zeros((2, 50), dtype=np.float32)))
    np.testing.assert_array_equal(noise, 0.0)


def test_custom_layers_values():
    sliced = np.asarray(LatentSlice(1, 3)(np.arange(10.0, dtype=np.float32).reshape(2, 5)))
    np.testing.assert_array_equal(sliced, [[1.0, 2.0], [6.0, 7.0]])
    scale = np.asarray(PositiveScale(0.01)(np.array([-50.0, 0.0, 3.0], dtype=np.float32)))
    np.testing.assert_allclose(scale, [0.01, np.log(2.0) + 0.01, np.log1p(np.exp(3.0)) + 0.01],
                               rtol=1e-6)


def test_kl_divergence_values():
    # KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2 per entry.
    z_mean = np.array([[0.0, 1.0], [2.0, -0.5]], dtype=np.float32)
    z_log_var = np.array([[0.0, np.log(0.25)], [1.0, 0.0]], dtype=np.float32)
    variance = np.exp(z_log_var.astype(np.float64))
    expected = 0.5 * np.sum(variance + z_mean**2 - 1.0 - z_log_var, axis=1)
    np.testing.assert_allclose(np.asarray(kl_divergence(z_mean, z_log_var)), expected, rtol=1e-6)


def test_networks_shapes():
    encoder = build_vae_encoder(1060, latent_channels=8, strides=(5, 2, 2), filters=(8, 8, 8))
    decoder = build_vae_decoder(1060, latent_channels=8, strides=(5, 2, 2), filters=(8, 8, 8))
    assert latent_code_dim(1060, 8, (5, 2, 2)) == 424
    assert [tuple(out.shape) for out in encoder.outputs] == [(None, 424), (None, 424)]
    assert [tuple(out.shape) for out in decoder.outputs] == [(None, 1060), (None, 1060)]
    noisy = build_vae_generator(decoder, "location_plus_noise", dof=4)
    assert noisy.input_shape == (None, 424 + 5 * 1060)
    assert noisy.output_shape == (None, 1060)
    assert build_vae_generator(decoder, "location").input_shape == (None, 424)


def test_generator_is_loc_plus_scale_t():
    decoder = build_vae_decoder(CHUNK_LENGTH, latent_channels=2, strides=(2, 2), filters=(4, 4))
    generator = build_vae_generator(decoder, "location_plus_noise", dof=3)
    code_dim = latent_code_dim(CHUNK_LENGTH, 2, (2, 2))
    rng = np.random.default_rng(np.random.SeedSequence(8))
    latents = rng.standard_normal((3, code_dim + 4 * CHUNK_LENGTH)).astype(np.float32)
    loc, scale = (np.asarray(out) for out in decoder.predict_on_batch(latents[:, :code_dim]))
    normals = latents[:, code_dim:].reshape(3, 4, CHUNK_LENGTH).astype(np.float64)
    t = normals[:, 0] / np.sqrt(np.mean(normals[:, 1:] ** 2, axis=1))
    np.testing.assert_allclose(
        generator.predict_on_batch(latents), loc + scale * t, rtol=1e-5, atol=1e-5
    )
    location_only = build_vae_generator(decoder, "location")
    np.testing.assert_array_equal(location_only.predict_on_batch(latents[:, :code_dim]), loc)


def test_networks_bad_sizes_rejected():
    with pytest.raises(ValueError, match="chunk_length 1060 is not a multiple of the product"):
        build_vae_encoder(1060, strides=(2, 2, 2), filters=(8, 8, 8))
    with pytest.raises(ValueError, match="filters and strides must have the same length"):
        build_vae_decoder(1060, strides=(5, 2), filters=(8, 8, 8))
    with pytest.raises(TypeError, match="chunk_length must be an int. Got 128.0"):
        build_vae_encoder(128.0, strides=(2,), filters=(4,))
    with pytest.raises(ValueError, match="sample_mode must be one of .* Got 'mean'"):
        build_vae_generator(build_vae_decoder(8, 1, (2,), (2,), 3), "mean")
    with pytest.raises(ValueError, match="PositiveScale floor must be positive. Got 0.0"):
        PositiveScale(0.0)


def test_smoke_losses_finite(smoke_run):
    config, result = smoke_run
    rows = _read_rows(result["log_csv"])
    assert len(rows) == config.steps
    assert {"loss", "recon_nll", "kl", "kl_weight", "negative_elbo"} <= set(rows[0])
    for row in rows:
        values = [float(value) for key, value in row.items() if key != "phase"]
        assert np.all(np.isfinite(values)), row
    # Linear warm-up over 2 steps: beta = 0, 0.5, 1, 1.
    assert [float(row["kl_weight"]) for row in rows] == [0.0, 0.5, 1.0, 1.0]


def test_smoke_outputs_written(smoke_run):
    config, result = smoke_run
    names = {os.path.basename(path) for path in result["plots"]}
    assert names == {
        "losses.png", "kl_weight_scale.png", "examples.png", "histogram.png", "psd.png",
        "reconstructions.png", "evaluation.png",
    }
    checkpoints = sorted(os.listdir(os.path.join(config.out_dir, "checkpoints")))
    assert checkpoints == [
        "best_decoder.weights.h5", "final.weights.h5",
        "step_0000002.weights.h5", "step_0000004.weights.h5",
    ]
    assert len(_read_rows(os.path.join(config.out_dir, "eval.csv"))) == 2


def test_smoke_card_records_selection(smoke_run):
    config, result = smoke_run
    card = result["card"]
    training = card["training"]
    rows = _read_rows(os.path.join(config.out_dir, "eval.csv"))
    scores = {int(row["step"]): float(row["location_plus_noise_score"]) for row in rows}
    best_step = min(scores, key=scores.get)
    code_dim = latent_code_dim(CHUNK_LENGTH, config.latent_channels, config.strides)
    assert card["family"] == "vae"
    assert card["conditioning"] == {}
    assert card["latent_shape"] == [code_dim + (config.student_t_dof + 1) * CHUNK_LENGTH]
    assert training["exported_step"] == best_step
    assert training["selection"]["score"] == pytest.approx(scores[best_step])
    assert training["sample_mode"] == "location_plus_noise"
    figures = card["validation"]["figures"]
    assert {"ks_samples", "psd_log10_ratio", "excursions_per_chunk"} <= set(figures)
    assert "figures" in card["validation"]["other_sample_mode"]


def test_smoke_bundle_matches_best(smoke_run):
    config, result = smoke_run
    bundle = load_bundle(result["bundle"])
    decoder = build_vae_decoder(
        CHUNK_LENGTH, config.latent_channels, config.strides, config.filters,
        config.kernel_size, config.min_scale,
    )
    decoder.load_weights(os.path.join(config.out_dir, "checkpoints", "best_decoder.weights.h5"))
    best = build_vae_generator(decoder, "location_plus_noise", config.student_t_dof)
    (latent_dim,) = bundle.latent_shape
    latents = np.random.default_rng(np.random.SeedSequence(3)).standard_normal((5, latent_dim))
    np.testing.assert_array_equal(
        bundle.generator.predict_on_batch(latents), best.predict_on_batch(latents)
    )


def test_smoke_bundle_injects(smoke_run):
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


def test_same_seed_same_first_losses(smoke_run, training_set_path, tmp_path):
    _, result = smoke_run
    family, repeat = load_config(SMOKE_CONFIG, data=training_set_path, out=str(tmp_path), steps=1)
    repeat_result = run_training(family, repeat, progress=False)
    first = _read_rows(result["log_csv"])[0]
    again = _read_rows(repeat_result["log_csv"])[0]
    first.pop("step_ms")
    again.pop("step_ms")
    assert first == again


def test_config_rejects_bad_entries(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('family = "vae"\n[training]\nkl_warmup = 5\n')
    with pytest.raises(ValueError, match="unknown key 'kl_warmup' in \\[training\\]"):
        load_config(str(path), data="x.h5")
    with pytest.raises(TypeError, match="'student_t_dof' must be of type int. Got 4.5"):
        VAEConfig(data_path="x.h5", student_t_dof=4.5)
    with pytest.raises(ValueError, match="'student_t_dof' must be positive. Got 0"):
        VAEConfig(data_path="x.h5", student_t_dof=0)
    with pytest.raises(ValueError, match="'kl_weight' must be >= 0. Got -0.5"):
        VAEConfig(data_path="x.h5", kl_weight=-0.5)
    with pytest.raises(ValueError, match="'sample_mode' must be one of .* Got 'noise'"):
        VAEConfig(data_path="x.h5", sample_mode="noise")
    with pytest.raises(ValueError, match="'strides' must be a non-empty list .* Got \\[2, 0\\]"):
        VAEConfig(data_path="x.h5", strides=[2, 0], filters=[4, 4])
    with pytest.raises(ValueError, match="'strides' \\[2\\] and 'filters' \\[4, 4\\] must have"):
        VAEConfig(data_path="x.h5", strides=[2], filters=[4, 4])
    with pytest.raises(ValueError, match="vae config has no training set"):
        load_config(SMOKE_CONFIG)


def test_strides_not_dividing_chunk_rejected(training_set_path, tmp_path):
    _, config = load_config(SMOKE_CONFIG, data=training_set_path, out=str(tmp_path))
    bad = dataclasses.replace(config, strides=(3, 2))
    with pytest.raises(ValueError, match="chunk_length 128 is not a multiple of the product"):
        run_training("vae", bad, progress=False)


def test_missing_training_set_rejected(tmp_path):
    _, config = load_config(SMOKE_CONFIG, data=str(tmp_path / "absent.h5"), out=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="absent.h5' not found"):
        run_training("vae", config, progress=False)


def test_default_config_loads():
    family, config = load_config(DEFAULT_CONFIG)
    assert family == "vae"
    assert config.resolved_bundle_path() == "out/vae/vae.keras"
    assert config.sample_mode == "location_plus_noise"
    assert 1060 % int(np.prod(config.strides)) == 0
