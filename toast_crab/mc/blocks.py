"""Detector response to lists of hits, for a group of detectors on one wafer.

``GroupResponse`` turns hits into the exponential pulses of the linear TES model (see
``toast_crab.mc.response``). ``BlockRenderer`` renders one time interval from scratch: zero
filter states at its start, a discarded lead-in of ``pre_roll_samples``, then the kept
samples. The output of an interval depends only on the hits inside it, never on what was
rendered before. So every MPI process of ``SimCosmicRayMC`` can compute the time blocks of
its samples and get the same bits as any other process grid.
"""

import math

import numpy as np

from toast_crab.mc.readout import Decimator, ExponentialPulseSynthesizer, pre_roll_s
from toast_crab.mc.response import (
    WaferCoupling,
    island_peak_power_w_per_kev,
    wafer_step_power_w_per_kev,
)

__all__ = ["GroupResponse", "BlockRenderer"]


class GroupResponse:
    """Pulse amplitudes of wafer and island hits for detectors at given wafer positions.

    A wafer hit reaches every detector of the group with the distance weight of
    ``WaferCoupling``; an island hit reaches only its own detector.

    Args:
        config (MCConfig): Detector and wafer parameters.
        positions_m (ndarray): (n_det, 2) float64, detector positions from the wafer centre, m.
    """

    def __init__(self, config, positions_m):
        detector = config.detector
        wafer = config.wafer
        self.coupling = WaferCoupling(positions_m, wafer)
        self.n_detectors = len(self.coupling.positions_m)
        self.tau_s = (detector.tau_eff_s, wafer.tau_wafer_s)
        self.island_w_per_kev = island_peak_power_w_per_kev(detector)
        shape_factor = wafer.tau_wafer_s / (wafer.tau_wafer_s - detector.tau_eff_s)
        self.wafer_w_per_kev = wafer_step_power_w_per_kev(config) * shape_factor

    def pulses(self, wafer_hits, island_hits, island_channel):
        """Return the pulse families of ``ExponentialPulseSynthesizer.render``.

        Args:
            wafer_hits (Hits): Hits on the wafer, times from the interval start.
            island_hits (Hits): Hits on the islands, times from the interval start.
            island_channel (ndarray): (len(island_hits),) int, detector of each island hit.

        Returns:
            tuple: (fast, slow), each (time_s, channel, amplitude_w) of (n,) arrays. The
            tau_eff family contains the island pulses and the negative fast part of the
            wafer response. The tau_wafer family contains the positive slow part.
        """
        n_det = self.n_detectors
        n_wafer = len(wafer_hits)
        weights = self.coupling.weights(wafer_hits.x_m, wafer_hits.y_m)
        wafer_amplitude = (self.wafer_w_per_kev * wafer_hits.deposit_kev * weights).ravel()
        wafer_times = np.tile(wafer_hits.time_s, n_det)
        wafer_channels = np.repeat(np.arange(n_det), n_wafer)
        fast = (
            np.concatenate([island_hits.time_s, wafer_times]),
            np.concatenate([np.asarray(island_channel, dtype=np.int64), wafer_channels]),
            np.concatenate([self.island_w_per_kev * island_hits.deposit_kev, -wafer_amplitude]),
        )
        slow = (wafer_times, wafer_channels, wafer_amplitude)
        return fast, slow


class BlockRenderer:
    """Render time intervals of a detector group independently of each other.

    Args:
        config (MCConfig): MC configuration; ``config.readout`` gives the output rate, the
            internal rate, the anti-alias filter and the sign convention.
        positions_m (ndarray): (n_det, 2) float64, detector positions from the wafer centre, m.

    Attributes:
        pre_roll_samples (int): Output samples to render and discard before the kept ones
            so that pulse tails and the filter reach steady state (``pre_roll_s``).
    """

    def __init__(self, config, positions_m):
        readout = config.readout
        self.config = config
        self.response = GroupResponse(config, positions_m)
        self.factor = readout.decimation_factor
        self.sample_rate_hz = readout.sample_rate_hz
        self.internal_rate_hz = self.factor * readout.sample_rate_hz
        self.pre_roll_samples = int(math.ceil(pre_roll_s(config) * readout.sample_rate_hz))
        self._sign = 1.0 if readout.sign_convention == "optical" else -1.0
        n_det = self.response.n_detectors
        self._synthesizer = ExponentialPulseSynthesizer(n_det, self.response.tau_s, self.internal_rate_hz)
        self._decimator = Decimator(n_det, readout)

    def render(self, n_samples, n_discard, wafer_hits, island_hits, island_channel):
        """Render an interval of ``n_samples`` output samples and drop the first ``n_discard``.

        Hits must start inside the interval, at times in [0, n_samples / sample_rate_hz).

        Args:
            n_samples (int): Output samples in the interval, lead-in included.
            n_discard (int): Leading samples to drop (usually ``pre_roll_samples``).
            wafer_hits (Hits): Wafer hits, times from the interval start.
            island_hits (Hits): Island hits, times from the interval start.
            island_channel (ndarray): (len(island_hits),) int, detector of each island hit.

        Returns:
            ndarray: (n_det, n_samples - n_discard) float64, W (sign per
            ``ReadoutConfig.sign_convention``).
        """
        self._synthesizer.reset()
        self._decimator.reset()
        pulses = self.response.pulses(wafer_hits, island_hits, island_channel)
        internal = self._synthesizer.render(n_samples * self.factor, pulses)
        power_w = self._decimator.process(internal)[:, n_discard:]
        power_w *= self._sign
        return power_w
