"""Stability and mode-collapse diagnostics of a generator, computed during training.

A diagnosis compares a set of real chunks (usually held-out MC) with a set of
generated chunks on two groups of statistics:

* Pairwise distances between chunk features. Each chunk is described by
  :func:`toast_crab.validation.metrics.chunk_features` (quantiles of
  ``asinh(x / scale_w)`` and log band powers), standardized with the median and
  robust sigma of the real set. Features, not raw samples, are used because they do
  not depend on where in the chunk a glitch falls. In the 1060-dimensional sample
  space, Euclidean distances between chunks are dominated by the white continuum
  and barely change when a generator repeats one glitch pattern. Distances are
  taken on a fixed number of random pairs: generated-generated, real-real and
  real-generated. Density and coverage (Naeem et al. 2020, ICML) are computed on
  the same features.
* Glitch statistics from :func:`toast_crab.validation.metrics.find_events`, run on
  both sets with one absolute threshold of 5 robust sigma of the real samples. They
  are the events per chunk (mean and Fano factor), the quantiles and spread of the
  event amplitudes, and the robust sigma of the samples.

Every statistic is compared with its spread between two random halves of the real
set (the *reference*, :func:`make_reference`). The halves are smaller than the
full sets, so this spread is larger than the sampling spread of a real-vs-real
comparison at full size. Thresholds taken from it are therefore conservative:
a second independent real set passes, and a collapsed generator fails by a wide
margin.

NOTE: the halves are drawn by chunk, not by MC run, because the API takes no run
labels. Chunks of one run share decaying tails, so the split scatter may be smaller
than the scatter between sets of independent runs. On the toast_crab reference MC
(``data/mc_heldout.h5`` against ``data/mc_lc_30k.h5`` or against its own other
runs, 256 to 2000 chunks, 20 draws) the score stayed between 0.3 and 0.9 and no
draw was flagged, so the effect is small there.

Public API (used by every training family):

* :func:`make_reference` once per training run, on the fixed validation chunks;
* :func:`diagnose` at every evaluation, returning a dict;
* :func:`checkpoint_score` (lower is better) and :func:`is_collapsed` on that dict;
* :func:`summary_row` for ``eval.csv`` and TensorBoard, and
  :func:`plot_diagnostics` for the PNG.
"""

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from ..validation.metrics import (
    chunk_features,
    density_coverage,
    find_events,
    rate_statistics,
    robust_sigma,
    standardize_features,
)

__all__ = [
    "COLLAPSE_CHECKS",
    "MIN_CHUNKS",
    "SCORE_STATISTICS",
    "DiagnosticReference",
    "checkpoint_score",
    "diagnose",
    "diagnosis_to_json",
    "is_collapsed",
    "make_reference",
    "plot_diagnostics",
    "summary_row",
]

# Minimum chunks per set: each half of the real set needs at least 4 chunks, so
# that density and coverage can use k = 3 neighbours.
MIN_CHUNKS = 8

# Statistics of the checkpoint score. Each enters as |z|, its distance from the
# mean over real-vs-real splits in units of their standard deviation.
SCORE_STATISTICS = (
    "log_gen_gen_ratio",
    "log_real_gen_ratio",
    "coverage",
    "log_density",
    "log_event_rate_ratio",
    "log_fano_ratio",
    "log_amplitude_q50_ratio",
    "log_amplitude_q90_ratio",
    "log_amplitude_spread_ratio",
    "log_robust_sigma_ratio",
)

# Statistics of diversity that fall under mode collapse; each is checked against a
# lower bound. Coverage is left out: it also falls for a diverse generator with the
# wrong amplitude scale, which is a fidelity failure and shows in the score.
COLLAPSE_CHECKS = (
    "log_gen_gen_ratio",
    "log_fano_ratio",
    "log_amplitude_spread_ratio",
)

# Lower bound of a collapse check: split mean minus this many split standard
# deviations. With 24 splits the standard deviation is known to about 15 %, so 5
# sigma stays above 4 true sigma, which a real set passes with probability
# 1 - 3e-5 per check if the statistic is near Gaussian.
_COLLAPSE_Z = 5.0

# Smallest standard deviation used for a statistic, so a statistic that happens to
# be constant over the splits does not give infinite z. In log10 units it is a
# 2 % change; for coverage it is 0.01 of the real balls.
_MIN_SCATTER = 0.01

# |z| of one statistic is capped here in the score, and a statistic that cannot be
# computed (no events, non-finite output) counts as this cap.
_Z_CAP = 100.0

# Floors of ratios in log10 space: a set without events or with zero spread gets a
# large negative log ratio instead of -inf.
_RATE_FLOOR = 1e-3
_FANO_FLOOR = 1e-3
_AMPLITUDE_FLOOR = 1e-3
_DISTANCE_FLOOR = 1e-6

# Event threshold in robust sigma of the real samples.
_THRESHOLD_SIGMA = 5.0

# Largest neighbour rank of the density and coverage balls.
_MAX_NEIGHBOURS = 5

# Chunk features do not depend on the sample rate once standardized: the band edges
# scale with it and the PSD scale is a constant offset in log space removed by the
# centring. A fixed value keeps the API free of it.
_FEATURE_SAMPLE_RATE_HZ = 1.0


@dataclass(frozen=True)
class DiagnosticReference:
    """The real set's features and the real-vs-real scatter of every statistic.

    Build it with :func:`make_reference`; pass it to :func:`diagnose` to avoid
    recomputing it at every evaluation.

    Attributes:
        fingerprint (str): SHA-1 of the real chunks it was built from.
        n_chunks (int): Chunks of the real set.
        chunk_length (int): Samples per chunk.
        scale_w (float): Robust sigma of all real samples, W. Scale of the asinh
            map of the features and noise level of the event threshold.
        seed (int): Seed of the splits and of the pair draws.
        n_pairs (int): Random pairs per distance distribution.
        n_splits (int): Random real-vs-real splits.
        neighbours (int): k of density and coverage.
        features (ndarray): (n_chunks, 13) float64, unstandardized real features.
        split_mean (dict): Statistic name -> mean over the splits.
        split_std (dict): Statistic name -> standard deviation over the splits,
            floored at 0.01.
        split_values (dict): Statistic name -> (n_splits,) float64 values.
    """

    fingerprint: str
    n_chunks: int
    chunk_length: int
    scale_w: float
    seed: int
    n_pairs: int
    n_splits: int
    neighbours: int
    features: np.ndarray
    split_mean: dict
    split_std: dict
    split_values: dict

    def lower_bound(self, name):
        """Return the collapse threshold of a statistic: mean - 5 std over splits."""
        return self.split_mean[name] - _COLLAPSE_Z * self.split_std[name]


def make_reference(real_w, seed=0, n_pairs=2000, n_splits=24):
    """Measure the real-vs-real scatter of every diagnostic statistic.

    The real set is split ``n_splits`` times into two random halves; each split is
    diagnosed as if one half were real and the other generated. The mean and
    standard deviation of each statistic over the splits define its z-score and
    its collapse threshold.

    Args:
        real_w (array): (n_chunks, chunk_length) float64, W; n_chunks >= 8.
        seed (int): Seed of the splits and the pair draws (``SeedSequence``).
        n_pairs (int): Random pairs per distance distribution, >= 10.
        n_splits (int): Real-vs-real splits, >= 4.

    Returns:
        (DiagnosticReference): Features and split statistics of the real set.

    Raises:
        TypeError: If ``real_w`` is not numeric or a count or ``seed`` is not an int.
        ValueError: If the shape or the values of ``real_w`` are invalid, or a count
            or ``seed`` is below its minimum.
    """
    real_w = _check_chunks(real_w, "real_w")
    seed = _check_seed(seed)
    n_pairs = _check_count(n_pairs, "n_pairs", 10)
    n_splits = _check_count(n_splits, "n_splits", 4)
    scale_w = robust_sigma(real_w)
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(
            f"The robust sigma of real_w is {scale_w!r} W: more than half of its samples "
            "are equal, so there is no continuum to scale features and event thresholds. "
            "Pass real chunks with detector or wafer noise."
        )

    n_chunks = real_w.shape[0]
    half = n_chunks // 2
    neighbours = min(_MAX_NEIGHBOURS, half - 1)
    features = chunk_features(real_w, scale_w, _FEATURE_SAMPLE_RATE_HZ)
    standardized = standardize_features(features, features)
    events = _event_summary(find_events(real_w, sigma_w=scale_w, threshold_sigma=_THRESHOLD_SIGMA))

    split_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    values = {name: [] for name in SCORE_STATISTICS}
    for index in range(int(n_splits)):
        order = split_rng.permutation(n_chunks)
        part_a, part_b = order[:half], order[half : 2 * half]
        pair_rng = np.random.default_rng(np.random.SeedSequence([seed, 2, index]))
        statistics = _statistics(
            standardized[part_a], standardized[part_b],
            _subset_events(events, part_a), _subset_events(events, part_b),
            robust_sigma(real_w[part_a]), robust_sigma(real_w[part_b]),
            n_pairs, neighbours, pair_rng,
        )[0]
        for name in SCORE_STATISTICS:
            values[name].append(statistics[name])

    split_values = {name: np.asarray(values[name], dtype=np.float64) for name in SCORE_STATISTICS}
    split_mean = {name: float(np.nanmean(v)) for name, v in split_values.items()}
    split_std = {
        name: max(float(np.nanstd(v, ddof=1)), _MIN_SCATTER) for name, v in split_values.items()
    }
    return DiagnosticReference(
        fingerprint=_fingerprint(real_w),
        n_chunks=int(n_chunks),
        chunk_length=int(real_w.shape[1]),
        scale_w=float(scale_w),
        seed=seed,
        n_pairs=int(n_pairs),
        n_splits=int(n_splits),
        neighbours=int(neighbours),
        features=features,
        split_mean=split_mean,
        split_std=split_std,
        split_values=split_values,
    )


def diagnose(real_w, generated_w, reference=None, seed=0):
    """Compare generated chunks with real chunks for fidelity and mode collapse.

    Args:
        real_w (array): (n_real, chunk_length) float64, W; n_real >= 8. Usually
            fixed held-out MC chunks.
        generated_w (array): (n_gen, chunk_length) float64, W; n_gen >= 8. Use
            n_gen = n_real: the split reference compares halves of equal size,
            and density and coverage depend on the size ratio. Non-finite values
            are accepted and give a failed diagnosis (score at its cap, collapsed).
        reference (DiagnosticReference): From :func:`make_reference` on the same
            ``real_w``; None builds it here with ``seed``.
        seed (int): Seed of the pair draws (and of the reference if built here).

    Returns:
        (dict): The diagnosis:

        * ``statistics``: name -> float for every name in ``SCORE_STATISTICS``,
          plus ``gen_gen_median``, ``real_real_median``, ``real_gen_median``
          (standardized feature units), ``event_rate_real``/``_generated``
          (events per chunk), ``fano_real``/``_generated``, ``amplitude_q50_real``
          etc. (units of ``scale_w``).
        * ``z``: name -> z-score against the real-vs-real splits.
        * ``checks``: name -> ``{"value", "lower_bound", "collapsed"}`` for the
          names in ``COLLAPSE_CHECKS``.
        * ``distances``: ``real_real``, ``gen_gen``, ``real_gen``, each
          (n_pairs,) float64 pair distances in standardized feature units.
        * ``non_finite_fraction``: fraction of generated samples that are NaN or
          infinite.
        * ``score`` (float) and ``collapsed`` (bool), as returned by
          :func:`checkpoint_score` and :func:`is_collapsed`.
        * ``n_real``, ``n_generated``, ``seed``.

    Raises:
        TypeError: If an input is not numeric or a reference of the wrong type.
        ValueError: If shapes differ, a set has fewer than 8 chunks, ``real_w``
            is not finite or ``reference`` was built from other chunks.
    """
    real_w = _check_chunks(real_w, "real_w")
    generated_w = _check_chunks(generated_w, "generated_w", allow_non_finite=True)
    seed = _check_seed(seed)
    if generated_w.shape[1] != real_w.shape[1]:
        raise ValueError(
            f"generated_w has chunks of {generated_w.shape[1]} samples but real_w has "
            f"{real_w.shape[1]}; compare chunks of one length."
        )
    if reference is None:
        reference = make_reference(real_w, seed=seed)
    elif not isinstance(reference, DiagnosticReference):
        raise TypeError(
            f"reference must be a DiagnosticReference from make_reference. Got "
            f"{type(reference).__name__}."
        )
    elif reference.fingerprint != _fingerprint(real_w):
        raise ValueError(
            f"reference was built from another real set ({reference.n_chunks} chunks) than "
            f"real_w ({real_w.shape[0]} chunks). Build it with make_reference(real_w)."
        )

    non_finite = float(np.mean(~np.isfinite(generated_w)))
    if non_finite > 0:
        statistics = {name: float("nan") for name in SCORE_STATISTICS}
        distances = {key: np.zeros(0) for key in ("real_real", "gen_gen", "real_gen")}
    else:
        statistics, distances = _diagnose_finite(real_w, generated_w, reference, seed)

    z = {
        name: (statistics[name] - reference.split_mean[name]) / reference.split_std[name]
        for name in SCORE_STATISTICS
    }
    checks = {}
    for name in COLLAPSE_CHECKS:
        bound = reference.lower_bound(name)
        value = statistics[name]
        checks[name] = {
            "value": value,
            "lower_bound": float(bound),
            "collapsed": bool(not np.isfinite(value) or value < bound),
        }
    diag = {
        "statistics": statistics,
        "z": {name: float(value) for name, value in z.items()},
        "checks": checks,
        "distances": distances,
        "non_finite_fraction": non_finite,
        "n_real": int(real_w.shape[0]),
        "n_generated": int(generated_w.shape[0]),
        "seed": seed,
    }
    diag["score"] = checkpoint_score(diag)
    diag["collapsed"] = is_collapsed(diag)
    return diag


def checkpoint_score(diag):
    """Return the checkpoint score of a diagnosis; lower is better.

    The score is the mean over ``SCORE_STATISTICS`` of ``min(|z|, 100)``, where z
    is the statistic's distance from its real-vs-real split mean in split standard
    deviations. A statistic that is NaN counts as 100. For a second real set of the
    same size the expected score is below 0.8, the mean |z| of a standard normal,
    because the split scatter is that of half-size sets. A collapsed generator
    scores tens to 100. The split scatter shrinks as the real set grows, so the
    same generator scores higher against more real chunks: compare scores only
    at one number of real chunks.

    Args:
        diag (dict): Output of :func:`diagnose`.

    Returns:
        (float): The score, in [0, 100].
    """
    terms = []
    for name in SCORE_STATISTICS:
        value = abs(float(diag["z"][name]))
        terms.append(min(value, _Z_CAP) if math.isfinite(value) else _Z_CAP)
    return float(np.mean(terms))


def is_collapsed(diag):
    """Return True when any collapse check of a diagnosis fails.

    A check fails when its statistic is below the real-vs-real split mean minus 5
    split standard deviations, or cannot be computed. The checks, all generated
    over real in log10: the median generated-generated over the median real-real
    distance, the Fano factor of events per chunk, and the spread of event
    amplitudes, ``q90 / q10 - 1``. A generator without events fails the last two.
    Non-finite generated samples also fail.

    Args:
        diag (dict): Output of :func:`diagnose`.

    Returns:
        (bool): True if the generated set looks collapsed or broken.
    """
    if diag["non_finite_fraction"] > 0:
        return True
    return any(check["collapsed"] for check in diag["checks"].values())


def summary_row(diag, prefix=""):
    """Flatten a diagnosis into scalar columns for ``eval.csv`` and TensorBoard.

    Args:
        diag (dict): Output of :func:`diagnose`.
        prefix (str): Prepended to every column name, e.g. ``"ema_"``.

    Returns:
        (dict): Column name -> float: ``score``, ``collapsed`` (0 or 1),
        ``gen_gen_ratio`` and ``real_gen_ratio`` (median distance over the
        real-real median), ``coverage``, ``density``, ``event_rate_ratio``,
        ``fano_generated``, ``fano_real`` and ``amplitude_spread_ratio``.
    """
    statistics = diag["statistics"]
    columns = {
        "score": diag["score"],
        "collapsed": float(diag["collapsed"]),
        "gen_gen_ratio": 10.0 ** statistics["log_gen_gen_ratio"],
        "real_gen_ratio": 10.0 ** statistics["log_real_gen_ratio"],
        "coverage": statistics["coverage"],
        "density": 10.0 ** statistics["log_density"],
        "event_rate_ratio": 10.0 ** statistics["log_event_rate_ratio"],
        "fano_generated": statistics.get("fano_generated", float("nan")),
        "fano_real": statistics.get("fano_real", float("nan")),
        "amplitude_spread_ratio": 10.0 ** statistics["log_amplitude_spread_ratio"],
    }
    return {f"{prefix}{key}": float(value) for key, value in columns.items()}


def diagnosis_to_json(diag):
    """Return a diagnosis without the distance arrays, as JSON-ready plain types.

    NaN values become None.

    Args:
        diag (dict): Output of :func:`diagnose`.

    Returns:
        (dict): ``score``, ``collapsed``, ``statistics``, ``z``, ``checks``,
        ``non_finite_fraction``, ``n_real``, ``n_generated``, ``seed``.
    """

    def plain(value):
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        value = float(value)
        return value if math.isfinite(value) else None

    return {key: plain(value) for key, value in diag.items() if key != "distances"}


def plot_diagnostics(diag, path, history=None, title=""):
    """Plot the distance distributions of a diagnosis and the score over steps.

    Args:
        diag (dict): Output of :func:`diagnose` (usually the exported generator
            on the validation chunks).
        path (str): PNG file to write; its folder is created.
        history (dict): Optional label -> (steps, scores), each (n_eval,) arrays,
            e.g. ``{"raw": (...), "ema": (...)}``; drawn on a log y axis.
        title (str): Prefix of the plot title.

    Returns:
        (str): ``path``.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (dist_axis, score_axis) = plt.subplots(1, 2, figsize=(12, 4.2))
    distances = diag["distances"]
    finite = [d[d > 0] for d in distances.values() if d.size]
    if finite and np.concatenate(finite).size:
        pooled = np.concatenate(finite)
        bins = np.geomspace(pooled.min(), pooled.max() * 1.001, 50)
        labels = {
            "real_real": "real - real",
            "gen_gen": "generated - generated",
            "real_gen": "real - generated",
        }
        for key, label in labels.items():
            values = distances[key]
            median = float(np.median(values)) if values.size else float("nan")
            dist_axis.hist(
                np.maximum(values, bins[0]), bins=bins, histtype="step", lw=1.5,
                label=f"{label} (median {median:.3g})",
            )
        dist_axis.set_xscale("log")
        dist_axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    else:
        dist_axis.text(0.5, 0.5, "no finite generated chunks", ha="center", transform=dist_axis.transAxes)
    dist_axis.set_xlabel("pair distance (standardized chunk features)")
    dist_axis.set_ylabel("pairs")
    dist_axis.legend(fontsize="small")
    verdict = "collapsed" if diag["collapsed"] else "not collapsed"
    dist_axis.set_title(f"score {diag['score']:.3g}, {verdict}", fontsize="medium")

    if history:
        for label, (steps, scores) in history.items():
            score_axis.plot(steps, scores, "o-", label=label)
        score_axis.set_yscale("log")
    score_axis.axhline(0.8, color="0.5", lw=0.8, ls="--", label="0.8: mean |z| of N(0, 1)")
    score_axis.legend(fontsize="small")
    score_axis.set_xlabel("adversarial step")
    score_axis.set_ylabel("checkpoint score (lower is better)")
    for axis in (dist_axis, score_axis):
        axis.grid(alpha=0.3)

    fig.suptitle(f"{title}: generator diagnostics vs validation MC".strip(": "))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------
# Internals


def _check_chunks(chunks_w, name, allow_non_finite=False):
    try:
        array = np.asarray(chunks_w, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a numeric array (n_chunks, chunk_length) in W. Got "
            f"{type(chunks_w).__name__} ({err})."
        ) from err
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(
            f"{name} must be 2-D (n_chunks, chunk_length) with chunk_length >= 2. Got "
            f"shape {array.shape}."
        )
    if array.shape[0] < MIN_CHUNKS:
        raise ValueError(
            f"{name} has {array.shape[0]} chunks; the diagnostics need at least "
            f"{MIN_CHUNKS} (two halves of 4). Evaluate on more chunks."
        )
    if not allow_non_finite and not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; check the MC chunks.")
    return array


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int. Got {type(seed).__name__} {seed!r}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 for a SeedSequence. Got {seed}.")
    return int(seed)


def _check_count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int. Got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}. Got {value}.")
    return int(value)


def _fingerprint(chunks_w):
    return hashlib.sha1(np.ascontiguousarray(chunks_w, dtype=np.float64).tobytes()).hexdigest()


def _event_summary(events):
    """Keep the per-chunk counts and, per chunk, the list of event amplitudes."""
    return {"counts": events.counts, "chunk": events.chunk, "amplitude_w": events.amplitude_w}


def _subset_events(events, rows):
    selected = np.isin(events["chunk"], rows)
    return {
        "counts": events["counts"][rows],
        "chunk": events["chunk"][selected],
        "amplitude_w": events["amplitude_w"][selected],
    }


def _pair_distances(a, b, n_pairs, rng, same):
    """Distances of ``n_pairs`` random pairs (row of a, row of b); distinct rows if same."""
    first = rng.integers(0, a.shape[0], n_pairs)
    if same:
        # A shift in [1, n) maps each row to a different one, uniformly.
        second = (first + rng.integers(1, a.shape[0], n_pairs)) % a.shape[0]
    else:
        second = rng.integers(0, b.shape[0], n_pairs)
    return np.sqrt(np.sum((a[first] - b[second]) ** 2, axis=1))


def _log_ratio(value, reference, floor):
    value = value if np.isfinite(value) else floor
    reference = reference if np.isfinite(reference) else floor
    return float(np.log10(max(value, floor) / max(reference, floor)))


def _amplitude_figures(amplitude_w, scale_w):
    """Return q10, q50 and q90 of event amplitudes in units of scale_w (NaN if none)."""
    if amplitude_w.size == 0:
        return float("nan"), float("nan"), float("nan")
    q10, q50, q90 = np.quantile(amplitude_w / scale_w, (0.1, 0.5, 0.9))
    return float(q10), float(q50), float(q90)


def _statistics(real_f, gen_f, real_events, gen_events, real_sigma_w, gen_sigma_w,
                n_pairs, neighbours, rng, scale_w=1.0):
    """Compute every statistic of one real/generated pair of sets.

    ``real_f`` and ``gen_f`` are standardized features, (n, 13) float64. Amplitude
    figures are ratios, so ``scale_w`` only sets the unit of the reported values.
    """
    distances = {
        "real_real": _pair_distances(real_f, real_f, n_pairs, rng, same=True),
        "gen_gen": _pair_distances(gen_f, gen_f, n_pairs, rng, same=True),
        "real_gen": _pair_distances(real_f, gen_f, n_pairs, rng, same=False),
    }
    medians = {key: float(np.median(value)) for key, value in distances.items()}
    density, coverage = density_coverage(real_f, gen_f, k=neighbours)
    rate_real, fano_real = rate_statistics(real_events["counts"])
    rate_gen, fano_gen = rate_statistics(gen_events["counts"])
    real_q = _amplitude_figures(real_events["amplitude_w"], scale_w)
    gen_q = _amplitude_figures(gen_events["amplitude_w"], scale_w)

    statistics = {
        "log_gen_gen_ratio": _log_ratio(
            medians["gen_gen"], medians["real_real"], _DISTANCE_FLOOR
        ),
        "log_real_gen_ratio": _log_ratio(
            medians["real_gen"], medians["real_real"], _DISTANCE_FLOOR
        ),
        "coverage": coverage,
        "log_density": _log_ratio(density, 1.0, _RATE_FLOOR),
        "log_event_rate_ratio": _log_ratio(rate_gen, rate_real, _RATE_FLOOR),
        "log_fano_ratio": _log_ratio(fano_gen, fano_real, _FANO_FLOOR),
        "log_amplitude_q50_ratio": _log_ratio(gen_q[1], real_q[1], _AMPLITUDE_FLOOR),
        "log_amplitude_q90_ratio": _log_ratio(gen_q[2], real_q[2], _AMPLITUDE_FLOOR),
        "log_amplitude_spread_ratio": _log_ratio(
            gen_q[2] / gen_q[0] - 1.0, real_q[2] / real_q[0] - 1.0, _AMPLITUDE_FLOOR
        ),
        "log_robust_sigma_ratio": _log_ratio(gen_sigma_w, real_sigma_w, _DISTANCE_FLOOR * real_sigma_w),
        "gen_gen_median": medians["gen_gen"],
        "real_real_median": medians["real_real"],
        "real_gen_median": medians["real_gen"],
        "density": density,
        "event_rate_real": rate_real,
        "event_rate_generated": rate_gen,
        "fano_real": fano_real,
        "fano_generated": fano_gen,
        "amplitude_q50_real": real_q[1],
        "amplitude_q50_generated": gen_q[1],
        "amplitude_q90_real": real_q[2],
        "amplitude_q90_generated": gen_q[2],
    }
    return statistics, distances


def _diagnose_finite(real_w, generated_w, reference, seed):
    scale_w = reference.scale_w
    gen_features = chunk_features(generated_w, scale_w, _FEATURE_SAMPLE_RATE_HZ)
    real_f = standardize_features(reference.features, reference.features)
    gen_f = standardize_features(gen_features, reference.features)
    real_events = _event_summary(find_events(real_w, sigma_w=scale_w, threshold_sigma=_THRESHOLD_SIGMA))
    gen_events = _event_summary(
        find_events(generated_w, sigma_w=scale_w, threshold_sigma=_THRESHOLD_SIGMA)
    )
    pair_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return _statistics(
        real_f, gen_f, real_events, gen_events, robust_sigma(real_w), robust_sigma(generated_w),
        reference.n_pairs, reference.neighbours, pair_rng, scale_w=scale_w,
    )
