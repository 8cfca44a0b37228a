"""Checks of the seamless generator, its halo, conditioning and trainer on tiny sets."""

import csv
import dataclasses
import json
import os
import tomllib

import keras
import numpy as np
import pytest

from toast_crab.bundle import default_bundle_path
from toast_crab.datasets import write_training_set
# Importing toast_crab.models registers the custom layers that load_model needs.
from toast_crab.models import build_seamless_critic, build_seamless_generator, halo_latents
from toast_crab.models.seamless import latent_stride
from toast_crab.training.cli import load_config, run_training
from toast_crab.training.seamless import (
    SeamlessConfig,
    generate_timestreams,
    normalise_condition,
    train_seamless,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO, "configs", "seamless_smoke.toml")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "seamless.toml")
# The shipped default model is a seamless, phi-conditioned bundle.
TRAINED_BUNDLE = default_bundle_path()
CHUNK_LENGTH = 128
SAMPLE_RATE_HZ = 19.1
CONTINUUM_W = 1e-17


def _synthetic_level(phi_gv, n_runs, chunks_per_run, seed):
    """Gaussian continuum plus spikes whose rate falls as phi rises, one timeline per run."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    kernel = np.exp(-np.arange(4) / 0.8)
    rate_per_sample = 0.02 * 0.3 / phi_gv
    chunks = []
    for _ in range(n_runs):
        n_samples = chunks_per_run * CHUNK_LENGTH
        spikes = np.zeros(n_samples)
        n_spikes = rng.poisson(rate_per_sample * n_samples)
        np.add.at(spikes, rng.integers(0, n_samples, n_spikes),
                  CONTINUUM_W * (8.0 + 20.0 * rng.pareto(1.5, n_spikes)))
        timeline = CONTINUUM_W * rng.standard_normal(n_samples)
        timeline += np.convolve(spikes, kernel)[:n_samples]
        chunks.append(timeline.reshape(chunks_per_run, CHUNK_LENGTH))
    chunks = np.concatenate(chunks)
    labels = {
        "run_id": np.repeat(np.arange(n_runs), chunks_per_run),
        "phi_gv": np.full(chunks.shape[0], phi_gv),
    }
    return chunks, labels


@pytest.fixture(scope="module")
def level_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("levels")
    paths = []
    for index, phi_gv in enumerate((0.3, 0.5, 0.7)):
        chunks, labels = _synthetic_level(phi_gv, n_runs=4, chunks_per_run=12, seed=40 + index)
        path = str(folder / f"phi_{phi_gv}.h5")
        write_training_set(path, chunks, labels, SAMPLE_RATE_HZ, {"kind": "synthetic test set"})
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def smoke_run(level_paths, tmp_path_factory):
    with open(SMOKE_CONFIG, "rb") as handle:
        table = tomllib.load(handle)
    table["data"].update(paths=level_paths, held_out_levels_gv=[0.5])
    table["output"]["dir"] = str(tmp_path_factory.mktemp("seamless_smoke"))
    config = SeamlessConfig.from_toml_dict(table)
    result = run_training("seamless", config, progress=False)
    return config, result


@pytest.fixture(scope="module")
def smoke_generator(smoke_run):
    _, result = smoke_run
    return keras.saving.load_model(result["bundle"], compile=False)


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _generate(generator, latents, condition=None):
    inputs = latents if condition is None else [latents, condition]
    return np.asarray(generator.predict_on_batch(inputs))


def test_generator_output_length():
    generator = build_seamless_generator(latent_channels=4, filters=(8, 8, 4), kernel_size=5)
    rng = np.random.default_rng(np.random.SeedSequence(1))
    for n_latent in (7, 33):
        latents = rng.standard_normal((2, n_latent, 4)).astype(np.float32)
        assert _generate(generator, latents).shape == (2, n_latent * 4)


def test_generator_has_no_global_layers():
    generator = build_seamless_generator(n_conditions=1)
    kinds = {type(layer).__name__ for layer in generator.layers}
    forbidden = {"BatchNormalization", "LayerNormalization", "Dense", "GlobalAveragePooling1D"}
    assert not kinds & forbidden
    assert latent_stride(generator) == 4


@pytest.mark.parametrize("filters, kernel_size", [((8, 8, 4), 5), ((8, 4), 3), ((16, 8, 8), 9)])
def test_halo_matches_perturbation(filters, kernel_size):
    # Changing latent j must change some output sample exactly H latent positions
    # away (H is tight) and none farther.
    generator = build_seamless_generator(
        latent_channels=4, filters=filters, kernel_size=kernel_size
    )
    halo = halo_latents(generator)
    stride = latent_stride(generator)
    n_latent, changed = 4 * halo + 8, 2 * halo + 4
    latents = np.random.default_rng(np.random.SeedSequence(2)).standard_normal((1, n_latent, 4))
    latents = latents.astype(np.float32)
    perturbed = latents.copy()
    perturbed[0, changed] += 3.0
    difference = np.abs(_generate(generator, perturbed) - _generate(generator, latents))[0]
    reached = np.nonzero(difference > 0)[0] // stride
    assert reached.min() == changed - halo
    assert reached.max() == changed + halo


def test_halo_rejects_global_layers():
    latents = keras.Input((None, 4))
    x = keras.layers.Conv1D(4, 3, padding="same")(latents)
    x = keras.layers.BatchNormalization(name="batch_norm")(x)
    model = keras.Model(latents, x)
    with pytest.raises(ValueError, match="'batch_norm' of type BatchNormalization is not allowed"):
        halo_latents(model)
    strided = keras.Model(latents, keras.layers.Conv1D(4, 3, strides=2, padding="same",
                                                       name="strided")(latents))
    with pytest.raises(ValueError, match="'strided' must be a stride-1 'same' Conv1D"):
        halo_latents(strided)


def test_output_independent_of_length():
    # A sub-sequence of the latents gives the same samples away from its ends: every
    # output sample whose latent position is at least H from both ends agrees.
    generator = build_seamless_generator(
        latent_channels=4, filters=(8, 8, 4), kernel_size=5, n_conditions=1
    )
    halo, stride = halo_latents(generator), latent_stride(generator)
    rng = np.random.default_rng(np.random.SeedSequence(3))
    latents = rng.standard_normal((2, 60, 4)).astype(np.float32)
    condition = np.array([[0.2], [-0.7]], dtype=np.float32)
    full = _generate(generator, latents, condition)
    start, stop = 10, 40
    part = _generate(generator, latents[:, start:stop], condition)
    inner = slice((start + halo) * stride, (stop - halo) * stride)
    np.testing.assert_allclose(
        part[:, halo * stride : (stop - start - halo) * stride], full[:, inner],
        rtol=1e-5, atol=1e-6,
    )


def test_output_independent_of_batch():
    generator = build_seamless_generator(
        latent_channels=4, filters=(8, 8, 4), kernel_size=5, n_conditions=1
    )
    rng = np.random.default_rng(np.random.SeedSequence(4))
    latents = rng.standard_normal((5, 20, 4)).astype(np.float32)
    condition = rng.uniform(-1, 1, (5, 1)).astype(np.float32)
    batch = _generate(generator, latents, condition)
    alone = _generate(generator, latents[2:3], condition[2:3])
    np.testing.assert_allclose(alone[0], batch[2], rtol=1e-5, atol=1e-6)


def test_condition_changes_output():
    generator = build_seamless_generator(
        latent_channels=4, filters=(8, 8, 4), kernel_size=5, n_conditions=1
    )
    latents = np.random.default_rng(np.random.SeedSequence(5)).standard_normal((1, 20, 4))
    latents = latents.astype(np.float32)
    low = _generate(generator, latents, np.array([[-1.0]], dtype=np.float32))
    high = _generate(generator, latents, np.array([[1.0]], dtype=np.float32))
    assert np.all(np.isfinite(low))
    assert np.max(np.abs(high - low)) > 1e-4


def test_critic_returns_patch_logits():
    critic = build_seamless_critic(filters=(8, 8), kernel_size=5, n_conditions=1)
    chunks = np.zeros((3, 64), dtype=np.float32)
    logits = np.asarray(critic.predict_on_batch([chunks, np.zeros((3, 1), np.float32)]))
    assert logits.shape == (3, 16)


def test_normalise_condition_range():
    entry = {"offset": 0.525, "scale": 0.225}
    values = normalise_condition([0.30, 0.525, 0.75], entry)
    assert values.dtype == np.float32
    np.testing.assert_allclose(values[:, 0], [-1.0, 0.0, 1.0], atol=1e-6)


def test_smoke_card_contract(smoke_run, smoke_generator):
    config, result = smoke_run
    card = result["card"]
    assert card["family"] == "seamless"
    assert card["chunk_length"] == config.crop_length
    assert card["latent_shape"] == [config.latent_channels]
    assert card["sequence"] == {
        "latent_stride": 4, "halo_latents": halo_latents(smoke_generator)
    }
    entry = card["conditioning"]["phi_gv"]
    assert entry["unit"] == "GV"
    assert entry["range"] == [0.3, 0.7]
    assert entry["training_levels"] == [0.3, 0.7]
    assert entry["held_out_levels"] == [0.5]
    assert entry["offset"] == pytest.approx(0.5)
    assert entry["scale"] == pytest.approx(0.2)
    assert [tensor.name for tensor in smoke_generator.inputs] == ["latents", "condition"]
    with open(os.path.splitext(result["bundle"])[0] + ".json") as handle:
        assert json.load(handle)["sequence"] == card["sequence"]


def test_smoke_bundle_any_length(smoke_run, smoke_generator):
    _, result = smoke_run
    condition = normalise_condition([0.5, 0.5], result["card"]["conditioning"]["phi_gv"])
    rng = np.random.default_rng(np.random.SeedSequence(6))
    for n_latent in (16, 41):
        latents = rng.standard_normal((2, n_latent, 4)).astype(np.float32)
        output = _generate(smoke_generator, latents, condition)
        assert output.shape == (2, n_latent * 4)
        assert output.dtype == np.float32
        assert np.all(np.isfinite(output))


def test_smoke_bundle_halo_from_card(smoke_run, smoke_generator):
    # The card's H, applied to the reloaded generator: latent j reaches output
    # samples exactly H latent positions away and no farther.
    _, result = smoke_run
    sequence = result["card"]["sequence"]
    halo, stride = sequence["halo_latents"], sequence["latent_stride"]
    condition = normalise_condition([0.3], result["card"]["conditioning"]["phi_gv"])
    n_latent, changed = 4 * halo + 6, 2 * halo + 3
    latents = np.random.default_rng(np.random.SeedSequence(7)).standard_normal((1, n_latent, 4))
    latents = latents.astype(np.float32)
    perturbed = latents.copy()
    perturbed[0, changed] -= 2.0
    difference = np.abs(
        _generate(smoke_generator, perturbed, condition) - _generate(smoke_generator, latents, condition)
    )[0]
    reached = np.nonzero(difference > 0)[0] // stride
    assert reached.min() == changed - halo
    assert reached.max() == changed + halo


def test_smoke_logs_and_plots(smoke_run):
    config, result = smoke_run
    rows = _read_rows(result["log_csv"])
    assert len(rows) == config.steps
    for row in rows:
        values = [float(value) for key, value in row.items() if key != "phase"]
        assert np.all(np.isfinite(values)), row
    names = {os.path.basename(path) for path in result["plots"]}
    assert {"losses.png", "critic_response.png", "long_timeline.png", "rate_vs_phi.png",
            "rate_during_training.png", "samples_during_training.png"} <= names
    for path in result["plots"]:
        assert os.path.getsize(path) > 0
    evaluations = _read_rows(os.path.join(config.out_dir, "eval.csv"))
    # Two evaluations (steps 2 and 4) x two generators x three levels.
    assert len(evaluations) == 12
    assert {row["phi_gv"] for row in evaluations} == {"0.3", "0.5", "0.7"}


def test_smoke_selection_ignores_held_out(smoke_run):
    config, result = smoke_run
    rows = _read_rows(os.path.join(config.out_dir, "eval.csv"))
    scores = {}
    for row in rows:
        if row["held_out"] == "0":
            scores.setdefault((int(row["step"]), row["generator"]), []).append(float(row["score"]))
    best = min(scores, key=lambda key: np.mean(scores[key]))
    selection = result["card"]["validation"]["selection"]
    assert (selection["step"], selection["generator"]) == best
    assert selection["score"] == pytest.approx(np.mean(scores[best]))
    per_level = result["card"]["validation"]["per_level"]
    assert per_level["0.5"]["held_out"] is True
    assert per_level["0.3"]["held_out"] is False


def test_unconditioned_single_file(level_paths, tmp_path):
    config = SeamlessConfig.from_toml_dict(
        {
            "family": "seamless",
            "data": {"path": level_paths[0], "validation_fraction": 0.25},
            "model": {"condition": "none", "latent_channels": 4, "generator_filters": [4, 4],
                      "generator_kernel_size": 3, "critic_filters": [4], "critic_kernel_size": 3},
            "training": {"batch_size": 4, "crop_length": 32, "steps": 2, "r1_interval": 1},
            "output": {"dir": str(tmp_path), "eval_interval": 2, "checkpoint_interval": 2,
                       "n_eval_chunks": 8, "n_validation_chunks": 8,
                       "long_timeline_samples": 256},
        }
    )
    result = train_seamless(config, progress=False)
    generator = keras.saving.load_model(result["bundle"], compile=False)
    assert result["card"]["conditioning"] == {}
    assert result["card"]["sequence"]["latent_stride"] == 2
    assert len(generator.inputs) == 1
    latents = np.zeros((1, 10, 4), dtype=np.float32)
    assert _generate(generator, latents).shape == (1, 20)


def test_config_rejects_bad_entries(tmp_path):
    with pytest.raises(ValueError, match="'crop_length' \\(510\\) must be a multiple of the latent stride 4"):
        SeamlessConfig(data_paths=("x.h5",), crop_length=510)
    with pytest.raises(ValueError, match="held_out_levels_gv = \\[0.5\\] is invalid with condition = 'none'"):
        SeamlessConfig(data_paths=("x.h5",), condition="none", held_out_levels_gv=(0.5,))
    with pytest.raises(ValueError, match="'condition' must be one of \\['phi_gv', 'none'\\]. Got 'flux'"):
        SeamlessConfig(data_paths=("x.h5",), condition="flux")
    with pytest.raises(ValueError, match="'generator_kernel_size' must be odd. Got 4"):
        SeamlessConfig(data_paths=("x.h5",), generator_kernel_size=4)
    with pytest.raises(ValueError, match="held_out_levels_gv must be a list of numbers in GV. Got \\['0.5'\\]"):
        SeamlessConfig(data_paths=("x.h5",), held_out_levels_gv=("0.5",))
    with pytest.raises(TypeError, match="'steps' must be of type int. Got '5'"):
        SeamlessConfig(data_paths=("x.h5",), steps="5")
    with pytest.raises(ValueError, match="seamless config has no training set"):
        load_config(SMOKE_CONFIG)
    path = tmp_path / "typo.toml"
    path.write_text('family = "seamless"\n[data]\npaths = ["x.h5"]\nheld_out = [0.5]\n')
    with pytest.raises(ValueError, match="unknown key 'held_out' in \\[data\\]"):
        load_config(str(path))


def test_data_errors_name_levels(level_paths, tmp_path):
    base = SeamlessConfig(data_paths=tuple(level_paths), out_dir=str(tmp_path), crop_length=64,
                          batch_size=4, steps=1)
    with pytest.raises(ValueError, match="Held-out level 0.45 GV is not in the training sets, "
                                         "which contain phi levels \\[0.3, 0.5, 0.7\\] GV"):
        train_seamless(dataclasses.replace(base, held_out_levels_gv=(0.45,)), progress=False)
    with pytest.raises(ValueError, match="needs at least two trained phi levels"):
        train_seamless(dataclasses.replace(base, data_paths=(level_paths[0],)), progress=False)
    with pytest.raises(ValueError, match="'crop_length' \\(256\\) exceeds the chunk length 128"):
        train_seamless(dataclasses.replace(base, crop_length=256), progress=False)
    with pytest.raises(FileNotFoundError, match="Training set 'missing.h5' not found"):
        train_seamless(dataclasses.replace(base, data_paths=("missing.h5",)), progress=False)
    with pytest.raises(TypeError, match="config must be a SeamlessConfig. Got dict"):
        train_seamless({}, progress=False)


def test_cli_data_replaces_paths(level_paths):
    family, config = load_config(DEFAULT_CONFIG, data=level_paths[1])
    assert family == "seamless"
    assert config.training_paths == (level_paths[1],)
    assert config.data_path == level_paths[1]
    assert config.held_out_levels_gv == (0.5,)
    assert config.crop_length % config.latent_stride == 0


def test_trained_rate_falls_with_phi():
    # Events above 5 transform scales per 1060 samples. In the reference MC the rate
    # falls from about 13 per chunk at 0.30 GV to about 4 at 0.75 GV. With 400 chunks
    # per level the standard error of each mean rate is below 0.3 (the per-chunk
    # standard deviation is below 5), so differences of several events are far
    # beyond sampling noise.
    from toast_crab.validation.metrics import find_events

    generator = keras.saving.load_model(TRAINED_BUNDLE, compile=False)
    with open(os.path.splitext(TRAINED_BUNDLE)[0] + ".json") as handle:
        card = json.load(handle)
    entry = card["conditioning"]["phi_gv"]
    scale_w = card["transform"]["scale_w"]
    rates = []
    for phi_gv in (0.30, 0.50, 0.75):
        rng = np.random.default_rng(np.random.SeedSequence(11))
        y = generate_timestreams(
            generator, 400, 1060, card["sequence"]["halo_latents"],
            card["sequence"]["latent_stride"], rng, normalise_condition([phi_gv], entry)[0],
        )
        chunks_w = scale_w * np.sinh(y.astype(np.float64))
        rates.append(find_events(chunks_w, sigma_w=scale_w, threshold_sigma=5.0).counts.mean())
    assert rates[0] > rates[1] + 1.0
    assert rates[1] > rates[2] + 1.0


def test_smoke_bundle_runs_in_inject_crab(smoke_run):
    from astropy import units as u

    from helpers import create_comm, create_satellite_data
    from toast_crab.ops import InjectCRAB

    _, result = smoke_run
    data = create_satellite_data(create_comm(None), n_pix=1, n_obs=1, obs_minutes=2.0)
    try:
        InjectCRAB(model=result["bundle"], det_data="cr", det_data_units=u.W,
                   phi=0.45 * u.GV, block_latents=64).apply(data)
        for ob in data.obs:
            for det in ob.local_detectors:
                values = np.asarray(ob.detdata["cr"][det])
                assert np.all(np.isfinite(values))
                assert np.any(values != 0)
    finally:
        data.clear()
