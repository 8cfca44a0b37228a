"""Checks of the training diagnostics on synthetic glitch timestreams."""

import json

import numpy as np
import pytest

from toast_crab.training.diagnostics import (
    COLLAPSE_CHECKS,
    SCORE_STATISTICS,
    checkpoint_score,
    diagnose,
    diagnosis_to_json,
    is_collapsed,
    make_reference,
    plot_diagnostics,
    summary_row,
)

CHUNK_LENGTH = 256
N_CHUNKS = 128
CONTINUUM_W = 1e-17


def _glitch_chunks(n_chunks, seed):
    """Gaussian continuum plus Poisson glitches with Pareto amplitudes and an
    exponential decay, one independent timeline cut into chunks."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n_samples = n_chunks * CHUNK_LENGTH
    timeline = CONTINUUM_W * rng.standard_normal(n_samples)
    n_glitches = rng.poisson(0.02 * n_samples)
    spikes = np.zeros(n_samples)
    np.add.at(
        spikes,
        rng.integers(0, n_samples, n_glitches),
        CONTINUUM_W * (6.0 + 20.0 * rng.pareto(1.5, n_glitches)),
    )
    timeline += np.convolve(spikes, np.exp(-np.arange(8) / 1.5))[:n_samples]
    return timeline.reshape(n_chunks, CHUNK_LENGTH)


@pytest.fixture(scope="module")
def real():
    return _glitch_chunks(N_CHUNKS, seed=1)


@pytest.fixture(scope="module")
def reference(real):
    return make_reference(real, seed=5)


@pytest.fixture(scope="module")
def repeated_chunk():
    rng = np.random.default_rng(np.random.SeedSequence(3))
    chunk = _glitch_chunks(N_CHUNKS, seed=2)[7]
    return chunk + 1e-3 * CONTINUUM_W * rng.standard_normal((N_CHUNKS, CHUNK_LENGTH))


def test_real_vs_real_not_collapsed(real, reference):
    # Independent timelines of one process, several seeds.
    for seed in (10, 11, 12, 13):
        diag = diagnose(real, _glitch_chunks(N_CHUNKS, seed=seed), reference=reference, seed=5)
        assert not diag["collapsed"], diag["checks"]
        for name in COLLAPSE_CHECKS:
            assert not diag["checks"][name]["collapsed"], name
        # Each |z| is measured against splits of half-size sets, so its spread is
        # about 1 / sqrt(2); the mean of 10 such |z| is ~0.6 with a standard
        # deviation below 0.6 even if all are fully correlated, so 3 is > 4 sigma.
        assert diag["score"] < 3.0


def test_repeated_chunk_collapsed(real, reference, repeated_chunk):
    diag = diagnose(real, repeated_chunk, reference=reference, seed=5)
    assert diag["collapsed"]
    assert is_collapsed(diag)
    assert diag["checks"]["log_gen_gen_ratio"]["collapsed"]
    assert diag["score"] > 10.0


def test_constant_output_collapsed(real, reference):
    diag = diagnose(real, np.zeros_like(real), reference=reference, seed=5)
    assert diag["collapsed"]
    assert diag["statistics"]["event_rate_generated"] == 0.0
    assert diag["score"] > 10.0


def test_non_finite_output_fails(real, reference):
    generated = _glitch_chunks(N_CHUNKS, seed=20)
    generated[3, 5] = np.nan
    diag = diagnose(real, generated, reference=reference, seed=5)
    assert diag["collapsed"]
    assert diag["non_finite_fraction"] == pytest.approx(1.0 / generated.size)
    assert diag["score"] == 100.0


def test_shuffled_real_beats_collapsed(real, reference, repeated_chunk):
    rng = np.random.default_rng(np.random.SeedSequence(4))
    other = _glitch_chunks(N_CHUNKS, seed=30)[rng.permutation(N_CHUNKS)]
    shifts = rng.integers(0, CHUNK_LENGTH, N_CHUNKS)
    shuffled = np.stack([np.roll(chunk, shift) for chunk, shift in zip(other, shifts)])
    real_score = diagnose(real, shuffled, reference=reference, seed=5)["score"]
    collapsed_score = diagnose(real, repeated_chunk, reference=reference, seed=5)["score"]
    assert real_score < collapsed_score
    assert real_score < 3.0


def test_wrong_amplitude_scored_worse(real, reference):
    generated = _glitch_chunks(N_CHUNKS, seed=40)
    good = diagnose(real, generated, reference=reference, seed=5)
    quiet = diagnose(real, 0.5 * generated, reference=reference, seed=5)
    assert quiet["score"] > good["score"] + 5.0
    assert abs(quiet["z"]["log_robust_sigma_ratio"]) > 10.0


def test_diagnose_deterministic(real, reference):
    generated = _glitch_chunks(N_CHUNKS, seed=50)
    first = diagnose(real, generated, reference=reference, seed=5)
    second = diagnose(real, generated, reference=make_reference(real, seed=5), seed=5)
    assert first["score"] == second["score"]
    for key in ("real_real", "gen_gen", "real_gen"):
        np.testing.assert_array_equal(first["distances"][key], second["distances"][key])
    other_seed = diagnose(real, generated, seed=6)
    assert not np.array_equal(first["distances"]["gen_gen"], other_seed["distances"]["gen_gen"])


def test_reference_thresholds_below_split_mean(reference):
    assert reference.n_splits == 24
    for name in SCORE_STATISTICS:
        assert reference.split_values[name].shape == (24,)
        assert np.all(np.isfinite(reference.split_values[name])), name
        assert reference.split_std[name] >= 0.01
    for name in COLLAPSE_CHECKS:
        assert reference.lower_bound(name) < np.min(reference.split_values[name])


def test_score_and_verdict_from_dict(real, reference):
    diag = diagnose(real, _glitch_chunks(N_CHUNKS, seed=60), reference=reference, seed=5)
    expected = np.mean([min(abs(diag["z"][name]), 100.0) for name in SCORE_STATISTICS])
    assert checkpoint_score(diag) == pytest.approx(expected)
    diag["checks"]["log_fano_ratio"]["collapsed"] = True
    assert is_collapsed(diag)


def test_summary_and_json_plain(real, reference, tmp_path):
    diag = diagnose(real, np.zeros_like(real), reference=reference, seed=5)
    row = summary_row(diag, prefix="ema_")
    assert row["ema_score"] == diag["score"]
    assert row["ema_collapsed"] == 1.0
    assert all(isinstance(value, float) for value in row.values())
    text = json.dumps(diagnosis_to_json(diag), allow_nan=False)
    assert "distances" not in json.loads(text)
    path = plot_diagnostics(
        diag, str(tmp_path / "plots" / "diagnostics.png"),
        history={"ema": (np.array([1.0, 2.0]), np.array([50.0, 3.0]))}, title="test",
    )
    assert (tmp_path / "plots" / "diagnostics.png").stat().st_size > 1000
    assert path.endswith("diagnostics.png")


def test_diagnose_bad_inputs(real, reference):
    generated = _glitch_chunks(N_CHUNKS, seed=70)
    with pytest.raises(ValueError, match="must be 2-D"):
        diagnose(real[0], generated)
    with pytest.raises(ValueError, match="has 5 chunks; the diagnostics need at least 8"):
        diagnose(real, generated[:5])
    with pytest.raises(ValueError, match="has 4 chunks"):
        make_reference(real[:4])
    with pytest.raises(ValueError, match="chunks of 100 samples but real_w has 256"):
        diagnose(real, generated[:, :100])
    with pytest.raises(ValueError, match="built from another real set"):
        diagnose(real[:64], generated[:64], reference=reference)
    with pytest.raises(TypeError, match="reference must be a DiagnosticReference"):
        diagnose(real, generated, reference={"scale_w": 1.0})
    with pytest.raises(TypeError, match="must be a numeric array"):
        diagnose([["a", "b"]] * 8, generated)
    with pytest.raises(ValueError, match="real_w contains NaN"):
        diagnose(np.where(real > 0, real, np.inf), generated)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        diagnose(real, generated, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        diagnose(real, generated, seed=1.5)
    with pytest.raises(ValueError, match="n_splits must be >= 4"):
        make_reference(real, n_splits=2)
    with pytest.raises(ValueError, match="robust sigma of real_w is 0.0 W"):
        make_reference(np.zeros((16, 32)))
