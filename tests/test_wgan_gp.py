"""Checks of the WGAN-GP critic, gradient penalty and trainer on a tiny synthetic set."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf

from helpers import create_comm, create_satellite_data, synthetic_spike_chunks
from toast_crab.bundle import load_bundle
from toast_crab.datasets import write_training_set
from toast_crab.models import build_crab_generator, build_wgan_critic
from toast_crab.models.wgan import FirstDifference, MinibatchStddev
from toast_crab.ops import InjectCRAB
from toast_crab.training import WganGPConfig, gradient_penalty, selection_score
from toast_crab.training.cli import load_config, main, run_training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO, "configs", "wgan_gp_smoke.toml")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "wgan_gp.toml")
CHUNK_LENGTH = 128
SAMPLE_RATE_HZ = 19.1


@pytest.fixture(scope="module")
def training_set_path(tmp_path_factory):
    chunks, run_ids = synthetic_spike_chunks(
        n_runs=4, chunks_per_run=40, seed=21, chunk_length=CHUNK_LENGTH
    )
    path = str(tmp_path_factory.mktemp("data") / "synthetic.h5")
    write_training_set(
        path, chunks, {"run_id": run_ids}, SAMPLE_RATE_HZ, {"kind": "synthetic test set"}
    )
    return path


@pytest.fixture(scope="module")
def smoke_run(training_set_path, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wgan_smoke"))
    family, config = load_config(SMOKE_CONFIG, data=training_set_path, out=out)
    result = run_training(family, config, progress=False)
    return config, result


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_critic_has_no_batch_norm():
    critic = build_wgan_critic(1060)
    kinds = {type(layer).__name__ for layer in critic.layers}
    assert "BatchNormalization" not in kinds
    assert {"LayerNormalization", "FirstDifference", "MinibatchStddev"} <= kinds
    assert critic.output_shape == (None, 1)


def test_critic_bad_sizes_rejected():
    with pytest.raises(ValueError, match="chunk_length 4 is too short for 3 stride-2 blocks"):
        build_wgan_critic(4)
    with pytest.raises(TypeError, match="chunk_length must be an int. Got 128.0"):
        build_wgan_critic(128.0)
    with pytest.raises(TypeError, match="filters must be a non-empty list of ints. Got \\(\\)"):
        build_wgan_critic(128, filters=())
    with pytest.raises(ValueError, match="filters must contain positive ints. Got \\(8, 0\\)"):
        build_wgan_critic(128, filters=(8, 0))


def test_generator_builds_for_chunk_128():
    generator = build_crab_generator(latent_dim=16, chunk_length=CHUNK_LENGTH)
    assert generator.output_shape == (None, CHUNK_LENGTH)


def test_first_difference_values():
    x = np.array([[[1.0], [4.0], [2.0], [2.0]]], dtype=np.float32)
    out = np.asarray(FirstDifference()(x))
    np.testing.assert_array_equal(out[0, :, 0], [0.0, 3.0, -2.0, 0.0])


def test_minibatch_stddev_values():
    x = np.zeros((2, 3, 1), dtype=np.float32)
    x[1] = 2.0
    out = np.asarray(MinibatchStddev(epsilon=0.0)(x))
    assert out.shape == (2, 3, 2)
    # Population standard deviation of {0, 2} is 1 at every position.
    np.testing.assert_allclose(out[..., 1], 1.0)
    np.testing.assert_array_equal(out[..., 0], x[..., 0])


def test_gradient_penalty_linear_critic():
    # D(x) = w . x has gradient w for every chunk, so each per-chunk norm is |w|.
    # A norm over the whole batch would be sqrt(batch) * |w| instead.
    weights = np.linspace(-1.0, 1.0, 12).astype(np.float32)
    norm = float(np.linalg.norm(weights))
    critic = lambda x, training=False: tf.reduce_sum(x * weights, axis=1, keepdims=True)  # noqa: E731
    rng = np.random.default_rng(np.random.SeedSequence(1))
    real = tf.constant(rng.standard_normal((5, 12)), dtype=tf.float32)
    fake = tf.constant(rng.standard_normal((5, 12)), dtype=tf.float32)
    alpha = tf.constant(rng.uniform(size=(5, 1)), dtype=tf.float32)
    penalty, norms = gradient_penalty(critic, real, fake, alpha)
    np.testing.assert_allclose(np.asarray(norms), norm, rtol=1e-5)
    assert float(penalty) == pytest.approx((norm - 1.0) ** 2, rel=1e-5)


def test_gradient_penalty_per_chunk_norms():
    # D(x) = 0.5 * sum x^2 has gradient x_hat, so chunk i has norm |x_hat_i|.
    critic = lambda x, training=False: 0.5 * tf.reduce_sum(x**2, axis=[1, 2])[:, None]  # noqa: E731
    rng = np.random.default_rng(np.random.SeedSequence(2))
    real = rng.standard_normal((4, 10, 1)).astype(np.float32)
    fake = rng.standard_normal((4, 10, 1)).astype(np.float32)
    alpha = rng.uniform(size=(4, 1, 1)).astype(np.float32)
    penalty, norms = gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(alpha))
    expected = np.linalg.norm((alpha * real + (1 - alpha) * fake).reshape(4, -1), axis=1)
    np.testing.assert_allclose(np.asarray(norms), expected, rtol=1e-5)
    assert float(penalty) == pytest.approx(np.mean((expected - 1.0) ** 2), rel=1e-5)


def test_selection_score_identical_zero():
    from toast_crab.training import compare_chunks

    chunks, _ = synthetic_spike_chunks(
        n_runs=1, chunks_per_run=8, seed=4, chunk_length=CHUNK_LENGTH
    )
    assert selection_score(compare_chunks(chunks, chunks.copy(), SAMPLE_RATE_HZ)) == 0.0
    quiet = compare_chunks(chunks, 0.5 * chunks, SAMPLE_RATE_HZ)
    assert selection_score(quiet) > 0.1


def test_smoke_losses_finite(smoke_run):
    config, result = smoke_run
    rows = _read_rows(result["log_csv"])
    assert len(rows) == config.steps
    assert {"d_loss", "g_loss", "gradient_penalty", "wasserstein_estimate"} <= set(rows[0])
    for row in rows:
        values = [float(value) for key, value in row.items() if key != "phase"]
        assert np.all(np.isfinite(values)), row


def test_smoke_outputs_written(smoke_run):
    config, result = smoke_run
    names = {os.path.basename(path) for path in result["plots"]}
    assert names == {
        "losses.png", "wasserstein.png", "critic_response.png", "examples.png",
        "histogram.png", "psd.png", "evaluation.png",
    }
    checkpoints = sorted(os.listdir(os.path.join(config.out_dir, "checkpoints")))
    assert checkpoints == [
        "best_generator.weights.h5", "final.weights.h5",
        "step_0000002.weights.h5", "step_0000004.weights.h5",
    ]
    assert len(_read_rows(os.path.join(config.out_dir, "eval.csv"))) == 2


def test_smoke_card_records_selection(smoke_run):
    config, result = smoke_run
    card = result["card"]
    training = card["training"]
    rows = _read_rows(os.path.join(config.out_dir, "eval.csv"))
    scores = {
        (int(row["step"]), label): float(row[f"{label}_score"])
        for row in rows for label in ("raw", "ema")
    }
    best = min(scores, key=scores.get)
    assert card["family"] == "wgan_gp"
    assert (training["exported_step"], training["exported_generator"]) == best
    assert training["selection"]["score"] == pytest.approx(scores[best])
    assert card["transform"]["name"] == "asinh"
    assert card["chunk_length"] == CHUNK_LENGTH


def test_smoke_bundle_matches_best(smoke_run):
    config, result = smoke_run
    bundle = load_bundle(result["bundle"])
    best = build_crab_generator(config.latent_dim, CHUNK_LENGTH)
    best.load_weights(os.path.join(config.out_dir, "checkpoints", "best_generator.weights.h5"))
    latents = np.random.default_rng(np.random.SeedSequence(3)).standard_normal((5, 16))
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


def test_unknown_family_names_wgan(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('family = "wgan"\n[data]\npath = "x.h5"\n')
    with pytest.raises(ValueError, match="Unknown model family 'wgan'.*'wgan_gp'"):
        load_config(str(path))
    assert main(["--config", str(path)]) == 2


def test_config_rejects_bad_entries(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('family = "wgan_gp"\n[training]\nncritic = 5\n')
    with pytest.raises(ValueError, match="unknown key 'ncritic' in \\[training\\]"):
        load_config(str(path), data="x.h5")
    with pytest.raises(TypeError, match="'n_critic' must be of type int. Got '5'"):
        WganGPConfig(data_path="x.h5", n_critic="5")
    with pytest.raises(ValueError, match="'gp_weight' must be >= 0. Got -1.0"):
        WganGPConfig(data_path="x.h5", gp_weight=-1.0)
    with pytest.raises(ValueError, match="'critic_filters' must be a non-empty list .* Got \\[8, 0\\]"):
        WganGPConfig(data_path="x.h5", critic_filters=[8, 0])
    with pytest.raises(ValueError, match="wgan_gp config has no training set"):
        load_config(SMOKE_CONFIG)


def test_default_config_loads():
    family, config = load_config(DEFAULT_CONFIG, data="x.h5")
    assert family == "wgan_gp"
    assert (config.n_critic, config.gp_weight, config.adam_beta_1, config.adam_beta_2) == (
        5, 10.0, 0.0, 0.9
    )
    assert config.critic_filters == (16, 32, 32)
    assert config.g_learning_rate == config.d_learning_rate == 1e-4
