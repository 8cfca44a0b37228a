"""Synthesis of exponential pulses on the internal grid, anti-alias filtering and decimation.

The internal grid has bins of width dt = 1 / internal_rate_hz. Each internal sample is the
exact average over its bin of the continuous signal, a sum of one-sided exponentials
a exp(-(t - t_i) / tau). For a pulse starting at t_i inside bin k0, with u the time from t_i to
the end of that bin and r = exp(-dt / tau):

* bin k0 contains (a tau / dt) (1 - exp(-u / tau)),
* bin k0 + n (n >= 1) contains (a tau / dt) exp(-u / tau) (1 - r) r^(n - 1).

The second part is an impulse at k0 + 1 passed through the first-order recursive filter
1 / (1 - r z^-1), run with ``scipy.signal.lfilter``. Bin averages conserve the pulse area
exactly, whatever the internal rate. Filter states carry over between blocks, so a long
timeline can be built block by block with bounded memory.

The readout is modelled as a causal Butterworth low-pass (``scipy.signal.butter``, applied with
``sosfilt``) followed by keeping every q-th internal sample. Output sample m is the filtered
signal of internal bin m q, i.e. at time m / sample_rate_hz.
"""

import numpy as np
from scipy import signal

__all__ = ["ExponentialPulseSynthesizer", "Decimator", "pre_roll_s"]


def pre_roll_s(config):
    """Return the simulated time before t = 0 that is discarded, in s.

    At least 5 times the longest time constant, so tails of earlier hits exist at t = 0, and
    20 / f_cutoff, so the anti-alias filter has settled from its zero initial state.
    """
    cutoff_hz = config.readout.antialias_cutoff_fraction * config.readout.sample_rate_hz
    longest_s = max(config.detector.tau_eff_s, config.wafer.tau_wafer_s)
    return max(5.0 * longest_s, 20.0 / cutoff_hz)


class ExponentialPulseSynthesizer:
    """Bin-averaged sums of exponential pulses for several channels, block by block.

    Args:
        n_channels (int): Number of output channels (detectors).
        tau_s (sequence of float): Decay time of each exponential family, s.
        internal_rate_hz (float): Internal sample rate, Hz.
    """

    def __init__(self, n_channels, tau_s, internal_rate_hz):
        self.n_channels = int(n_channels)
        self.tau_s = np.asarray(tau_s, dtype=np.float64)
        self.bin_s = 1.0 / float(internal_rate_hz)
        self.ratio = np.exp(-self.bin_s / self.tau_s)
        self.reset()

    def reset(self):
        """Forget all earlier pulses: the next block starts from a zero signal."""
        self._state = np.zeros((len(self.tau_s), self.n_channels, 1))
        self._carry = np.zeros((len(self.tau_s), self.n_channels))

    def render(self, n_bins, pulses):
        """Render one block of bin-averaged signal.

        Args:
            n_bins (int): Number of internal bins in this block.
            pulses (sequence): One entry per time constant, each a tuple
                ``(time_s, channel, amplitude)`` of (n,) arrays. ``time_s`` (float64, s) is
                the start time relative to the block start, in [0, n_bins dt). ``channel`` is
                the int channel index and ``amplitude`` the pulse height a at its start, in
                signal units.

        Returns:
            ndarray: (n_channels, n_bins) float64, bin-averaged signal.
        """
        stride = n_bins + 1
        direct = np.zeros(self.n_channels * stride)
        output = np.zeros((self.n_channels, n_bins))
        for family, (time_s, channel, amplitude) in enumerate(pulses):
            tau = self.tau_s[family]
            position = np.asarray(time_s) / self.bin_s
            first_bin = np.minimum(position.astype(np.int64), n_bins - 1)
            to_bin_end = (first_bin + 1 - position) * self.bin_s
            area_rate = np.asarray(amplitude) * (tau / self.bin_s)
            tail_start = np.exp(-to_bin_end / tau)
            flat = np.asarray(channel) * stride + first_bin

            direct += np.bincount(flat, area_rate * (1.0 - tail_start), minlength=direct.size)
            # bincount returns int64 for empty input, so cast to keep float arithmetic.
            impulses = np.bincount(
                flat + 1, area_rate * tail_start * (1.0 - self.ratio[family]),
                minlength=direct.size,
            ).astype(np.float64, copy=False).reshape(self.n_channels, stride)
            impulses[:, 0] += self._carry[family]
            self._carry[family] = impulses[:, n_bins]
            filtered, self._state[family] = signal.lfilter(
                [1.0], [1.0, -self.ratio[family]], impulses[:, :n_bins], axis=1,
                zi=self._state[family],
            )
            output += filtered
        output += direct.reshape(self.n_channels, stride)[:, :n_bins]
        return output


class Decimator:
    """Causal Butterworth anti-alias low-pass and decimation, block by block.

    Args:
        n_channels (int): Number of channels.
        readout (ReadoutConfig): Rates and filter settings.
    """

    def __init__(self, n_channels, readout):
        self.factor = readout.decimation_factor
        cutoff_hz = readout.antialias_cutoff_fraction * readout.sample_rate_hz
        self.sos = signal.butter(
            readout.antialias_order, cutoff_hz, btype="low", output="sos",
            fs=readout.internal_rate_hz,
        )
        self.n_channels = int(n_channels)
        self.reset()

    def reset(self):
        """Set the filter state to zero, as before the first block."""
        self._state = np.zeros((self.sos.shape[0], self.n_channels, 2))

    def process(self, block):
        """Filter a block and keep every ``factor``-th sample.

        Args:
            block (ndarray): (n_channels, n_bins) float64 internal samples; n_bins must be a
                multiple of the decimation factor.

        Returns:
            ndarray: (n_channels, n_bins // factor) float64.
        """
        if block.shape[1] % self.factor:
            raise ValueError(
                f"block length {block.shape[1]} is not a multiple of the decimation factor "
                f"{self.factor}"
            )
        filtered, self._state = signal.sosfilt(self.sos, block, axis=1, zi=self._state)
        return filtered[:, :: self.factor]
