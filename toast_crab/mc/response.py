"""Small-signal TES response to energy deposited on the island and in the wafer.

Model (linear electrothermal feedback of a voltage-biased TES, Irwin, K. D. & Hilton, G. C.
2005, "Transition-edge sensors", in Cryogenic Particle Detection, Topics in Applied Physics
99, 63; stiff voltage bias, beta = 0, negligible inductance):

* Island hit of energy E at t0: the Joule power drops by
  dP_J(t) = -(L / (1 + L)) (E / tau_eff) exp(-(t - t0) / tau_eff),
  so the readout measures the fraction L / (1 + L) of E, where L is the loop gain.
* Wafer hit of energy E: the wafer (the bath of every TES on it) warms by
  dT_b = (E / C_w) w_j exp(-(t - t0) / tau_w), with w_j a distance weight for detector j.
  The leg power changes by -G_b dT_b and the loop responds with
  dP_J = -(L / (1 + L)) G_b [dT_b * exp(-t / tau_eff) / tau_eff], which is
  -(L / (1 + L)) G_b (E / C_w) w_j tau_w / (tau_w - tau_eff) (exp(-t'/tau_w) - exp(-t'/tau_eff)).
* Wafer heat capacity: Debye T^3 law for crystalline silicon,
  c_V = (12 pi^4 / 5) R (T / theta_D)^3 per mole, times a multiplier for attached parts.

The output is the optical-power-equivalent change dP_opt = -dP_J (positive glitches), in W,
with the no-cosmic-ray level removed.
"""

import numpy as np

__all__ = [
    "KEV_TO_J",
    "wafer_heat_capacity_j_per_k",
    "island_peak_power_w_per_kev",
    "wafer_step_power_w_per_kev",
    "detector_positions_m",
    "WaferCoupling",
    "wafer_hit_weights",
    "island_response_w",
    "wafer_response_w",
]

KEV_TO_J = 1.602176634e-16
_GAS_CONSTANT_J_PER_MOL_K = 8.314462618
_SILICON_MOLAR_MASS_G = 28.0855
_SILICON_DENSITY_G_CM3 = 2.329


def wafer_heat_capacity_j_per_k(wafer, temperature_k):
    """Compute the heat capacity of the silicon wafer from the Debye T^3 law.

    Args:
        wafer (WaferConfig): Geometry, Debye temperature and multiplier.
        temperature_k (float): Wafer temperature, K.

    Returns:
        float: C_w, J/K.
    """
    molar_heat = (
        12.0 * np.pi**4 / 5.0 * _GAS_CONSTANT_J_PER_MOL_K
        * (temperature_k / wafer.debye_temperature_k) ** 3
    )
    volume_cm3 = wafer.wafer_side_m**2 * wafer.wafer_thickness_m * 1.0e6
    moles = volume_cm3 * _SILICON_DENSITY_G_CM3 / _SILICON_MOLAR_MASS_G
    return float(molar_heat * moles * wafer.heat_capacity_multiplier)


def island_peak_power_w_per_kev(detector):
    """Return the peak dP_opt of an island hit per keV deposited: L/(1+L) / tau_eff, in W/keV."""
    return detector.loop_fraction * KEV_TO_J / detector.tau_eff_s


def wafer_step_power_w_per_kev(config):
    """Return L/(1+L) G_b / C_w per keV deposited in the wafer, in W/keV.

    This is the amplitude B of the wafer response before the two-exponential shape.
    """
    capacity = wafer_heat_capacity_j_per_k(config.wafer, config.detector.bath_temperature_k)
    detector = config.detector
    return detector.loop_fraction * detector.bath_conductance_w_per_k * KEV_TO_J / capacity


def detector_positions_m(n_detectors, wafer):
    """Place detectors on a square pixel grid centred on the wafer.

    ``wafer.detectors_per_pixel`` detectors share each pixel position; pixels fill a square
    grid of pitch ``wafer.pixel_pitch_m`` row by row.

    Args:
        n_detectors (int): Number of detectors.
        wafer (WaferConfig): Wafer and pixel geometry.

    Returns:
        ndarray: (n_detectors, 2) float64, detector (x, y) relative to the wafer centre, m.

    Raises:
        ValueError: The pixels do not fit on the wafer.
    """
    if n_detectors < 1:
        raise ValueError(f"n_detectors must be >= 1, got {n_detectors!r}")
    n_pixels = -(-n_detectors // wafer.detectors_per_pixel)
    columns = int(np.ceil(np.sqrt(n_pixels)))
    rows = -(-n_pixels // columns)
    pixel = np.arange(n_detectors) // wafer.detectors_per_pixel
    x_m = (pixel % columns - 0.5 * (columns - 1)) * wafer.pixel_pitch_m
    y_m = (pixel // columns - 0.5 * (rows - 1)) * wafer.pixel_pitch_m
    extent_m = max(columns, rows) * wafer.pixel_pitch_m
    if extent_m > wafer.wafer_side_m:
        raise ValueError(
            f"{n_detectors} detectors in {n_pixels} pixels of pitch {wafer.pixel_pitch_m!r} m "
            f"span {extent_m!r} m, more than wafer_side_m = {wafer.wafer_side_m!r} m; use fewer "
            "detectors or a larger wafer"
        )
    return np.column_stack([x_m, y_m])


def _near_field_normalisation(positions_m, wafer, n_grid=200):
    """Return 1 / mean of exp(-d / lambda) over hit positions uniform on the wafer, per detector."""
    half = 0.5 * wafer.wafer_side_m
    centres = (np.arange(n_grid) + 0.5) / n_grid * 2.0 * half - half
    grid_x, grid_y = np.meshgrid(centres, centres)
    norms = np.empty(len(positions_m))
    for index, (x_m, y_m) in enumerate(positions_m):
        distance = np.hypot(grid_x - x_m, grid_y - y_m)
        norms[index] = 1.0 / np.mean(np.exp(-distance / wafer.near_field_length_m))
    return norms


class WaferCoupling:
    """Distance weights of wafer hits for a fixed set of detectors.

    The weight of a hit at distance d from detector j is (1 - f) + f A_j exp(-d / lambda),
    with f = ``near_field_fraction`` and lambda = ``near_field_length_m``. A_j makes the
    weight average to 1 over the wafer, so the mean response of every detector equals the
    single-node response.

    Args:
        positions_m (ndarray): (n_det, 2) float64, detector positions, m.
        wafer (WaferConfig): Wafer parameters.
    """

    def __init__(self, positions_m, wafer):
        self.positions_m = np.asarray(positions_m, dtype=np.float64)
        self.fraction = wafer.near_field_fraction
        self.length_m = wafer.near_field_length_m
        if self.fraction > 0.0:
            self.norms = _near_field_normalisation(self.positions_m, wafer)
        else:
            self.norms = np.ones(len(self.positions_m))

    def weights(self, x_m, y_m):
        """Return the (n_det, n_hits) float64 weights of hits at (x_m, y_m)."""
        n_det = len(self.positions_m)
        if self.fraction == 0.0:
            return np.ones((n_det, np.size(x_m)))
        dx = x_m[np.newaxis, :] - self.positions_m[:, 0:1]
        dy = y_m[np.newaxis, :] - self.positions_m[:, 1:2]
        near = np.exp(-np.hypot(dx, dy) / self.length_m)
        return (1.0 - self.fraction) + self.fraction * self.norms[:, np.newaxis] * near


def wafer_hit_weights(x_m, y_m, positions_m, wafer):
    """Compute distance weights of wafer hits (see ``WaferCoupling``).

    Args:
        x_m, y_m (ndarray): (n_hits,) float64, hit positions relative to the wafer centre, m.
        positions_m (ndarray): (n_det, 2) float64, detector positions, m.
        wafer (WaferConfig): Wafer parameters.

    Returns:
        ndarray: (n_det, n_hits) float64 weights (dimensionless).
    """
    return WaferCoupling(positions_m, wafer).weights(np.asarray(x_m), np.asarray(y_m))


def island_response_w(time_s, energy_kev, detector):
    """Evaluate the continuous-time dP_opt of one island hit at t = 0.

    Args:
        time_s (ndarray): Times, float64, s.
        energy_kev (float): Deposited energy, keV.
        detector (DetectorConfig): TES parameters.

    Returns:
        ndarray: dP_opt, same shape as ``time_s``, float64, W.
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    shape = np.exp(-np.clip(time_s, 0.0, None) / detector.tau_eff_s)
    return np.where(time_s >= 0.0, energy_kev * island_peak_power_w_per_kev(detector) * shape, 0.0)


def wafer_response_w(time_s, energy_kev, config, weight=1.0):
    """Evaluate the continuous-time dP_opt of one wafer hit at t = 0.

    Args:
        time_s (ndarray): Times, float64, s.
        energy_kev (float): Deposited energy, keV.
        config (MCConfig): Detector and wafer parameters.
        weight (float): Distance weight of the hit for this detector.

    Returns:
        ndarray: dP_opt, same shape as ``time_s``, float64, W.
    """
    time_s = np.asarray(time_s, dtype=np.float64)
    tau_wafer = config.wafer.tau_wafer_s
    tau_eff = config.detector.tau_eff_s
    clipped = np.clip(time_s, 0.0, None)
    shape = tau_wafer / (tau_wafer - tau_eff) * (
        np.exp(-clipped / tau_wafer) - np.exp(-clipped / tau_eff)
    )
    amplitude = energy_kev * weight * wafer_step_power_w_per_kev(config)
    return np.where(time_s >= 0.0, amplitude * shape, 0.0)
