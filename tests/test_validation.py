"""Validation metrics on arrays with known values (toast_crab.validation.metrics)."""

import numpy as np
import pytest

from toast_crab.validation import metrics


def _rng(seed):
    return np.random.default_rng(np.random.SeedSequence(seed))


def test_find_events_runs_and_peaks():
    chunks = np.zeros((3, 20))
    chunks[0, 3:6] = [10.0, 20.0, 5.0]
    chunks[1, 19] = 7.0
    chunks[2, 0] = 9.0
    chunks[2, 2:4] = [9.0, 11.0]

    events = metrics.find_events(chunks, sigma_w=1.0, threshold_sigma=5.0)

    np.testing.assert_array_equal(events.counts, [1, 1, 2])
    np.testing.assert_array_equal(events.chunk, [0, 1, 2, 2])
    np.testing.assert_array_equal(events.position, [4, 19, 0, 3])
    np.testing.assert_array_equal(events.amplitude_w, [20.0, 7.0, 9.0, 11.0])
    # 5.0 is not above the threshold of 5, so the first run is two samples long.
    np.testing.assert_array_equal(events.width_samples, [2, 1, 1, 2])
    assert events.decay_ratio[0] == pytest.approx(0.25)
    assert np.isnan(events.decay_ratio[1])


def test_find_events_per_chunk_mad():
    rng = _rng(1)
    chunks = rng.normal(0.0, 2.0, (4, 4000))
    chunks[:, 100] += 100.0
    events = metrics.find_events(chunks, threshold_sigma=8.0)
    np.testing.assert_array_equal(events.counts, [1, 1, 1, 1])
    # The per-chunk MAD of N(0, 2) gives sigma 2 to a few percent (n = 4000).
    np.testing.assert_allclose(events.threshold_w, 16.0, rtol=0.1)


def test_find_events_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D array"):
        metrics.find_events(np.zeros(10))
    with pytest.raises(ValueError, match="threshold_sigma must be positive"):
        metrics.find_events(np.zeros((2, 10)), threshold_sigma=0.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.find_events(np.full((2, 10), np.nan))


def test_poisson_events_fano_one():
    # Isolated unit spikes on a quiet baseline, Poisson counts per chunk: the
    # finder must return the counts exactly, and their Fano factor is 1 within its
    # standard error sqrt(2 / n) = 0.014 for n = 10000 chunks (tolerance 5 sigma).
    rng = _rng(2)
    n_chunks, length, mean = 10000, 200, 4.0
    counts = rng.poisson(mean, n_chunks)
    chunks = rng.normal(0.0, 0.01, (n_chunks, length))
    for row, count in enumerate(counts):
        slots = rng.choice(length // 4, size=count, replace=False) * 4
        chunks[row, slots] += 1.0
    events = metrics.find_events(chunks, sigma_w=0.01, threshold_sigma=10.0)
    np.testing.assert_array_equal(events.counts, counts)
    rate, fano = metrics.rate_statistics(events.counts)
    assert rate == pytest.approx(mean, rel=0.03)
    assert fano == pytest.approx(1.0, abs=0.07)


def test_rate_statistics_without_events():
    rate, fano = metrics.rate_statistics(np.zeros(10))
    assert rate == 0.0
    assert np.isnan(fano)


def test_wasserstein_shift_equals_shift():
    sample = _rng(3).standard_normal(5000)
    assert metrics.wasserstein_1d(sample, sample + 0.3) == pytest.approx(0.3, rel=1e-9)
    assert np.isnan(metrics.wasserstein_1d([], sample))


def test_ks_distance_extremes():
    sample = _rng(4).standard_normal(1000)
    assert metrics.ks_distance(sample, sample) == 0.0
    assert metrics.ks_distance(sample, sample + 100.0) == 1.0


def test_hill_pareto_index():
    # Pareto with alpha = 2.5: the Hill estimate on the top 5 % of 1e5 values has
    # standard error alpha / sqrt(5000) = 0.035; allow 4 sigma.
    alpha = 2.5
    sample = _rng(5).pareto(alpha, 100000) + 1.0
    assert metrics.hill_tail_index(sample, tail_fraction=0.05) == pytest.approx(alpha, abs=0.14)


def test_hill_too_few_values():
    assert np.isnan(metrics.hill_tail_index(np.arange(1.0, 50.0), tail_fraction=0.05))
    with pytest.raises(ValueError, match="tail_fraction must be in"):
        metrics.hill_tail_index(np.arange(10.0), tail_fraction=1.5)


def test_white_noise_psd_level():
    # One-sided PSD of white noise: 2 sigma^2 / fs. Averaged over 400 chunks x 7
    # segments the mean level is known to well under 2 %.
    sigma, rate_hz = 3.0, 19.1
    chunks = _rng(6).normal(0.0, sigma, (400, 1060))
    freqs, psd = metrics.mean_psd(chunks, rate_hz, nperseg=256)
    assert freqs[-1] == pytest.approx(rate_hz / 2)
    assert np.mean(psd[1:-1]) == pytest.approx(2 * sigma**2 / rate_hz, rel=0.02)


def test_bin_spectrum_means():
    freqs = np.array([1.0, 2.0, 3.0, 4.0])
    psd = np.array([1.0, 3.0, 5.0, 7.0])
    binned = metrics.bin_spectrum(freqs, psd, np.array([0.5, 2.5, 4.5, 10.0]))
    np.testing.assert_allclose(binned[:2], [2.0, 6.0])
    assert np.isnan(binned[2])


def test_autocorrelation_ar1():
    # AR(1) with phi = 0.6 has autocorrelation phi^k; the biased per-chunk estimate
    # is low by about (1 - k / L) and by O(1 / L) from the mean removal.
    rng = _rng(7)
    phi, n_chunks, length = 0.6, 300, 1000
    noise = rng.standard_normal((n_chunks, length + 200))
    series = np.zeros_like(noise)
    for t in range(1, noise.shape[1]):
        series[:, t] = phi * series[:, t - 1] + noise[:, t]
    acf = metrics.mean_autocorrelation(series[:, 200:], max_lag=3)
    np.testing.assert_allclose(acf, [1.0, 0.6, 0.36, 0.216], atol=0.02)


def test_autocorrelation_constant_chunks_nan():
    assert np.all(np.isnan(metrics.mean_autocorrelation(np.ones((3, 50)), 5)))


def test_density_coverage_same_and_collapsed():
    rng = _rng(8)
    real = rng.standard_normal((2000, 4))
    fake = rng.standard_normal((2000, 4))
    density, coverage = metrics.density_coverage(real, fake, k=5)
    # Naeem et al. 2020: E[density] = 1 and coverage ~ 1 - 2^-k = 0.97 for one
    # distribution; the sampling scatter at n = 2000 is a few percent.
    assert density == pytest.approx(1.0, abs=0.1)
    assert coverage == pytest.approx(0.97, abs=0.03)

    collapsed = np.zeros((2000, 4))
    density, coverage = metrics.density_coverage(real, collapsed, k=5)
    assert coverage < 0.05
    assert density > 1.0


def test_density_coverage_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        metrics.density_coverage(np.zeros((5, 2)), np.zeros((5, 2)), k=5)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.density_coverage(np.zeros((5, 2)), np.zeros((5, 3)))


def test_nearest_neighbour_exact():
    reference = np.array([[0.0, 0.0], [3.0, 4.0]])
    query = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    np.testing.assert_allclose(
        metrics.nearest_neighbour_distances(query, reference, block=2), [0.0, 1.0, 5.0]
    )


def test_memorization_copies_and_fresh():
    rng = _rng(9)
    train = rng.standard_normal((500, 20))
    held_out = metrics.copy_ratios(rng.standard_normal((400, 20)), train)
    copies = metrics.copy_ratios(train[:100] + 1e-6, train)
    fresh = metrics.copy_ratios(rng.standard_normal((400, 20)), train)
    # Draws of the bulk only (scaled down): close to training and to each other.
    smooth = metrics.copy_ratios(0.3 * rng.standard_normal((400, 20)), train)
    assert metrics.memorization_fraction(copies, held_out)[0] == 1.0
    # Fresh draws fall below the 1 % quantile about 1 % of the time; binomial 4 sigma
    # at n = 400 is 2 %.
    assert metrics.memorization_fraction(fresh, held_out)[0] <= 0.03
    assert metrics.memorization_fraction(smooth, held_out)[0] <= 0.03


def test_copy_ratio_identical_set_infinite():
    train = _rng(16).standard_normal((50, 5))
    ratios = metrics.copy_ratios(np.ones((10, 5)), train)
    assert np.all(np.isinf(ratios))


def test_nearest_neighbour_exclude_self():
    points = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(
        metrics.nearest_neighbour_distances(points, points, exclude_self=True), [1.0, 1.0, 2.0]
    )
    with pytest.raises(ValueError, match="one array"):
        metrics.nearest_neighbour_distances(points, points[:2], exclude_self=True)


def test_paired_correlation_cases():
    rng = _rng(10)
    a = rng.standard_normal((100, 500))
    b = rng.standard_normal((100, 500))
    # Independent: |r| ~ 1 / sqrt(5e4) = 0.0045; allow 5 sigma.
    assert abs(metrics.paired_correlation(a, b)) < 0.023
    assert metrics.paired_correlation(a, a) == pytest.approx(1.0)
    assert np.isnan(metrics.paired_correlation(a, np.zeros_like(a)))
    with pytest.raises(ValueError, match="same shape"):
        metrics.paired_correlation(a, b[:50])


def _ar1_timeline(rng, n_streams, n_chunks, length, phi=0.8):
    noise = rng.standard_normal((n_streams, n_chunks * length))
    series = np.zeros_like(noise)
    for t in range(1, noise.shape[1]):
        series[:, t] = phi * series[:, t - 1] + noise[:, t]
    chunks = series.reshape(n_streams * n_chunks, length)
    stream = np.repeat(np.arange(n_streams), n_chunks)
    index = np.tile(np.arange(n_chunks), n_streams)
    return chunks, stream, index


def test_seams_continuous_vs_offsets():
    rng = _rng(11)
    chunks, stream, index = _ar1_timeline(rng, 4, 40, 128)
    smooth = metrics.seam_statistics(chunks, stream, index, margin=16)
    assert smooth["n_boundaries"] == 4 * 39
    assert smooth["ks_value"] < 0.05
    assert smooth["jump_log_ratio"] < 0.1

    # An independent offset per chunk puts a jump at every boundary.
    jumpy = chunks + rng.normal(0.0, 10.0, (chunks.shape[0], 1))
    seams = metrics.seam_statistics(jumpy, stream, index, margin=16)
    assert seams["jump_log_ratio"] > 0.5
    # One of the 31 steps within 16 samples of a boundary crosses it, so the
    # step distributions differ by about D = 1 / 31.
    assert seams["ks_step"] > 0.02
    assert smooth["ks_step"] < 0.02


def test_seams_margin_checked():
    with pytest.raises(ValueError, match="margin must be in"):
        metrics.seam_statistics(np.zeros((2, 40)), [0, 0], [0, 1], margin=11)


def test_comb_lines_from_repeated_profile():
    rng = _rng(12)
    length = 100
    chunks, stream, index = _ar1_timeline(rng, 2, 64, length, phi=0.3)
    plain = metrics.comb_line_excess(chunks, stream, index, 19.1)
    # A sine with the chunk period makes one line, 20 times its neighbours, among
    # 50 lines: the mean ratio rises by about 0.4, i.e. 0.15 dex.
    sine = np.sin(2 * np.pi * np.arange(length) / length) * 0.5
    one_line = metrics.comb_line_excess(chunks + sine, stream, index, 19.1)
    # A spike at the first sample of every chunk puts lines at every k.
    spike = np.zeros(length)
    spike[0] = 10.0
    all_lines = metrics.comb_line_excess(chunks + spike, stream, index, 19.1)
    assert abs(plain["excess_dex"]) < 0.05
    assert one_line["excess_dex"] > plain["excess_dex"] + 0.1
    assert all_lines["excess_dex"] > 0.5
    assert one_line["line_freqs_hz"][0] == pytest.approx(19.1 / length)


def test_comb_needs_long_timelines():
    chunks = np.zeros((4, 50))
    result = metrics.comb_line_excess(chunks, [0, 0, 1, 1], [0, 1, 0, 1], 19.1)
    assert np.isnan(result["excess_dex"])


def test_detector_correlation_common_mode():
    rng = _rng(13)
    common = rng.standard_normal((200, 1, 300))
    chunks = common + rng.standard_normal((200, 3, 300))
    matrix = metrics.detector_correlation_matrix(chunks)
    # Equal common and independent variances give correlation 0.5 off the diagonal.
    np.testing.assert_allclose(matrix[~np.eye(3, dtype=bool)], 0.5, atol=0.02)
    independent = rng.standard_normal((200, 3, 300))
    assert metrics.correlation_matrix_distance(chunks, independent) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="n_det >= 2"):
        metrics.detector_correlation_matrix(np.zeros((3, 300)))


def test_binomial_interval_known_value():
    low, high = metrics.binomial_interval(50, 100)
    # Clopper-Pearson 95 % interval for 50 / 100 (exact beta quantiles).
    assert low == pytest.approx(0.3983, abs=1e-4)
    assert high == pytest.approx(0.6017, abs=1e-4)


def test_chunk_features_shape_and_scale():
    chunks = _rng(14).normal(0.0, 1.0, (10, 512))
    features = metrics.chunk_features(chunks, 1.0, 19.1)
    assert features.shape == (10, 13)
    assert np.all(np.isfinite(features))
    with pytest.raises(ValueError, match="scale_w must be a positive"):
        metrics.chunk_features(chunks, 0.0, 19.1)


def test_robust_sigma_gaussian():
    sample = _rng(15).normal(0.0, 2.0, 200000)
    # The MAD estimate of sigma has relative standard error ~1.17 / sqrt(n) = 0.3 %.
    assert metrics.robust_sigma(sample) == pytest.approx(2.0, rel=0.015)
