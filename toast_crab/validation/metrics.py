"""Statistics that compare sets of cosmic-ray timestream chunks (NumPy and SciPy only).

Every function here treats the reference MC and a generator's output the same way.
Chunks are (n_chunks, chunk_length) float64 arrays in W of absorbed power change.

Groups of statistics:

* Glitch finder (:func:`find_events`): per-chunk median baseline, a robust noise
  level from the median absolute deviation (MAD), and events as runs of consecutive
  samples above a threshold. Per event it returns the peak amplitude, the width and
  the ratio of the sample after the peak to the peak.
* One-dimensional distances: Wasserstein-1 (:func:`wasserstein_1d`), the
  Kolmogorov-Smirnov statistic (:func:`ks_distance`), the Hill tail index
  (:func:`hill_tail_index`).
* Second-order statistics: mean Welch power spectral density in log-spaced bins and
  the mean autocorrelation of the chunks.
* Nearest-neighbour scores on low-dimensional chunk features: density and coverage
  (:func:`density_coverage`), and copy ratios with the memorization fraction
  (:func:`copy_ratios`, :func:`memorization_fraction`) on whole chunks.
* Independence (:func:`paired_correlation`), seams between concatenated chunks
  (:func:`seam_statistics`, :func:`comb_line_excess`) and the correlation matrix of
  several detectors (:func:`detector_correlation_matrix`).
"""

from dataclasses import dataclass

import numpy as np
import scipy.signal
import scipy.spatial.distance
import scipy.stats

__all__ = [
    "MAD_TO_SIGMA",
    "Events",
    "binomial_interval",
    "bin_spectrum",
    "chunk_features",
    "comb_line_excess",
    "copy_ratios",
    "correlation_matrix_distance",
    "density_coverage",
    "detector_correlation_matrix",
    "find_events",
    "hill_tail_index",
    "ks_distance",
    "log_frequency_edges",
    "mean_autocorrelation",
    "mean_psd",
    "memorization_fraction",
    "nearest_neighbour_distances",
    "off_diagonal_distance",
    "paired_correlation",
    "rank_correlation",
    "rate_statistics",
    "robust_sigma",
    "sample_ranks",
    "seam_statistics",
    "standardize_features",
    "wasserstein_1d",
]

# 1 / Phi^-1(3/4): the MAD of a Gaussian times this is its standard deviation
# (Hampel 1974, JASA 69, 383).
MAD_TO_SIGMA = 1.482602218505602

# Quantiles of the asinh-scaled samples of one chunk used as features.
_FEATURE_QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)

# Number of log-spaced frequency bands of the per-chunk spectrum used as features.
_FEATURE_BANDS = 4


def _as_chunks(chunks_w, name="chunks_w"):
    array = np.asarray(chunks_w, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_chunks, chunk_length) with at least one "
            f"chunk of two samples. Got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            f"{name} contains NaN or infinite values; check the generator or MC output."
        )
    return array


def robust_sigma(values, axis=None):
    """Compute 1.4826 times the median absolute deviation from the median.

    Args:
        values (array): Samples of any shape.
        axis (int): Axis to reduce; None flattens.

    Returns:
        (float or ndarray): Robust standard deviation in the unit of ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    center = np.median(values, axis=axis, keepdims=True)
    sigma = MAD_TO_SIGMA * np.median(np.abs(values - center), axis=axis)
    return float(sigma) if axis is None else sigma


@dataclass(frozen=True)
class Events:
    """Glitches found in a set of chunks.

    Attributes:
        counts (ndarray): (n_chunks,) int64, events per chunk.
        chunk (ndarray): (n_events,) int64, chunk of each event.
        position (ndarray): (n_events,) int64, sample index of the peak in its chunk.
        amplitude_w (ndarray): (n_events,) float64, W, peak minus the chunk baseline.
        width_samples (ndarray): (n_events,) int64, consecutive samples above threshold.
        decay_ratio (ndarray): (n_events,) float64, (x[p + 1] - b) / (x[p] - b) for
            peak p and baseline b; NaN when the peak is the last sample of a chunk.
        threshold_w (ndarray): (n_chunks,) float64, W, threshold above the baseline.
    """

    counts: np.ndarray
    chunk: np.ndarray
    position: np.ndarray
    amplitude_w: np.ndarray
    width_samples: np.ndarray
    decay_ratio: np.ndarray
    threshold_w: np.ndarray


def find_events(chunks_w, sigma_w=None, threshold_sigma=5.0):
    """Find glitches: runs of consecutive samples above the baseline plus a threshold.

    The baseline of each chunk is its median. The noise level is ``sigma_w`` when
    given (one value for every chunk, so two sets measured with the same value are
    compared on the same absolute threshold), otherwise 1.4826 times the MAD of each
    chunk. An event is a maximal run of samples with ``x - baseline > threshold_sigma
    * sigma``; its peak is the largest sample of the run (the first one on ties).

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        sigma_w (float): Noise level in W shared by all chunks; None estimates it
            per chunk.
        threshold_sigma (float): Threshold in units of the noise level, > 0.

    Returns:
        (Events): Per-chunk counts and per-event properties.
    """
    x = _as_chunks(chunks_w)
    if not threshold_sigma > 0:
        raise ValueError(f"threshold_sigma must be positive. Got {threshold_sigma!r}.")
    n_chunks, length = x.shape
    baseline = np.median(x, axis=1)
    if sigma_w is None:
        sigma = robust_sigma(x, axis=1)
    else:
        if not (np.isfinite(sigma_w) and sigma_w >= 0):
            raise ValueError(f"sigma_w must be a finite value >= 0 in W. Got {sigma_w!r}.")
        sigma = np.full(n_chunks, float(sigma_w))
    threshold = threshold_sigma * sigma
    excess = x - baseline[:, None]
    above = excess > threshold[:, None]

    # Run starts and ends (exclusive) come from the edges of the padded mask.
    # np.nonzero walks row by row, so the i-th start and the i-th end share a run.
    padded = np.zeros((n_chunks, length + 2), dtype=np.int8)
    padded[:, 1:-1] = above
    steps = np.diff(padded, axis=1)
    start_row, start_col = np.nonzero(steps == 1)
    end_col = np.nonzero(steps == -1)[1]

    # Peak of each run: sort the above-threshold samples by (run, -value) and keep
    # the first of each run.
    flat_index = np.flatnonzero(above)
    run_of_sample = np.searchsorted(start_row * length + start_col, flat_index, side="right") - 1
    order = np.lexsort((-excess.ravel()[flat_index], run_of_sample))
    first = np.unique(run_of_sample[order], return_index=True)[1]
    peak_flat = flat_index[order][first]
    peak_row, peak_col = np.divmod(peak_flat, length)
    amplitude = excess[peak_row, peak_col]

    decay = np.full(peak_row.size, np.nan)
    inside = peak_col + 1 < length
    decay[inside] = excess[peak_row[inside], peak_col[inside] + 1] / amplitude[inside]

    return Events(
        counts=np.bincount(start_row, minlength=n_chunks).astype(np.int64),
        chunk=peak_row.astype(np.int64),
        position=peak_col.astype(np.int64),
        amplitude_w=amplitude,
        width_samples=(end_col - start_col).astype(np.int64),
        decay_ratio=decay,
        threshold_w=threshold,
    )


def rate_statistics(counts):
    """Return the mean and the Fano factor (variance / mean) of event counts.

    Args:
        counts (array): (n_chunks,) events per chunk.

    Returns:
        (tuple): (mean, fano). The Fano factor is NaN when the mean is 0 or there is
        a single chunk.
    """
    counts = np.asarray(counts, dtype=np.float64)
    mean = float(np.mean(counts)) if counts.size else float("nan")
    if counts.size < 2 or not mean > 0:
        return mean, float("nan")
    return mean, float(np.var(counts, ddof=1) / mean)


def _finite(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def wasserstein_1d(a, b):
    """Return the Wasserstein-1 distance of two samples (NaN if either is empty).

    Non-finite values are dropped. The distance has the unit of the samples.
    """
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(scipy.stats.wasserstein_distance(a, b))


def ks_distance(a, b):
    """Return the two-sample Kolmogorov-Smirnov statistic D (NaN if either is empty).

    Non-finite values are dropped. D is used as an effect size only: samples of one
    timestream are correlated, so the KS p-value would be too small.
    """
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(scipy.stats.ks_2samp(a, b).statistic)


def hill_tail_index(values, tail_fraction=0.05, min_tail=10):
    """Estimate the Pareto tail index alpha with the Hill estimator.

    With the positive values sorted in decreasing order x_1 >= x_2 >= ... and
    k = round(tail_fraction * n), 1 / alpha = mean(log(x_i / x_{k+1})) for i <= k
    (Hill 1975, Ann. Statist. 3, 1163). For a Pareto law P(X > x) ~ x^-alpha the
    estimate is consistent, with standard error alpha / sqrt(k).

    Args:
        values (array): Samples; values <= 0 and non-finite values are dropped.
        tail_fraction (float): Fraction of the largest values used, in (0, 1).
        min_tail (int): Smallest k accepted.

    Returns:
        (float): alpha, or NaN when fewer than ``min_tail`` values fall in the tail.
    """
    if not 0 < tail_fraction < 1:
        raise ValueError(f"tail_fraction must be in (0, 1). Got {tail_fraction!r}.")
    x = _finite(values)
    x = np.sort(x[x > 0])[::-1]
    k = int(round(tail_fraction * x.size))
    if k < min_tail or k >= x.size:
        return float("nan")
    log_excess = np.log(x[:k] / x[k])
    mean_log = float(np.mean(log_excess))
    return 1.0 / mean_log if mean_log > 0 else float("nan")


def mean_psd(chunks_w, sample_rate_hz, nperseg=256):
    """Average the Welch power spectral density of every chunk.

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        sample_rate_hz (float): Sample rate.
        nperseg (int): Welch segment length, cut to the chunk length.

    Returns:
        (tuple): (freqs_hz (n_freq,) float64, psd (n_freq,) float64, W^2 / Hz).
    """
    x = _as_chunks(chunks_w)
    nperseg = min(int(nperseg), x.shape[1])
    freqs_hz, psd = scipy.signal.welch(
        x, fs=sample_rate_hz, nperseg=nperseg, detrend="constant", axis=-1
    )
    return freqs_hz, np.mean(psd, axis=0)


def log_frequency_edges(sample_rate_hz, nperseg, n_bins):
    """Return log-spaced bin edges from the first nonzero Welch frequency to Nyquist.

    Returns:
        (ndarray): (n_bins + 1,) float64, Hz.
    """
    lowest_hz = sample_rate_hz / nperseg
    nyquist_hz = 0.5 * sample_rate_hz
    return np.geomspace(lowest_hz, nyquist_hz * (1 + 1e-9), int(n_bins) + 1)


def bin_spectrum(freqs_hz, psd, edges_hz):
    """Average a spectrum in frequency bins ``[edge_i, edge_{i+1})``.

    Returns:
        (ndarray): (n_bins,) float64 mean per bin, NaN for a bin without frequencies.
    """
    freqs_hz = np.asarray(freqs_hz)
    psd = np.asarray(psd, dtype=np.float64)
    bin_index = np.digitize(freqs_hz, edges_hz) - 1
    n_bins = len(edges_hz) - 1
    out = np.full(n_bins, np.nan)
    for index in range(n_bins):
        selected = bin_index == index
        if np.any(selected):
            out[index] = np.mean(psd[selected])
    return out


def mean_autocorrelation(chunks_w, max_lag):
    """Average the normalized autocorrelation of the chunks.

    Each chunk's autocorrelation (mean removed, biased estimator, computed with an
    FFT) is divided by its lag-0 value. Chunks with zero variance carry no
    correlation and are left out.

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        max_lag (int): Largest lag in samples, < chunk_length.

    Returns:
        (ndarray): (max_lag + 1,) float64; 1 at lag 0. All NaN when every chunk is
        constant.
    """
    x = _as_chunks(chunks_w)
    length = x.shape[1]
    max_lag = int(max_lag)
    if not 0 < max_lag < length:
        raise ValueError(f"max_lag must be in [1, {length - 1}]. Got {max_lag}.")
    centred = x - x.mean(axis=1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(2 * length)))
    spectrum = np.fft.rfft(centred, n=n_fft, axis=1)
    acov = np.fft.irfft(np.abs(spectrum) ** 2, n=n_fft, axis=1)[:, : max_lag + 1]
    variance = acov[:, 0]
    valid = variance > 0
    if not np.any(valid):
        return np.full(max_lag + 1, np.nan)
    return np.mean(acov[valid] / variance[valid, None], axis=0)


def chunk_features(chunks_w, scale_w, sample_rate_hz, nperseg=256):
    """Describe each chunk by a few numbers: sorted amplitudes and band powers.

    The samples are mapped to ``y = asinh(x / scale_w)``, which is linear in the
    continuum and logarithmic in the glitch tail. Features: the quantiles
    0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99 and 1 of y in the chunk, and log10 of
    the mean Welch power of y in 4 log-spaced frequency bands.

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        scale_w (float): Amplitude scale of the asinh map, W (positive).
        sample_rate_hz (float): Sample rate.
        nperseg (int): Welch segment length, cut to the chunk length.

    Returns:
        (ndarray): (n_chunks, 13) float64.
    """
    x = _as_chunks(chunks_w)
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(f"scale_w must be a positive number of W. Got {scale_w!r}.")
    y = np.arcsinh(x / scale_w)
    quantiles = np.quantile(y, _FEATURE_QUANTILES, axis=1).T
    nperseg = min(int(nperseg), x.shape[1])
    freqs_hz, psd = scipy.signal.welch(y, fs=sample_rate_hz, nperseg=nperseg, axis=-1)
    edges = log_frequency_edges(sample_rate_hz, nperseg, _FEATURE_BANDS)
    bin_index = np.digitize(freqs_hz, edges) - 1
    bands = np.stack(
        [psd[:, bin_index == band].mean(axis=1) for band in range(_FEATURE_BANDS)], axis=1
    )
    # The floor keeps constant chunks finite; it is far below any real band power.
    log_bands = np.log10(np.maximum(bands, 1e-30))
    return np.concatenate([quantiles, log_bands], axis=1)


def standardize_features(features, reference):
    """Centre and scale features with the median and robust sigma of a reference set.

    A feature that is constant in the reference (robust sigma 0) is scaled by its
    standard deviation, or left unscaled when that is 0 too.

    Args:
        features (array): (n, d) float64.
        reference (array): (n_ref, d) float64.

    Returns:
        (ndarray): (n, d) float64.
    """
    reference = np.asarray(reference, dtype=np.float64)
    center = np.median(reference, axis=0)
    scale = robust_sigma(reference, axis=0)
    fallback = np.std(reference, axis=0)
    scale = np.where(scale > 0, scale, np.where(fallback > 0, fallback, 1.0))
    return (np.asarray(features, dtype=np.float64) - center) / scale


def _blocked_distances(query, reference, block=512):
    """Yield (start, stop, (stop - start, n_ref) Euclidean distances) per query block."""
    ref_sq = np.einsum("ij,ij->i", reference, reference)
    for start in range(0, query.shape[0], block):
        stop = min(start + block, query.shape[0])
        part = query[start:stop]
        squared = (
            np.einsum("ij,ij->i", part, part)[:, None] + ref_sq[None, :] - 2.0 * part @ reference.T
        )
        yield start, stop, np.sqrt(np.maximum(squared, 0.0))


def density_coverage(real, fake, k=5):
    """Compute density and coverage (Naeem et al. 2020, ICML, "Reliable fidelity and
    diversity metrics for generative models").

    Each real point i gets a ball of radius r_i = distance to its k-th nearest real
    neighbour. Density = (1 / (k m)) sum_j #{i : fake_j in ball_i}; it is about 1
    when the two sets come from one distribution and above 1 when fakes crowd in
    dense regions. Coverage = fraction of real balls that hold at least one fake;
    about 1 - 2^-k for equal sets of one distribution, lower under mode collapse.

    Args:
        real (array): (n, d) float64 features of the reference set.
        fake (array): (m, d) float64 features of the compared set.
        k (int): Neighbour rank of the ball radius, >= 1 and < n.

    Returns:
        (tuple): (density, coverage) floats.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real and fake must be 2-D with the same number of features. Got shapes "
            f"{real.shape} and {fake.shape}."
        )
    if not 1 <= k < real.shape[0]:
        raise ValueError(f"k must be in [1, {real.shape[0] - 1}]. Got {k}.")
    radii = scipy.spatial.cKDTree(real).query(real, k=k + 1)[0][:, -1]
    inside_count = 0
    covered = np.zeros(real.shape[0], dtype=bool)
    for _, _, distances in _blocked_distances(fake, real):
        inside = distances <= radii[None, :]
        inside_count += int(inside.sum())
        covered |= inside.any(axis=0)
    density = inside_count / (k * fake.shape[0])
    return float(density), float(covered.mean())


def nearest_neighbour_distances(query, reference, block=512, exclude_self=False):
    """Return the Euclidean distance of each query row to its nearest reference row.

    Args:
        query (array): (n, d) float64.
        reference (array): (n_ref, d) float64.
        block (int): Query rows per matrix product (memory ~ block * n_ref * 8 bytes).
        exclude_self (bool): ``query`` is ``reference``: skip each row's own entry.

    Returns:
        (ndarray): (n,) float64.
    """
    query = np.asarray(query, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if exclude_self and query.shape != reference.shape:
        raise ValueError(
            f"exclude_self needs query and reference to be one array. Got shapes "
            f"{query.shape} and {reference.shape}."
        )
    out = np.empty(query.shape[0])
    for start, stop, distances in _blocked_distances(query, reference, block):
        if exclude_self:
            rows = np.arange(stop - start)
            distances[rows, start + rows] = np.inf
        out[start:stop] = distances.min(axis=1)
    return out


def copy_ratios(chunks, training, block=512):
    """Return, per chunk, the distance to the nearest training chunk over the
    distance to the nearest other chunk of its own set.

    A copy of a training chunk has ratio 0. A new chunk has a ratio of order 1,
    also when it is smoother or more typical than real data (then both distances
    shrink). The ratio therefore separates copying from a generator that is merely
    close to the bulk of the data. A set of identical chunks gets ratio inf
    (collapse, caught by other metrics).

    Args:
        chunks (array): (n, d) float64, n >= 2, e.g. asinh-scaled chunks.
        training (array): (n_train, d) float64.

    Returns:
        (ndarray): (n,) float64.
    """
    to_training = nearest_neighbour_distances(chunks, training, block)
    to_peers = nearest_neighbour_distances(chunks, chunks, block, exclude_self=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = to_training / to_peers
    return np.where(to_training == 0, 0.0, ratio)


def memorization_fraction(generated_ratios, held_out_ratios, quantile=0.01):
    """Return the fraction of generated chunks whose copy ratio is below the
    ``quantile`` of the held-out MC chunks' ratios.

    Args:
        generated_ratios (array): (m,) :func:`copy_ratios` of generated chunks.
        held_out_ratios (array): (n,) the same for held-out MC chunks.
        quantile (float): Quantile of the held-out ratios used as threshold.

    Returns:
        (tuple): (fraction, threshold ratio).
    """
    threshold = float(np.quantile(np.asarray(held_out_ratios), quantile))
    fraction = float(np.mean(np.asarray(generated_ratios) < threshold))
    return fraction, threshold


def sample_ranks(chunks):
    """Return the ranks of all samples of a set, shaped like the input.

    Args:
        chunks (array): (n_chunks, chunk_length) float64.

    Returns:
        (ndarray): (n_chunks, chunk_length) float64 ranks (ties averaged); all equal
        for a constant set.
    """
    chunks = _as_chunks(chunks)
    return scipy.stats.rankdata(chunks, axis=None).reshape(chunks.shape)


def rank_correlation(rank_a, rank_b):
    """Return the Pearson correlation of two rank arrays paired element by element
    (the Spearman correlation of the original values); NaN if either is constant."""
    rank_a = np.asarray(rank_a, dtype=np.float64).ravel()
    rank_b = np.asarray(rank_b, dtype=np.float64).ravel()
    if rank_a.shape != rank_b.shape:
        raise ValueError(f"Rank arrays must have one shape. Got {rank_a.shape} and {rank_b.shape}.")
    if np.ptp(rank_a) == 0 or np.ptp(rank_b) == 0:
        return float("nan")
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def paired_correlation(a, b):
    """Return the Spearman rank correlation of two sets of chunks, sample by sample.

    Chunk i of ``a`` is paired with chunk i of ``b``. Ranks make the statistic
    robust to the heavy glitch tail. It is near 0 for independent timestreams, with
    standard deviation about 1 / sqrt(effective number of samples).

    Args:
        a (array): (n_chunks, chunk_length) float64.
        b (array): The same shape.

    Returns:
        (float): The correlation; NaN when either set is constant.
    """
    a = _as_chunks(a, "a")
    b = _as_chunks(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape. Got {a.shape} and {b.shape}.")
    return rank_correlation(sample_ranks(a), sample_ranks(b))


def _consecutive_runs(stream_id, chunk_index):
    """Return lists of row indices whose chunks follow each other in one stream."""
    stream_id = np.asarray(stream_id)
    chunk_index = np.asarray(chunk_index)
    order = np.lexsort((chunk_index, stream_id))
    breaks = (np.diff(stream_id[order]) != 0) | (np.diff(chunk_index[order]) != 1)
    return np.split(order, np.flatnonzero(breaks) + 1)


def seam_statistics(chunks_w, stream_id, chunk_index, margin=32):
    """Compare samples near chunk boundaries with samples far from them.

    Chunks that follow each other in one stream (same ``stream_id``, consecutive
    ``chunk_index``) are joined into timelines. For a continuous MC timeline the
    boundaries are arbitrary, so nothing changes there; a generator that draws
    chunks independently can leave jumps or edge effects.

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        stream_id (array): (n_chunks,) int, the timeline of each chunk.
        chunk_index (array): (n_chunks,) int, position of each chunk in its timeline.
        margin (int): Samples on each side of a boundary counted as near it;
            at most a quarter of the chunk length.

    Returns:
        (dict): ``ks_value`` (KS D of the sample values near boundaries vs the
        interior), ``ks_step`` (KS D of |x[t+1] - x[t]| for steps near boundaries,
        including the step across the boundary, vs interior steps), ``jump_log_ratio``
        (|log10| of the median step across boundaries over the median interior step;
        NaN without a boundary or when a median is 0), ``n_boundaries``.
    """
    x = _as_chunks(chunks_w)
    length = x.shape[1]
    margin = int(margin)
    if not 1 <= margin <= length // 4:
        raise ValueError(f"margin must be in [1, {length // 4}]. Got {margin}.")
    position = np.arange(length)
    near = (position < margin) | (position >= length - margin)
    ks_value = ks_distance(x[:, near], x[:, ~near])

    near_steps, interior_steps, crossing_steps = [], [], []
    step_position = np.arange(length - 1)
    step_near = (step_position < margin - 1) | (step_position >= length - margin)
    for rows in _consecutive_runs(stream_id, chunk_index):
        timeline = x[rows].ravel()
        steps = np.abs(np.diff(timeline))
        within = np.delete(steps, np.arange(length - 1, steps.size, length))
        within = within.reshape(len(rows), length - 1)
        crossing = steps[length - 1 :: length]
        near_steps.append(within[:, step_near].ravel())
        interior_steps.append(within[:, ~step_near].ravel())
        crossing_steps.append(crossing)
    near_steps = np.concatenate(near_steps + crossing_steps)
    interior_steps = np.concatenate(interior_steps)
    crossing_steps = np.concatenate(crossing_steps)
    ks_step = ks_distance(near_steps, interior_steps)

    jump = float("nan")
    if crossing_steps.size:
        crossing_median = np.median(crossing_steps)
        interior_median = np.median(interior_steps)
        if crossing_median > 0 and interior_median > 0:
            jump = float(abs(np.log10(crossing_median / interior_median)))
    return {
        "ks_value": ks_value,
        "ks_step": ks_step,
        "jump_log_ratio": jump,
        "n_boundaries": int(crossing_steps.size),
    }


def comb_line_excess(chunks_w, stream_id, chunk_index, sample_rate_hz, oversample=8):
    """Measure spectral lines at multiples of 1 / (chunk duration) in long timelines.

    A generator that repeats anything with the chunk period (an edge effect, a mean
    profile) puts power at f_k = k * sample_rate / chunk_length. Timelines of
    consecutive chunks are analysed with Welch segments of ``oversample`` chunks
    (Hann window, half overlap), so the lines fall on every ``oversample``-th
    frequency bin. Each line gets the ratio P(f_k) / median of the bins 3 and 4
    bins away on both sides. The excess is log10 of the mean ratio, about 0
    without lines. The mean (not the mean log) lets one strong line show.

    Args:
        chunks_w (array): (n_chunks, chunk_length) float64, W.
        stream_id (array): (n_chunks,) int.
        chunk_index (array): (n_chunks,) int.
        sample_rate_hz (float): Sample rate.
        oversample (int): Chunks per Welch segment, >= 8.

    Returns:
        (dict): ``excess_dex`` (float; NaN when no timeline has ``oversample``
        consecutive chunks), ``freqs_hz`` and ``psd`` ((n_freq,) float64, W^2/Hz,
        mean over segments), ``line_freqs_hz``.
    """
    x = _as_chunks(chunks_w)
    length = x.shape[1]
    oversample = int(oversample)
    if oversample < 8:
        raise ValueError(f"oversample must be >= 8. Got {oversample}.")
    nperseg = oversample * length
    total = None
    n_segments = 0
    freqs_hz = None
    for rows in _consecutive_runs(stream_id, chunk_index):
        if len(rows) < oversample:
            continue
        timeline = x[rows].ravel()
        segments = 1 + (timeline.size - nperseg) // (nperseg // 2)
        freqs_hz, psd = scipy.signal.welch(
            timeline, fs=sample_rate_hz, nperseg=nperseg, noverlap=nperseg // 2,
            detrend="constant",
        )
        total = psd * segments if total is None else total + psd * segments
        n_segments += segments
    if total is None:
        return {"excess_dex": float("nan"), "freqs_hz": None, "psd": None, "line_freqs_hz": None}
    psd = total / n_segments
    lines = np.arange(oversample, psd.size - 4, oversample)
    neighbours = np.stack([psd[lines + offset] for offset in (-4, -3, 3, 4)])
    reference = np.median(neighbours, axis=0)
    valid = reference > 0
    if np.any(valid):
        excess = float(np.log10(np.mean(psd[lines][valid] / reference[valid])))
    else:
        excess = float("nan")
    return {
        "excess_dex": excess,
        "freqs_hz": freqs_hz,
        "psd": psd,
        "line_freqs_hz": freqs_hz[lines],
    }


def detector_correlation_matrix(chunks_w):
    """Return the Pearson correlation matrix between detectors.

    Args:
        chunks_w (array): (n_chunks, n_det, chunk_length) float64, W.

    Returns:
        (ndarray): (n_det, n_det) float64; NaN rows for constant detectors.
    """
    x = np.asarray(chunks_w, dtype=np.float64)
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(
            f"chunks_w must be (n_chunks, n_det, chunk_length) with n_det >= 2. Got shape {x.shape}."
        )
    per_detector = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(per_detector)


def correlation_matrix_distance(a, b):
    """Return the largest absolute difference of the off-diagonal correlations.

    Args:
        a (array): (n_chunks, n_det, chunk_length) float64, W, reference.
        b (array): (m_chunks, n_det, chunk_length) float64, W, compared set.
    """
    return off_diagonal_distance(detector_correlation_matrix(a), detector_correlation_matrix(b))


def off_diagonal_distance(matrix_a, matrix_b):
    """Return the largest absolute difference of the off-diagonal entries of two matrices.

    Args:
        matrix_a (array): (n_det, n_det) float64, e.g. from :func:`detector_correlation_matrix`.
        matrix_b (array): (n_det, n_det) float64.

    Returns:
        (float): The distance; NaN if an off-diagonal entry of either matrix is NaN.
    """
    matrix_a = np.asarray(matrix_a, dtype=np.float64)
    matrix_b = np.asarray(matrix_b, dtype=np.float64)
    if matrix_a.shape != matrix_b.shape:
        raise ValueError(
            f"Both sets need the same number of detectors. Got matrices of shape "
            f"{matrix_a.shape} and {matrix_b.shape}."
        )
    off = ~np.eye(matrix_a.shape[0], dtype=bool)
    difference = np.abs(matrix_a - matrix_b)[off]
    return float(np.max(difference)) if np.all(np.isfinite(difference)) else float("nan")


def binomial_interval(successes, trials, confidence=0.95):
    """Return the Clopper-Pearson (exact) confidence interval of a proportion.

    Returns:
        (tuple): (low, high).
    """
    result = scipy.stats.binomtest(int(successes), int(trials))
    interval = result.proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)
