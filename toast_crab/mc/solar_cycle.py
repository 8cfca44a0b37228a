"""Force-field modulation potential phi over the solar cycle, phi(t).

A smooth periodic model that maps a date to the modulation potential on the scale of the
Corti et al. (2019) proton LIS used by ``toast_crab.mc.environment``. Over one cycle of
length P that starts at a modulation minimum t_0, with phase s = ((t - t_0) / P) mod 1 and
rise fraction r:

* s < r: phi = phi_min + (phi_max - phi_min) (1 - cos(pi s / r)) / 2,
* s >= r: phi = phi_min + (phi_max - phi_min) (1 + cos(pi (s - r) / (1 - r))) / 2.

The curve and its first derivative are continuous. The defaults and their status are in
``SolarCycleConfig`` and docs/mc.md. Solar energetic particle events are not part of it.
"""

import datetime
import math
import warnings

import numpy as np

__all__ = [
    "EXTRAPOLATION_LIMITS",
    "parse_date",
    "decimal_year",
    "phi_at_decimal_year",
    "phi_at_date",
]

# Years outside which ``phi_at_date`` warns: the model is anchored on solar cycles 24 and 25
# (2008-2025) and extrapolated over the LiteBIRD mission of the 2030s.
EXTRAPOLATION_LIMITS = (2005.0, 2045.0)


def parse_date(value, name="date"):
    """Convert an ISO 8601 date or date-time to a timezone-aware UTC datetime.

    Args:
        value (str, datetime.date or datetime.datetime): For example "2032-06-01" or
            "2032-06-01T12:00:00+00:00". Naive date-times are taken as UTC.
        name (str): Name of the value in error messages.

    Returns:
        datetime.datetime: The date-time in UTC.

    Raises:
        TypeError: ``value`` is not a string, date or datetime.
        ValueError: The string is not an ISO 8601 date.
    """
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, datetime.date):
        moment = datetime.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.strip())
        except ValueError as error:
            raise ValueError(
                f"{name} {value!r} is not an ISO 8601 date; write it as '2032-06-01' or "
                "'2032-06-01T12:00:00+00:00'"
            ) from error
    else:
        raise TypeError(
            f"{name} must be an ISO 8601 string, datetime.date or datetime.datetime, got "
            f"{value!r} of type {type(value).__name__}"
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def decimal_year(value):
    """Convert a date to a decimal year, e.g. 2032-07-02T00:00 UTC -> 2032.5.

    Args:
        value (str, datetime.date or datetime.datetime): See ``parse_date``.

    Returns:
        float: Year plus the elapsed fraction of that year (UTC).
    """
    moment = parse_date(value)
    start = datetime.datetime(moment.year, 1, 1, tzinfo=datetime.timezone.utc)
    end = datetime.datetime(moment.year + 1, 1, 1, tzinfo=datetime.timezone.utc)
    return moment.year + (moment - start).total_seconds() / (end - start).total_seconds()


def phi_at_decimal_year(year, cycle):
    """Evaluate the solar-cycle model of phi at decimal years.

    Args:
        year (float or ndarray): Decimal years, float64.
        cycle (SolarCycleConfig): Model parameters.

    Returns:
        float or ndarray: phi, float64, GV (same shape as ``year``).
    """
    year = np.asarray(year, dtype=np.float64)
    phase = np.mod((year - cycle.minimum_year) / cycle.period_years, 1.0)
    rise = cycle.rise_fraction
    rising = 0.5 * (1.0 - np.cos(np.pi * phase / rise))
    falling = 0.5 * (1.0 + np.cos(np.pi * (phase - rise) / (1.0 - rise)))
    shape = np.where(phase < rise, rising, falling)
    phi = cycle.phi_min_gv + (cycle.phi_max_gv - cycle.phi_min_gv) * shape
    return float(phi) if phi.ndim == 0 else phi


def phi_at_date(value, cycle):
    """Evaluate the solar-cycle model of phi at a date.

    Args:
        value (str, datetime.date or datetime.datetime): See ``parse_date``.
        cycle (SolarCycleConfig): Model parameters.

    Returns:
        float: phi, GV.
    """
    year = decimal_year(value)
    if not EXTRAPOLATION_LIMITS[0] <= year <= EXTRAPOLATION_LIMITS[1]:
        from toast_crab.mc.config import MCWarning

        warnings.warn(
            f"date {value!r} (year {year:.2f}) is outside {EXTRAPOLATION_LIMITS}; the "
            "solar-cycle model is anchored on cycles 24 and 25 and its phi there is an "
            "extrapolation",
            MCWarning,
            stacklevel=2,
        )
    phi = phi_at_decimal_year(year, cycle)
    if not math.isfinite(phi):
        raise ValueError(f"phi at {value!r} is not finite; check the solar-cycle parameters")
    return phi
