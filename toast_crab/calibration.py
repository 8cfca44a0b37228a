"""Calibration from absorbed power (W) to CMB thermodynamic temperature (K_CMB).

A single-mode, single-polarization detector with a top-hat band [nu_c - dnu/2,
nu_c + dnu/2] and optical efficiency eta converts a change of CMB temperature dT into a
power change

    dP/dT_CMB = eta * k_B * integral over the band of x^2 e^x / (e^x - 1)^2 dnu,

with x = h nu / (k_B T_CMB). This is the derivative of the Planck law in the
Rayleigh-Jeans normalization of a single mode (P = eta k_B T_RJ dnu). T_CMB is
2.7255 K (Fixsen 2009, ApJ 707, 916).
"""

import numpy as np
from astropy import constants as const
from astropy import units as u

__all__ = ["T_CMB", "dpdt_cmb"]

T_CMB = 2.7255 * u.K

# Gauss-Legendre nodes on [-1, 1]. The integrand is smooth over any band, so 32
# nodes give relative errors far below 1e-10.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(32)


def dpdt_cmb(bandcenter, bandwidth, optical_efficiency=1.0):
    """Compute dP/dT_CMB of a top-hat band.

    Args:
        bandcenter (Quantity): Band centre frequency (scalar or array).
        bandwidth (Quantity): Full band width, same shape as ``bandcenter``.
        optical_efficiency (float): Fraction of the sky power absorbed, in (0, 1].

    Returns:
        (Quantity): dP/dT_CMB in W / K, shape of the inputs.

    Raises:
        ValueError: For a non-positive centre, a width outside (0, 2 * centre) or an
            efficiency outside (0, 1].
    """
    nu_c = u.Quantity(bandcenter).to_value(u.Hz)
    dnu = u.Quantity(bandwidth).to_value(u.Hz)
    nu_c, dnu = np.broadcast_arrays(np.asarray(nu_c, float), np.asarray(dnu, float))
    if np.any(~np.isfinite(nu_c)) or np.any(nu_c <= 0):
        raise ValueError(f"bandcenter must be positive and finite. Got {bandcenter!r}.")
    if np.any(~np.isfinite(dnu)) or np.any(dnu <= 0) or np.any(dnu >= 2 * nu_c):
        raise ValueError(
            f"bandwidth must be positive and below twice the band centre. Got {bandwidth!r}."
        )
    eta = float(optical_efficiency)
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"optical_efficiency must be in (0, 1]. Got {optical_efficiency!r}.")

    nu = nu_c[..., None] + 0.5 * dnu[..., None] * _NODES
    x = (const.h.value * nu) / (const.k_B.value * T_CMB.to_value(u.K))
    ex = np.exp(x)
    integrand = x**2 * ex / (ex - 1.0) ** 2
    integral_hz = 0.5 * dnu * np.sum(integrand * _WEIGHTS, axis=-1)
    return eta * const.k_B.value * integral_hz * (u.W / u.K)


def watts_to_units_factors(focalplane, detectors, units, calibration=None,
                           optical_efficiency=1.0, operator="The operator",
                           target="detector data"):
    """Return, per detector, the factor that converts W to ``units``.

    Power units get the plain unit conversion. Temperature units are taken as K_CMB:
    the factor divides by ``calibration`` or, when it is None, by :func:`dpdt_cmb` of
    the detector's ``bandcenter`` and ``bandwidth`` focalplane columns. The column
    check runs even without detectors, so every MPI process raises or none does.

    Args:
        focalplane (toast.instrument.Focalplane): The detectors' focalplane.
        detectors (list): Detector names.
        units (astropy.units.Unit): Units of the target data.
        calibration (Quantity): dP/dT_CMB for every detector (W / K), or None.
        optical_efficiency (float): Efficiency used with the focalplane band.
        operator (str): Operator name for error messages, e.g. "InjectCRAB".
        target (str): What is being added to, for error messages.

    Returns:
        (dict): Detector name -> float factor.

    Raises:
        ValueError: For units that are neither power nor temperature, or for missing
            band columns when no calibration is given.
    """
    if units.is_equivalent(u.W):
        factor = (1.0 * u.W).to_value(units)
        return {det: factor for det in detectors}
    if not units.is_equivalent(u.K):
        raise ValueError(
            f"{operator} cannot add to {target} in units {units}: they are neither power "
            "nor temperature. Use a key in W (or a multiple) or in K_CMB (K or a multiple)."
        )

    kelvin = (1.0 * u.K).to_value(units)
    if calibration is not None:
        factor = kelvin / calibration.to_value(u.W / u.K)
        return {det: factor for det in detectors}

    columns = focalplane.detector_data.colnames
    missing = [name for name in ("bandcenter", "bandwidth") if name not in columns]
    if missing:
        raise ValueError(
            f"Focalplane for {target} has no column {missing}, needed to convert W to "
            f"K_CMB. Set {operator}.calibration to a dP/dT in W / K, or add bandcenter "
            "and bandwidth to the focalplane."
        )
    factors = {}
    for det in detectors:
        dpdt = dpdt_cmb(
            focalplane[det]["bandcenter"], focalplane[det]["bandwidth"], optical_efficiency
        )
        factors[det] = kelvin / dpdt.to_value(u.W / u.K)
    return factors
