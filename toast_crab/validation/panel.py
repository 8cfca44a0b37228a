"""The evaluation panel: every metric for every candidate, calibrated on MC-vs-MC.

The panel compares a reference set of held-out MC chunks with candidate sets
(generator output) and with calibration sets (more MC of the same size and run
layout). The calibration values are the noise floor of each metric: how far two
independent MC sets of this size differ by chance. A candidate passes a metric when
it sits within that scatter, by one of two rules:

* ``ratio``: pass if value <= factor * max(MC values). For non-negative distances
  that are 0 for identical sets (Wasserstein-1, KS D, |log spectrum ratio|, ...).
* ``margin``: pass if value <= max(MC values) + margin, where the margin is a
  stated multiple of a known standard deviation (binomial for accuracies and
  fractions, the scatter of the MC values for the comb-line excess).
* ``info``: reported with the ``ratio`` threshold but never judged. The mean PSD
  in W is dominated by the rarest, largest hits, so its MC-vs-MC scatter is too
  heavy tailed for a stable threshold. The PSD of asinh-scaled samples is judged.
  The same holds for the detector correlation matrix in W.

Sets of detector groups (several detectors of one wafer recorded together) get
their own comparison, :func:`evaluate_groups`: the detector-by-detector correlation
matrix of generated groups in each InjectCRAB stream mode against held-out MC
groups, with the ``ratio`` rule over pairs of MC group sets.

A value that cannot be computed (no events, constant output) fails.
"""

from dataclasses import dataclass, field

import numpy as np

from . import metrics

__all__ = [
    "ChunkSet",
    "DetectorGroups",
    "GROUP_METRICS",
    "GROUP_STREAM_MODES",
    "GroupResult",
    "MetricResult",
    "PanelConfig",
    "PanelResult",
    "SetSummary",
    "evaluate_groups",
    "evaluate_panel",
    "reference_scale",
    "summarize",
]

# Quantiles of the asinh-scaled samples reported for the marginal distribution.
MARGINAL_QUANTILES = (0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)


@dataclass
class ChunkSet:
    """Chunks with the order information that seams and C2ST splits need.

    Attributes:
        label (str): Name shown in reports ("held-out MC", a bundle name, ...).
        chunks (ndarray): (n_chunks, chunk_length) float64, W.
        stream_id (ndarray): (n_chunks,) int64: MC run or generator stream.
        chunk_index (ndarray): (n_chunks,) int64: position in the stream; chunks
            with consecutive indices in one stream form a continuous timeline.
        sample_rate_hz (float): Sample rate.
    """

    label: str
    chunks: np.ndarray
    stream_id: np.ndarray
    chunk_index: np.ndarray
    sample_rate_hz: float

    def __post_init__(self):
        self.chunks = np.asarray(self.chunks, dtype=np.float64)
        if self.chunks.ndim != 2:
            raise ValueError(
                f"ChunkSet {self.label!r}: chunks must be (n_chunks, chunk_length). "
                f"Got shape {self.chunks.shape}."
            )
        n_chunks = self.chunks.shape[0]
        self.stream_id = np.asarray(self.stream_id, dtype=np.int64)
        self.chunk_index = np.asarray(self.chunk_index, dtype=np.int64)
        for name in ("stream_id", "chunk_index"):
            if getattr(self, name).shape != (n_chunks,):
                raise ValueError(
                    f"ChunkSet {self.label!r}: {name} must have shape ({n_chunks},). "
                    f"Got {getattr(self, name).shape}."
                )

    @property
    def n_chunks(self):
        return int(self.chunks.shape[0])

    @property
    def chunk_length(self):
        return int(self.chunks.shape[1])


@dataclass(frozen=True)
class PanelConfig:
    """Settings of the panel. The defaults are the ones documented in docs/validation.md.

    Attributes:
        threshold_sigma (float): Glitch threshold in robust sigmas of the reference.
        nperseg (int): Welch segment length of the spectra, samples.
        n_psd_bins (int): Log-spaced frequency bins of the spectrum comparison.
        max_lag (int): Largest autocorrelation lag compared, samples (cut to the
            chunk length minus 1).
        tail_fraction (float): Fraction of the largest amplitudes in the Hill estimate.
        k_neighbours (int): k of density and coverage.
        seam_margin (int): Samples on each side of a chunk boundary counted as near it
            (at most a quarter of the chunk length is used).
        comb_oversample (int): Chunks per Welch segment of the comb-line search.
        ratio_factor (float): Factor of the ``ratio`` rule for two-set metrics
            (MC values from every pair of MC sets).
        single_factor (float): Factor of the ``ratio`` rule for one-set metrics
            (seams; MC values from each MC set, fewer than pairs).
        c2st_sigma (float): Binomial standard deviations added to the largest MC
            accuracy in the C2ST rule.
        c2st_steps (int): Minimum training batches of each C2ST classifier.
        n_c2st_calibration (int): MC-vs-MC C2ST repeats (each trains a classifier).
        memorization_quantile (float): Quantile of held-out distances that defines
            "closer than held-out MC".
        memorization_sigma (float): Binomial standard deviations of the memorization
            margin.
        comb_sigma (float): Standard deviations of the MC comb excess in its margin.
        seed (int): Seed of the C2ST classifiers.
    """

    threshold_sigma: float = 5.0
    nperseg: int = 256
    n_psd_bins: int = 10
    max_lag: int = 16
    tail_fraction: float = 0.05
    k_neighbours: int = 5
    seam_margin: int = 32
    comb_oversample: int = 8
    ratio_factor: float = 1.5
    single_factor: float = 2.0
    c2st_sigma: float = 2.0
    c2st_steps: int = 300
    n_c2st_calibration: int = 3
    memorization_quantile: float = 0.01
    memorization_sigma: float = 3.0
    comb_sigma: float = 3.0
    seed: int = 0


# name -> (group, unit, description, rule kind). The rule kinds are explained in
# the module docstring; the C2ST, memorization and comb rules use a margin.
METRICS = {
    "event_rate": ("events", "", "|mean events per chunk / MC - 1|", "ratio"),
    "event_fano": ("events", "", "|Fano factor of events per chunk - MC|", "ratio"),
    "amplitude_w1": ("events", "dex", "W1 of log10 event amplitude", "ratio"),
    "amplitude_ks": ("events", "", "KS D of log10 event amplitude", "ratio"),
    "amplitude_tail_index": ("events", "", "|Hill tail index (top 5 %) - MC|", "ratio"),
    "width_w1": ("events", "samples", "W1 of event width", "ratio"),
    "decay_w1": ("events", "", "W1 of the after-peak / peak ratio", "ratio"),
    "marginal_w1": ("samples", "asinh units", "W1 of asinh(x / sigma) over all samples", "ratio"),
    "marginal_ks": ("samples", "", "KS D of all sample values", "ratio"),
    "marginal_quantiles": ("samples", "asinh units", "max |quantile difference| of asinh(x / sigma)", "ratio"),
    "psd_log_ratio": ("spectra", "dex", "max over log bins of |log10 PSD / MC| (PSD of x in W)", "info"),
    "psd_scaled_log_ratio": ("spectra", "dex", "max over log bins of |log10 PSD / MC| (PSD of asinh(x / sigma))", "ratio"),
    "acf_difference": ("spectra", "", "max over lags 1..max_lag of |ACF - MC|", "ratio"),
    "c2st_accuracy": ("classifier", "", "C2ST held-out accuracy", "margin"),
    "density": ("neighbours", "", "|density - 1| on chunk features", "ratio"),
    "coverage": ("neighbours", "", "1 - coverage on chunk features", "ratio"),
    "memorization": ("neighbours", "", "fraction with copy ratio (NN distance to training / to own set) below the 1 % held-out quantile", "margin"),
    "independence": ("independence", "", "|Spearman r| between streams with different keys", "ratio"),
    "seam_ks_value": ("seams", "", "KS D of values near chunk boundaries vs interior", "ratio"),
    "seam_ks_step": ("seams", "", "KS D of |steps| near boundaries vs interior", "ratio"),
    "seam_jump": ("seams", "dex", "|log10 median step across boundaries / interior|", "ratio"),
    "seam_comb_excess": ("seams", "dex", "log10 mean PSD ratio at k / chunk duration vs neighbour bins", "margin"),
}

# The metrics of :func:`evaluate_groups`, in the format of ``METRICS``.
GROUP_METRICS = {
    "correlation_matrix_detector": ("groups", "", "max off-diagonal |C - C_MC|, C the detector correlation matrix of asinh(x / sigma), detector streams", "ratio"),
    "correlation_matrix_wafer": ("groups", "", "max off-diagonal |C - C_MC|, C the detector correlation matrix of asinh(x / sigma), wafer streams", "ratio"),
    "correlation_matrix_w_detector": ("groups", "", "max off-diagonal |C - C_MC|, C the detector correlation matrix of x in W, detector streams", "info"),
    "correlation_matrix_w_wafer": ("groups", "", "max off-diagonal |C - C_MC|, C the detector correlation matrix of x in W, wafer streams", "info"),
}

# InjectCRAB stream modes compared by the detector-group metrics: "detector" gives
# every detector its own stream, "wafer" adds one stream to all detectors of a wafer.
GROUP_STREAM_MODES = ("detector", "wafer")

# Correlation matrices of a detector-group set: of asinh(x / sigma) (judged) and of x
# in W (reported only, dominated by the largest hits like the PSD in W).
GROUP_QUANTITIES = ("scaled", "w")


@dataclass
class MetricResult:
    """One metric with its MC noise floor, threshold and per-candidate verdicts.

    Attributes:
        name (str): Metric name (a key of ``METRICS`` or ``GROUP_METRICS``).
        group (str): Family of the metric.
        description (str): What the value is.
        unit (str): Unit of the value ("" if none).
        rule (str): How the threshold follows from the MC values.
        mc_values (list): The metric on MC-vs-MC pairs (or on MC sets for one-set
            metrics); NaN entries are ignored.
        threshold (float): Largest passing value; NaN if the MC values are undefined.
        values (dict): Candidate label -> value.
        passed (dict): Candidate label -> True/False; None when no threshold exists.
        details (dict): Candidate label -> extra numbers (e.g. C2ST interval).
        mc_details (list): Extra numbers per MC value.
    """

    name: str
    group: str
    description: str
    unit: str
    rule: str
    mc_values: list
    threshold: float
    values: dict = field(default_factory=dict)
    passed: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    mc_details: list = field(default_factory=list)

    def to_dict(self):
        def clean(value):
            if isinstance(value, (float, np.floating)):
                return None if not np.isfinite(value) else float(value)
            if isinstance(value, dict):
                return {key: clean(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(item) for item in value]
            if isinstance(value, np.integer):
                return int(value)
            return value

        return clean(
            {
                "name": self.name,
                "group": self.group,
                "description": self.description,
                "unit": self.unit,
                "rule": self.rule,
                "mc_values": list(self.mc_values),
                "mc_max": _nanmax(self.mc_values),
                "threshold": self.threshold,
                "values": dict(self.values),
                "passed": dict(self.passed),
                "details": dict(self.details),
                "mc_details": list(self.mc_details),
            }
        )


def _nanmax(values):
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return max(finite) if finite else float("nan")


@dataclass
class SetSummary:
    """Everything the panel measures on one set, computed once.

    Attributes:
        label (str): The set's label.
        events (metrics.Events): Glitches found with the reference sigma.
        rate_mean (float): Mean events per chunk.
        rate_fano (float): Fano factor of events per chunk.
        log_amplitude (ndarray): (n_events,) log10 of amplitudes in W.
        tail_index (float): Hill tail index of the amplitudes.
        scaled (ndarray): (n_samples,) float64 asinh(x / sigma) of all samples.
        quantiles (ndarray): (len(MARGINAL_QUANTILES),) quantiles of ``scaled``.
        freqs_hz (ndarray): Welch frequencies, Hz.
        psd (ndarray): Mean Welch PSD, W^2 / Hz.
        psd_binned (ndarray): (n_psd_bins,) PSD in log-spaced bins.
        psd_scaled (ndarray): Mean Welch PSD of asinh(x / sigma), 1 / Hz.
        psd_scaled_binned (ndarray): (n_psd_bins,) the same in log-spaced bins.
        acf (ndarray): (max_lag + 1,) mean autocorrelation.
        features (ndarray): (n_chunks, 13) chunk features.
        seams (dict): Output of :func:`metrics.seam_statistics`.
        comb (dict): Output of :func:`metrics.comb_line_excess`.
        position_mean (ndarray): (chunk_length,) mean of asinh(x / sigma) at each
            position in the chunk.
        position_std (ndarray): (chunk_length,) its standard deviation over chunks.
        examples (ndarray): (3, chunk_length) float64, W: three consecutive chunks of
            the first stream, for plots.
    """

    label: str
    events: object
    rate_mean: float
    rate_fano: float
    log_amplitude: np.ndarray
    tail_index: float
    scaled: np.ndarray
    quantiles: np.ndarray
    freqs_hz: np.ndarray
    psd: np.ndarray
    psd_binned: np.ndarray
    psd_scaled: np.ndarray
    psd_scaled_binned: np.ndarray
    acf: np.ndarray
    features: np.ndarray
    seams: dict
    comb: dict
    position_mean: np.ndarray
    position_std: np.ndarray
    examples: np.ndarray


def reference_scale(chunks_w):
    """Return the noise scale of a reference set: the robust sigma of the samples
    around their chunk medians, W.

    Raises:
        ValueError: If it is not positive (more than half the samples equal their
            chunk median), since the glitch threshold and the asinh map need it.
    """
    chunks_w = np.asarray(chunks_w, dtype=np.float64)
    sigma = metrics.robust_sigma(chunks_w - np.median(chunks_w, axis=1, keepdims=True))
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"The reference set has robust sigma {sigma!r} W around its chunk medians, "
            "so glitch thresholds cannot be set. Use reference MC with a continuum "
            "(wafer hits or detector noise)."
        )
    return sigma


def _example_chunks(chunk_set, n_examples=3):
    for rows in metrics._consecutive_runs(chunk_set.stream_id, chunk_set.chunk_index):
        if len(rows) >= n_examples:
            return chunk_set.chunks[rows[:n_examples]].copy()
    return chunk_set.chunks[:n_examples].copy()


def summarize(chunk_set, sigma_w, config):
    """Measure one set of chunks with the reference noise scale ``sigma_w`` (W)."""
    x = chunk_set.chunks
    rate_hz = chunk_set.sample_rate_hz
    events = metrics.find_events(x, sigma_w=sigma_w, threshold_sigma=config.threshold_sigma)
    rate_mean, rate_fano = metrics.rate_statistics(events.counts)

    scaled_chunks = np.arcsinh(x / sigma_w)
    scaled = scaled_chunks.ravel()
    nperseg = min(config.nperseg, chunk_set.chunk_length)
    freqs_hz, psd = metrics.mean_psd(x, rate_hz, nperseg)
    edges = metrics.log_frequency_edges(rate_hz, nperseg, config.n_psd_bins)
    psd_scaled = metrics.mean_psd(scaled_chunks, rate_hz, nperseg)[1]

    return SetSummary(
        label=chunk_set.label,
        events=events,
        rate_mean=rate_mean,
        rate_fano=rate_fano,
        log_amplitude=np.log10(events.amplitude_w[events.amplitude_w > 0]),
        tail_index=metrics.hill_tail_index(events.amplitude_w, config.tail_fraction),
        scaled=scaled,
        quantiles=np.quantile(scaled, MARGINAL_QUANTILES),
        freqs_hz=freqs_hz,
        psd=psd,
        psd_binned=metrics.bin_spectrum(freqs_hz, psd, edges),
        psd_scaled=psd_scaled,
        psd_scaled_binned=metrics.bin_spectrum(freqs_hz, psd_scaled, edges),
        acf=metrics.mean_autocorrelation(x, min(config.max_lag, chunk_set.chunk_length - 1)),
        features=metrics.chunk_features(x, sigma_w, rate_hz, nperseg),
        seams=metrics.seam_statistics(
            x, chunk_set.stream_id, chunk_set.chunk_index,
            max(1, min(config.seam_margin, chunk_set.chunk_length // 4)),
        ),
        comb=metrics.comb_line_excess(
            x, chunk_set.stream_id, chunk_set.chunk_index, rate_hz, config.comb_oversample
        ),
        position_mean=scaled_chunks.mean(axis=0),
        position_std=scaled_chunks.std(axis=0),
        examples=_example_chunks(chunk_set),
    )


def _max_abs_log_ratio(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(np.asarray(b) / np.asarray(a))
    return float(np.max(np.abs(ratio))) if np.all(np.isfinite(ratio)) else float("nan")


def compare_summaries(ref, other, k_neighbours):
    """Return the two-set metrics of ``other`` against ``ref`` (name -> value)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = abs(other.rate_mean / ref.rate_mean - 1.0) if ref.rate_mean > 0 else float("nan")
    acf = np.abs(other.acf[1:] - ref.acf[1:])
    real = metrics.standardize_features(ref.features, ref.features)
    fake = metrics.standardize_features(other.features, ref.features)
    density, coverage = metrics.density_coverage(real, fake, k_neighbours)
    decay_ref = ref.events.decay_ratio
    decay_other = other.events.decay_ratio
    return {
        "event_rate": float(rate),
        "event_fano": abs(other.rate_fano - ref.rate_fano),
        "amplitude_w1": metrics.wasserstein_1d(ref.log_amplitude, other.log_amplitude),
        "amplitude_ks": metrics.ks_distance(ref.log_amplitude, other.log_amplitude),
        "amplitude_tail_index": abs(other.tail_index - ref.tail_index),
        "width_w1": metrics.wasserstein_1d(ref.events.width_samples, other.events.width_samples),
        "decay_w1": metrics.wasserstein_1d(decay_ref, decay_other),
        "marginal_w1": metrics.wasserstein_1d(ref.scaled, other.scaled),
        "marginal_ks": metrics.ks_distance(ref.scaled, other.scaled),
        "marginal_quantiles": float(np.max(np.abs(other.quantiles - ref.quantiles))),
        "psd_log_ratio": _max_abs_log_ratio(ref.psd_binned, other.psd_binned),
        "psd_scaled_log_ratio": _max_abs_log_ratio(ref.psd_scaled_binned, other.psd_scaled_binned),
        "acf_difference": float(np.max(acf)) if np.all(np.isfinite(acf)) else float("nan"),
        "density": abs(density - 1.0),
        "coverage": 1.0 - coverage,
    }


def one_set_metrics(summary):
    """Return the metrics that look at one set alone (seams)."""
    return {
        "seam_ks_value": summary.seams["ks_value"],
        "seam_ks_step": summary.seams["ks_step"],
        "seam_jump": summary.seams["jump_log_ratio"],
        "seam_comb_excess": summary.comb["excess_dex"],
    }


@dataclass
class PanelResult:
    """Output of :func:`evaluate_panel`.

    Attributes:
        metrics (list): :class:`MetricResult` in ``METRICS`` order.
        summaries (dict): Label -> :class:`SetSummary` for the reference, the
            calibration sets and the candidates.
        sigma_w (float): Noise scale of the reference, W.
        config (PanelConfig): The settings.
        c2st (dict): Label -> C2ST result dict (calibration labels too).
        notes (list): Metrics that were skipped, and why.
        sample_rate_hz (float): Sample rate of all sets.
    """

    metrics: list
    summaries: dict
    sigma_w: float
    config: PanelConfig
    c2st: dict
    notes: list
    sample_rate_hz: float

    def verdicts(self):
        """Return candidate label -> (n_passed, n_evaluated)."""
        out = {}
        for metric in self.metrics:
            for label, verdict in metric.passed.items():
                passed, total = out.get(label, (0, 0))
                if verdict is not None:
                    out[label] = (passed + int(verdict), total + 1)
        return out


def _ratio_threshold(mc_values, factor):
    return factor * _nanmax(mc_values)


def _metric_info(name):
    return METRICS[name] if name in METRICS else GROUP_METRICS[name]


def _make_result(name, mc_values, threshold, rule_text):
    group, unit, description, _ = _metric_info(name)
    return MetricResult(
        name=name, group=group, description=description, unit=unit, rule=rule_text,
        mc_values=[float(v) for v in mc_values], threshold=float(threshold),
    )


def _judge(result, label, value, detail=None):
    result.values[label] = float(value)
    if _metric_info(result.name)[3] == "info" or not np.isfinite(result.threshold):
        result.passed[label] = None
    else:
        result.passed[label] = bool(np.isfinite(value) and value <= result.threshold)
    if detail is not None:
        result.details[label] = detail


def _check_compatible(reference, sets):
    for chunk_set in sets:
        if chunk_set.chunk_length != reference.chunk_length:
            raise ValueError(
                f"Set {chunk_set.label!r} has chunk length {chunk_set.chunk_length}; the "
                f"reference has {reference.chunk_length}. Compare sets of one chunk length."
            )
        if not np.isclose(chunk_set.sample_rate_hz, reference.sample_rate_hz, rtol=1e-6):
            raise ValueError(
                f"Set {chunk_set.label!r} has sample rate {chunk_set.sample_rate_hz} Hz; the "
                f"reference has {reference.sample_rate_hz} Hz. Compare sets of one sample rate."
            )


def evaluate_panel(reference, candidates, calibration, second_draws=None, training=None,
                   memorization_labels=None, config=None, run_c2st=True, progress=None):
    """Compute every metric for every candidate and its MC-vs-MC threshold.

    Args:
        reference (ChunkSet): Held-out MC.
        candidates (list): :class:`ChunkSet` per generator (labels must differ).
        calibration (list): At least 2 :class:`ChunkSet` of independent MC with the
            size and run layout of ``reference``.
        second_draws (dict): Candidate label -> :class:`ChunkSet` drawn with other
            keys, the same shape and chunk indices; None skips the independence
            metric for that candidate.
        training (ChunkSet): The generator's training chunks, for the memorization
            metric; None skips it.
        memorization_labels (list): Candidates trained on ``training``; None means all.
        config (PanelConfig): Settings; None takes the defaults.
        run_c2st (bool): Train the C2ST classifiers (needs Keras).
        progress (callable): Called with a short step description before each step.

    Returns:
        (PanelResult): Metrics, summaries and notes.
    """
    config = config or PanelConfig()
    second_draws = second_draws or {}
    say = progress or (lambda message: None)
    if len(calibration) < 2:
        raise ValueError(
            f"The panel needs at least 2 calibration MC sets to estimate the noise floor. "
            f"Got {len(calibration)}. Use more MC runs (or fresh MC)."
        )
    labels = [candidate.label for candidate in candidates]
    all_labels = [reference.label] + labels + [c.label for c in calibration]
    if len(set(all_labels)) != len(all_labels):
        raise ValueError(f"Set labels must be unique. Got {all_labels}.")
    _check_compatible(reference, list(candidates) + list(calibration))

    sigma_w = reference_scale(reference.chunks)
    summaries = {}
    for chunk_set in [reference] + list(calibration) + list(candidates):
        say(f"summarizing {chunk_set.label}")
        summaries[chunk_set.label] = summarize(chunk_set, sigma_w, config)
    ref = summaries[reference.label]

    # Two-set metrics: the MC values come from every pair of MC sets (reference and
    # calibration), which all have the size and run layout of the reference.
    mc_sets = [reference] + list(calibration)
    pairs = [(i, j) for i in range(len(mc_sets)) for j in range(i + 1, len(mc_sets))]
    say(f"MC-vs-MC: {len(pairs)} pairs")
    mc_pairs = [
        compare_summaries(summaries[mc_sets[i].label], summaries[mc_sets[j].label], config.k_neighbours)
        for i, j in pairs
    ]
    candidate_pairs = {
        label: compare_summaries(ref, summaries[label], config.k_neighbours) for label in labels
    }
    results = {}
    factor = config.ratio_factor
    ratio_text = f"value <= {factor:g} x max(all MC-vs-MC pairs)"
    for name in mc_pairs[0]:
        mc_values = [pair[name] for pair in mc_pairs]
        text = ratio_text if METRICS[name][3] == "ratio" else "reported only (" + ratio_text + ")"
        results[name] = _make_result(name, mc_values, _ratio_threshold(mc_values, factor), text)
        for label in labels:
            _judge(results[name], label, candidate_pairs[label][name])

    # One-set metrics: the MC values are those of each MC set.
    mc_single = [one_set_metrics(summaries[s.label]) for s in mc_sets]
    for name in mc_single[0]:
        mc_values = [single[name] for single in mc_single]
        if name == "seam_comb_excess":
            finite = np.array([v for v in mc_values if np.isfinite(v)])
            spread = float(np.std(finite, ddof=1)) if finite.size > 1 else float("nan")
            threshold = _nanmax(mc_values) + config.comb_sigma * spread
            text = f"value <= max(MC sets) + {config.comb_sigma:g} x std(MC sets)"
        else:
            threshold = _ratio_threshold(mc_values, config.single_factor)
            text = f"value <= {config.single_factor:g} x max(MC sets)"
        results[name] = _make_result(name, mc_values, threshold, text)
        for label in labels:
            _judge(results[name], label, one_set_metrics(summaries[label])[name])

    notes = []
    say("independence")
    _independence(results, mc_sets, candidates, second_draws, factor, notes)
    c2st = {}
    if run_c2st:
        _c2st(results, c2st, reference, calibration, candidates, sigma_w, config, say)
    else:
        notes.append("c2st_accuracy: skipped (run_c2st=False).")
    if training is not None:
        say("memorization")
        trained = [c for c in candidates
                   if memorization_labels is None or c.label in memorization_labels]
        _memorization(results, reference, trained, training, sigma_w, config)
    else:
        notes.append("memorization: skipped, the training chunks of the generator are unknown.")

    ordered = [results[name] for name in METRICS if name in results]
    return PanelResult(
        metrics=ordered, summaries=summaries, sigma_w=sigma_w, config=config, c2st=c2st,
        notes=notes, sample_rate_hz=reference.sample_rate_hz,
    )


def _independence(results, mc_sets, candidates, second_draws, factor, notes):
    ranks = [metrics.sample_ranks(chunk_set.chunks) for chunk_set in mc_sets]
    mc_values = []
    for i in range(len(mc_sets)):
        for j in range(i + 1, len(mc_sets)):
            n = min(ranks[i].shape[0], ranks[j].shape[0])
            mc_values.append(abs(metrics.rank_correlation(ranks[i][:n], ranks[j][:n])))
    result = _make_result(
        "independence", mc_values, _ratio_threshold(mc_values, factor),
        f"value <= {factor:g} x max(|r| between all pairs of MC sets)",
    )
    for candidate in candidates:
        second = second_draws.get(candidate.label)
        if second is None:
            notes.append(f"independence: no second draw for {candidate.label!r}.")
            continue
        if second.chunks.shape != candidate.chunks.shape:
            raise ValueError(
                f"The second draw of {candidate.label!r} has shape {second.chunks.shape}; "
                f"expected {candidate.chunks.shape}."
            )
        value = abs(metrics.paired_correlation(candidate.chunks, second.chunks))
        _judge(result, candidate.label, value)
    results["independence"] = result


def _groups(chunk_set):
    return chunk_set.stream_id if np.unique(chunk_set.stream_id).size >= 2 else None


def _c2st(results, c2st, reference, calibration, candidates, sigma_w, config, say):
    from .classifier import classifier_two_sample_test

    def run(other, seed):
        say(f"C2ST {reference.label} vs {other.label}")
        # A set from a single stream is split by chunk: its neighbours share tails, so
        # the test is then slightly optimistic for MC.
        outcome = classifier_two_sample_test(
            reference.chunks, other.chunks, sigma_w, groups_a=_groups(reference),
            groups_b=_groups(other), seed=seed, n_steps=config.c2st_steps,
        )
        c2st[other.label] = outcome.to_dict()
        return outcome

    mc_outcomes = [
        run(other, config.seed + index)
        for index, other in enumerate(calibration[: config.n_c2st_calibration])
    ]
    n_test = min(outcome.n_test for outcome in mc_outcomes)
    margin = config.c2st_sigma * np.sqrt(0.25 / n_test)
    mc_values = [outcome.accuracy for outcome in mc_outcomes]
    result = _make_result(
        "c2st_accuracy", mc_values, _nanmax(mc_values) + margin,
        f"accuracy <= max(MC-vs-MC) + {config.c2st_sigma:g} x sqrt(0.25 / n_test)",
    )
    result.mc_details = [
        dict(outcome.to_dict(), label=other.label)
        for outcome, other in zip(mc_outcomes, calibration)
    ]
    for index, candidate in enumerate(candidates):
        outcome = run(candidate, config.seed + 1000 + index)
        _judge(result, candidate.label, outcome.accuracy, outcome.to_dict())
    results["c2st_accuracy"] = result


def _memorization(results, reference, candidates, training, sigma_w, config):
    def scaled(chunk_set):
        return np.arcsinh(chunk_set.chunks / sigma_w)

    train = scaled(training)
    held_out = metrics.copy_ratios(scaled(reference), train)
    quantile = config.memorization_quantile

    # MC values: the held-out set is split by stream into halves. The threshold
    # comes from one half and the fraction is measured on the other, both ways round.
    streams = np.unique(reference.stream_id)
    first = np.isin(reference.stream_id, streams[: max(1, streams.size // 2)])
    if first.all():
        first = np.arange(reference.n_chunks) < reference.n_chunks // 2
    mc_values = [
        metrics.memorization_fraction(held_out[~first], held_out[first], quantile)[0],
        metrics.memorization_fraction(held_out[first], held_out[~first], quantile)[0],
    ]
    n_generated = min(candidate.n_chunks for candidate in candidates) if candidates else 1
    margin = config.memorization_sigma * np.sqrt(quantile * (1 - quantile) / n_generated)
    result = _make_result(
        "memorization", mc_values, _nanmax(mc_values) + margin,
        f"fraction <= max(MC half vs half) + {config.memorization_sigma:g} x "
        f"sqrt(q (1 - q) / n), q = {quantile:g}",
    )
    for candidate in candidates:
        ratios = metrics.copy_ratios(scaled(candidate), train)
        fraction, threshold = metrics.memorization_fraction(ratios, held_out, quantile)
        _judge(result, candidate.label, fraction, {
            "threshold_ratio": threshold,
            "median_ratio": float(np.median(ratios)),
            "held_out_median_ratio": float(np.median(held_out)),
        })
    results["memorization"] = result


@dataclass
class DetectorGroups:
    """Chunks of several detectors of one wafer, recorded over the same time.

    Attributes:
        label (str): Name shown in reports.
        chunks (ndarray): (n_chunks, n_detectors, chunk_length) float64, W.
    """

    label: str
    chunks: np.ndarray

    def __post_init__(self):
        self.chunks = np.asarray(self.chunks, dtype=np.float64)
        if self.chunks.ndim != 3 or self.chunks.shape[1] < 2 or 0 in self.chunks.shape:
            raise ValueError(
                f"DetectorGroups {self.label!r}: chunks must be (n_chunks, n_detectors, "
                f"chunk_length) with at least 2 detectors. Got shape {self.chunks.shape}."
            )

    @property
    def n_detectors(self):
        return int(self.chunks.shape[1])


@dataclass
class GroupResult:
    """Output of :func:`evaluate_groups`.

    Attributes:
        metrics (list): :class:`MetricResult` per quantity and stream mode, named
            ``correlation_matrix[_w]_<mode>``. Their values are keyed by bundle label.
        matrices (dict): Set label -> {"scaled": (n_det, n_det) float64, "w": (n_det,
            n_det) float64} correlation matrices of asinh(x / sigma) and of x in W.
        reference_label (str): Label of the held-out MC groups.
        calibration_labels (list): Labels of the calibration MC groups.
        candidate_sets (dict): Stream mode -> {bundle label: set label}.
        sigma_w (float): Noise scale of the reference groups, W.
    """

    metrics: list
    matrices: dict
    reference_label: str
    calibration_labels: list
    candidate_sets: dict
    sigma_w: float


def _group_matrices(groups, sigma_w):
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "scaled": metrics.detector_correlation_matrix(np.arcsinh(groups.chunks / sigma_w)),
            "w": metrics.detector_correlation_matrix(groups.chunks),
        }


def _check_groups(reference, sets):
    for groups in sets:
        if groups.chunks.shape[1:] != reference.chunks.shape[1:]:
            raise ValueError(
                f"Detector groups {groups.label!r} have (n_detectors, chunk_length) = "
                f"{groups.chunks.shape[1:]}; the reference has {reference.chunks.shape[1:]}. "
                "Compare groups of one size and chunk length."
            )


def evaluate_groups(reference, calibration, candidates, config=None):
    """Compare detector correlation matrices of generated and MC detector groups.

    The MC-vs-MC values are the distances between every pair of MC group sets
    (reference and calibration, all of one size), and the threshold follows the
    ``ratio`` rule with ``config.ratio_factor``, as for the two-set metrics of
    :func:`evaluate_panel`. The matrix of asinh(x / sigma) is judged. The matrix of
    x in W is reported only, because a single large hit on one detector dominates it.

    Args:
        reference (DetectorGroups): Held-out MC groups.
        calibration (list): At least 2 :class:`DetectorGroups` of independent MC of the
            reference size.
        candidates (dict): Stream mode (a ``GROUP_STREAM_MODES`` entry) -> {bundle label:
            :class:`DetectorGroups` generated in that mode}.
        config (PanelConfig): Settings; None takes the defaults.

    Returns:
        (GroupResult): One metric row per quantity and mode, and every matrix.
    """
    config = config or PanelConfig()
    if len(calibration) < 2:
        raise ValueError(
            f"The detector-group comparison needs at least 2 calibration MC group sets. "
            f"Got {len(calibration)}."
        )
    unknown = sorted(set(candidates) - set(GROUP_STREAM_MODES))
    if unknown:
        raise ValueError(
            f"Invalid stream modes {unknown}. Expected keys among {list(GROUP_STREAM_MODES)}."
        )
    generated = [groups for mode in candidates for groups in candidates[mode].values()]
    all_sets = [reference] + list(calibration) + generated
    set_labels = [groups.label for groups in all_sets]
    if len(set(set_labels)) != len(set_labels):
        raise ValueError(f"Detector-group set labels must be unique. Got {set_labels}.")
    _check_groups(reference, all_sets[1:])

    sigma_w = reference_scale(reference.chunks.reshape(-1, reference.chunks.shape[-1]))
    matrices = {groups.label: _group_matrices(groups, sigma_w) for groups in all_sets}
    mc_labels = [reference.label] + [groups.label for groups in calibration]
    pairs = [(a, b) for i, a in enumerate(mc_labels) for b in mc_labels[i + 1:]]
    factor = config.ratio_factor

    rows = []
    for quantity in GROUP_QUANTITIES:
        mc_values = [
            metrics.off_diagonal_distance(matrices[a][quantity], matrices[b][quantity])
            for a, b in pairs
        ]
        suffix = "" if quantity == "scaled" else "_w"
        for mode in GROUP_STREAM_MODES:
            if mode not in candidates:
                continue
            name = f"correlation_matrix{suffix}_{mode}"
            text = f"value <= {factor:g} x max(all pairs of MC group sets)"
            if GROUP_METRICS[name][3] == "info":
                text = f"reported only ({text})"
            result = _make_result(name, mc_values, _ratio_threshold(mc_values, factor), text)
            for bundle_label, groups in candidates[mode].items():
                matrix = matrices[groups.label][quantity]
                value = metrics.off_diagonal_distance(matrices[reference.label][quantity], matrix)
                off = ~np.eye(matrix.shape[0], dtype=bool)
                _judge(result, bundle_label, value, {"mean_correlation": float(np.mean(matrix[off]))})
            rows.append(result)

    return GroupResult(
        metrics=rows,
        matrices=matrices,
        reference_label=reference.label,
        calibration_labels=[groups.label for groups in calibration],
        candidate_sets={
            mode: {label: groups.label for label, groups in candidates[mode].items()}
            for mode in candidates
        },
        sigma_w=sigma_w,
    )
