"""Tests of phi(t), the solar-cycle model of the modulation potential (toast_crab.mc)."""

import datetime

import numpy as np
import pytest

from toast_crab.mc import (
    EnvironmentConfig,
    MCConfig,
    MCWarning,
    SolarCycleConfig,
    omnidirectional_flux_cm2_s,
    simulate_training_chunks,
)
from toast_crab.mc.solar_cycle import decimal_year, parse_date, phi_at_decimal_year


def test_phi_extremes_at_cycle_phases():
    cycle = SolarCycleConfig()
    peak_year = cycle.minimum_year + cycle.rise_fraction * cycle.period_years
    assert phi_at_decimal_year(cycle.minimum_year, cycle) == pytest.approx(0.30, abs=1e-12)
    assert phi_at_decimal_year(peak_year, cycle) == pytest.approx(0.75, abs=1e-12)
    next_minimum = cycle.minimum_year + cycle.period_years
    assert phi_at_decimal_year(next_minimum, cycle) == pytest.approx(0.30, abs=1e-12)
    years = np.linspace(1990.0, 2060.0, 20001)
    phi = phi_at_decimal_year(years, cycle)
    assert phi.min() >= 0.30 - 1e-12
    assert phi.max() <= 0.75 + 1e-12


def test_phi_curve_smooth():
    cycle = SolarCycleConfig()
    step = 1.0e-4
    years = np.arange(2009.0, 2035.0, step)
    phi = phi_at_decimal_year(years, cycle)
    # Continuous: neighbouring points differ by at most max|dphi/dt| step, where
    # max|dphi/dt| = (pi / 2) (phi_max - phi_min) / (rise P) = 0.143 GV / yr.
    slope_max = np.pi / 2 * 0.45 / (cycle.rise_fraction * cycle.period_years)
    assert np.abs(np.diff(phi)).max() <= slope_max * step * 1.001
    # First derivative continuous too: its jumps are of order the second derivative times
    # the step, (pi^2 / 2) 0.45 / (rise P)^2 step ~ 1e-4 GV / yr.
    slope = np.diff(phi) / step
    assert np.abs(np.diff(slope)).max() < 1.0e-3


def test_launch_epoch_near_minimum():
    # The model puts a modulation minimum at 2009.7 + 2 x 11 = 2031.7, in LiteBIRD's
    # early-2030s launch window; phi there is within 5 % of phi_min.
    config = SolarCycleConfig()
    assert config.phi_gv("2031-09-13") == pytest.approx(0.30, rel=0.05)
    assert config.phi_gv("2025-02-01") > 0.70


def test_flux_follows_date():
    environment = EnvironmentConfig()
    cycle = SolarCycleConfig()
    near_maximum = sum(omnidirectional_flux_cm2_s(environment, cycle.phi_gv("2025-03-01")).values())
    near_minimum = sum(omnidirectional_flux_cm2_s(environment, cycle.phi_gv("2031-09-01")).values())
    assert near_maximum < near_minimum
    # phi 0.75 vs 0.30 GV: the flux falls to about half (force field, this LIS).
    assert near_maximum / near_minimum == pytest.approx(0.47, abs=0.05)


@pytest.mark.parametrize(
    "value",
    [
        "2032-06-01",
        "2032-06-01T00:00:00+00:00",
        "2032-06-01T02:00:00+02:00",
        datetime.date(2032, 6, 1),
        datetime.datetime(2032, 6, 1),
    ],
)
def test_parse_date_formats(value):
    moment = parse_date(value)
    assert moment == datetime.datetime(2032, 6, 1, tzinfo=datetime.timezone.utc)


def test_decimal_year_mid_year():
    # 2032 is a leap year: 2 July 00:00 is day 183 of 366, i.e. 2032.5.
    assert decimal_year("2032-07-02") == pytest.approx(2032.5, abs=1e-12)


def test_parse_date_rejects_bad_format():
    with pytest.raises(ValueError, match="'June 2032' is not an ISO 8601 date"):
        parse_date("June 2032")
    with pytest.raises(TypeError, match="must be an ISO 8601 string"):
        parse_date(2032.5)


def test_phi_date_warns_outside_anchor():
    with pytest.warns(MCWarning, match="extrapolation"):
        SolarCycleConfig().phi_gv("1990-01-01")


def test_mission_date_sets_run_phi():
    config = MCConfig(environment=EnvironmentConfig(mission_date="2032-06-01"))
    result = simulate_training_chunks(config, 2, chunk_length=50, seed=1)
    expected = SolarCycleConfig().phi_gv("2032-06-01")
    assert config.phi_gv == expected
    assert np.all(result.labels["phi_gv"] == expected)
    assert result.provenance["mc_config"]["environment"]["mission_date"] == "2032-06-01"


def test_mission_date_from_toml_date(tmp_path):
    path = tmp_path / "dated.toml"
    path.write_text("[environment]\nmission_date = 2032-06-01\n")
    config = MCConfig.from_toml(path)
    assert config.environment.mission_date == "2032-06-01"
    assert MCConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: EnvironmentConfig(mission_date="next year"), ValueError, "not an ISO 8601"),
        (
            lambda: EnvironmentConfig(mission_date="2032-01-01", phi_range_gv=(0.3, 0.6)),
            ValueError,
            "keep one",
        ),
        (lambda: SolarCycleConfig(phi_min_gv=0.8, phi_max_gv=0.3), ValueError, "phi_min_gv <="),
        (lambda: SolarCycleConfig(phi_min_gv=-0.1), ValueError, "0 <= phi_min_gv"),
        (lambda: SolarCycleConfig(rise_fraction=1.0), ValueError, r"rise_fraction must be in \(0, 1\)"),
        (lambda: SolarCycleConfig(period_years=0.0), ValueError, "period_years must be > 0"),
    ],
)
def test_solar_cycle_config_rejects_bad_values(build, error, match):
    with pytest.raises(error, match=match):
        build()
