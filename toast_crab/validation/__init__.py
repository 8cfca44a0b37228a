"""Validation of generator bundles against the reference cosmic-ray MC.

* :mod:`~toast_crab.validation.metrics`: statistics on chunks (NumPy and SciPy).
* :mod:`~toast_crab.validation.classifier`: the classifier two-sample test (Keras).
* :mod:`~toast_crab.validation.panel`: every metric with thresholds calibrated on
  MC-vs-MC comparisons.
* :mod:`~toast_crab.validation.sources`: held-out and calibration MC sets, and
  generator draws.
* :mod:`~toast_crab.validation.maps`: binned CR maps from SimCosmicRayMC and
  InjectCRAB, map RMS and angular power spectra.
* :mod:`~toast_crab.validation.report`: ``metrics.json``, PNG plots, ``report.md``.
* :mod:`~toast_crab.validation.cli`: the ``crab-validate`` command.

Importing this package loads neither TensorFlow nor TOAST.
"""

from .panel import METRICS, ChunkSet, MetricResult, PanelConfig, PanelResult, evaluate_panel

__all__ = [
    "METRICS",
    "ChunkSet",
    "MetricResult",
    "PanelConfig",
    "PanelResult",
    "evaluate_panel",
]
