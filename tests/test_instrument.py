"""Tests of the LiteBIRD focal planes built from the public instrument model."""

import datetime

import numpy as np
import pytest
from astropy import units as u

from toast_crab import instrument


def test_focalplane_default_channel():
    focalplane = instrument.litebird_focalplane()
    table = focalplane.detector_data

    assert len(focalplane.detectors) == instrument.DEFAULT_N_DETECTORS
    assert u.isclose(focalplane.sample_rate, 19.1 * u.Hz)
    assert set(table["channel"]) == {"L4-140"}
    for column in ("bandcenter", "bandwidth", "psd_net", "psd_fknee", "psd_fmin", "fwhm"):
        assert isinstance(table[column], u.Quantity), column
    # Values of channel L4-140 in IMo release vPTEP.
    assert u.allclose(table["bandcenter"], 140.0 * u.GHz)
    assert u.allclose(table["bandwidth"], 42.0 * u.GHz)
    assert u.allclose(table["psd_net"], 38.44e-6 * u.K * u.s**0.5)
    assert u.allclose(table["psd_fknee"], 0.02 * u.Hz)
    assert u.allclose(table["psd_fmin"], 1.0e-5 * u.Hz)
    assert np.allclose(table["psd_alpha"], 1.0)
    assert u.allclose(table["fwhm"], 23.7 * u.arcmin)


def test_focalplane_uids_unique():
    table = instrument.litebird_focalplane(n_detectors=20).detector_data
    assert len(set(table["uid"])) == 20
    assert len(set(table["name"])) == 20


def test_focalplane_keeps_pairs():
    table = instrument.litebird_focalplane(n_detectors=12).detector_data
    for first in range(0, 12, 2):
        assert table["pixel"][first] == table["pixel"][first + 1]
        assert table["pol"][first] == "T"
        assert table["pol"][first + 1] == "B"
    assert len(set(table["pixel"])) == 6


def test_focalplane_whole_channel():
    assert len(instrument.litebird_focalplane("L4-140", n_detectors=None).detectors) == 144
    assert len(instrument.litebird_focalplane("M1-140", n_detectors=None).detectors) == 366


def test_focalplane_pol_angle_in_quaternion():
    import toast.qarray as qa

    table = instrument.litebird_focalplane(n_detectors=8).detector_data
    zaxis = np.array([0.0, 0.0, 1.0])
    xaxis = np.array([1.0, 0.0, 0.0])
    for row in table:
        # The public IMo puts every detector on the boresight.
        assert np.allclose(qa.rotate(row["quat"], zaxis), zaxis)
        # The quaternion turns the focal-plane X axis by the polarization angle.
        turned = qa.rotate(row["quat"], xaxis)
        angle = np.arctan2(turned[1], turned[0]) % np.pi
        assert np.isclose(angle, row["pol_angle"].to_value(u.rad) % np.pi, atol=1e-10)
        assert np.isclose(
            row["pol_angle"].to_value(u.rad), row["gamma"].to_value(u.rad) % np.pi
        )
    # T and B detectors of a pixel are close to orthogonal.
    difference = (table["gamma"][0] - table["gamma"][1]).to_value(u.deg) % 180.0
    assert abs(difference - 90.0) < 2.0


def test_focalplane_logs_rate_replacement(capfd):
    instrument.litebird_focalplane(n_detectors=2)
    assert "19.1 Hz replaces the IMo vPTEP rate of 31 Hz" in capfd.readouterr().out


def test_focalplane_imo_rate_not_logged(capfd):
    focalplane = instrument.litebird_focalplane(n_detectors=2, sample_rate=31.0 * u.Hz)
    assert u.isclose(focalplane.sample_rate, 31.0 * u.Hz)
    assert "replaces" not in capfd.readouterr().out


def test_focalplane_unknown_channel():
    with pytest.raises(ValueError, match=r"Unknown LiteBIRD channel 'L9-999'.*L4-140.*M1-140"):
        instrument.litebird_focalplane("L9-999")


def test_focalplane_channel_not_string():
    with pytest.raises(TypeError, match="channel must be a string.*got int 140"):
        instrument.litebird_focalplane(140)


@pytest.mark.parametrize("n_detectors", [0, -2, 146])
def test_focalplane_count_out_of_range(n_detectors):
    with pytest.raises(
        ValueError,
        match=rf"n_detectors={n_detectors} is out of range for channel L4-140, "
        r"which has 144 detectors\. Use an even number from 2 to 144",
    ):
        instrument.litebird_focalplane("L4-140", n_detectors=n_detectors)


def test_focalplane_count_odd():
    with pytest.raises(ValueError, match=r"n_detectors=7 is odd.*T/B pairs"):
        instrument.litebird_focalplane(n_detectors=7)


def test_focalplane_count_not_integer():
    with pytest.raises(TypeError, match="n_detectors must be an integer or None, got str '8'"):
        instrument.litebird_focalplane(n_detectors="8")


def test_focalplane_rate_without_units():
    with pytest.raises(TypeError, match="sample_rate must be an astropy Quantity.*got float 19.1"):
        instrument.litebird_focalplane(sample_rate=19.1)


@pytest.mark.parametrize("rate", [19.1 * u.s, -1.0 * u.Hz, 0.0 * u.Hz])
def test_focalplane_rate_invalid(rate):
    with pytest.raises(ValueError, match="sample_rate must"):
        instrument.litebird_focalplane(sample_rate=rate)


def test_list_channels_count():
    channels = instrument.list_channels()
    assert len(channels) == 22
    assert channels["L4-140"] == "LFT"
    assert channels["M1-140"] == "MFT"
    assert channels["H3-402"] == "HFT"


def test_telescope_name_and_site():
    telescope = instrument.litebird_telescope("M1-140", n_detectors=4)
    assert telescope.name == "LiteBIRD-MFT"
    assert telescope.site.name == "L2"
    assert len(telescope.focalplane.detectors) == 4


@pytest.mark.parametrize("telescope, hwp_rpm", [("LFT", 46.0), ("MFT", 39.0), ("HFT", 61.0)])
def test_scanning_values(telescope, hwp_rpm):
    scan = instrument.litebird_scanning(telescope)
    assert u.isclose(scan.prec_angle, 45.0 * u.deg)
    assert u.isclose(scan.spin_angle, 50.0 * u.deg)
    assert u.isclose(scan.spin_period, 20.0 * u.min)
    assert u.isclose(scan.prec_period, 192.348 * u.min)
    assert scan.hwp_rpm == hwp_rpm
    assert scan.telescope == telescope


def test_scanning_unknown_telescope():
    with pytest.raises(ValueError, match="Unknown LiteBIRD telescope 'XFT'.*LFT, MFT, HFT"):
        instrument.litebird_scanning("XFT")


def test_schedule_periods():
    schedule = instrument.litebird_schedule(num_observations=3, observation_time=2 * u.hour)
    assert len(schedule.scans) == 3
    for scan in schedule.scans:
        assert u.isclose(scan.spin_period, 20.0 * u.min)
        assert u.isclose(scan.prec_period, 192.348 * u.min)
    duration = schedule.scans[0].stop - schedule.scans[0].start
    assert abs(duration.total_seconds() - 7200.0) < 1.0e-3


def test_schedule_naive_start():
    with pytest.raises(ValueError, match="mission_start 2025-01-01T00:00:00 has no time zone"):
        instrument.litebird_schedule(mission_start=datetime.datetime(2025, 1, 1))


def test_schedule_no_observations():
    with pytest.raises(ValueError, match="num_observations must be at least 1, got 0"):
        instrument.litebird_schedule(num_observations=0)


def test_toast_inputs_round_trip(tmp_path):
    import toast.schedule
    from toast.io import load_instrument_file

    telescope_file, schedule_file = instrument.write_toast_inputs(
        str(tmp_path), n_detectors=4, num_observations=2, observation_time=15 * u.minute
    )
    telescope, _ = load_instrument_file(telescope_file)
    table = telescope.focalplane.detector_data
    assert len(telescope.focalplane.detectors) == 4
    assert u.isclose(telescope.focalplane.sample_rate, 19.1 * u.Hz)
    assert u.allclose(table["bandcenter"], 140.0 * u.GHz)
    schedule = toast.schedule.SatelliteSchedule()
    schedule.read(schedule_file)
    assert len(schedule.scans) == 2


def test_white_noise_level():
    """SimNoise with the IMo NET gives a per-sample white noise of NET * sqrt(rate)."""
    import toast
    import toast.ops

    telescope = instrument.litebird_telescope(n_detectors=2)
    scan = instrument.litebird_scanning("LFT")
    schedule = instrument.litebird_schedule(
        num_observations=1, observation_time=10 * u.minute
    )
    data = toast.Data(comm=toast.Comm(world=None))
    toast.ops.SimSatellite(
        telescope=telescope, schedule=schedule,
        prec_angle=scan.prec_angle, spin_angle=scan.spin_angle,
    ).apply(data)
    toast.ops.DefaultNoiseModel().apply(data)
    toast.ops.SimNoise().apply(data)

    samples = data.obs[0].detdata["signal"].data
    # Differences of consecutive samples remove most of the 1/f part (knee 20 mHz).
    white_k = np.std(np.diff(samples, axis=1)) / np.sqrt(2.0)
    expected_k = 38.44e-6 * np.sqrt(19.1)
    # 2 x 11460 differences: the relative standard error of the estimate is about
    # 0.6 %, and the residual 1/f power adds well under 1 %, so 5 % is a safe bound.
    assert abs(white_k / expected_k - 1.0) < 0.05
    data.clear()
