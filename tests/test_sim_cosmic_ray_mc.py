"""SimCosmicRayMC on one process: injection contract, physics level, units, flags, bad input."""

import numpy as np
import pytest
import toast.ops
import traitlets
from astropy import units as u
from astropy.table import Column
from toast.observation import default_values as defaults

from helpers import create_comm, create_satellite_data
from toast_crab.calibration import dpdt_cmb
from toast_crab.mc import HIT_UNIFORMS, HitSampler, MCConfig, SolarCycleConfig
from toast_crab.mc.response import wafer_step_power_w_per_kev
from toast_crab.ops import SimCosmicRayMC


@pytest.fixture
def data():
    # 2 observations x 14 detectors x 2 min at 19.1 Hz (2292 samples, 3 time blocks).
    data = create_satellite_data(create_comm(None), obs_minutes=2.0)
    yield data
    data.clear()


def _copy(data, key):
    return {(ob.name, str(det)): np.array(ob.detdata[key][det])
            for ob in data.obs for det in ob.local_detectors}


def _sim(key, **traits):
    traits.setdefault("phi", 0.35 * u.GV)
    return SimCosmicRayMC(det_data=key, **traits)


def test_sim_adds_to_existing_signal(data):
    rng = np.random.default_rng(11)
    for ob in data.obs:
        ob.detdata.ensure("total", create_units=u.K)
        ob.detdata["total"].data[:] = rng.normal(0, 1e-3, ob.detdata["total"].data.shape)
    before = _copy(data, "total")

    _sim("total").apply(data)
    _sim("cr_only").apply(data)

    after = _copy(data, "total")
    cr_only = _copy(data, "cr_only")
    for name in before:
        assert np.all(cr_only[name] != 0)
        np.testing.assert_allclose(after[name], before[name] + cr_only[name], rtol=0, atol=1e-15)


def test_sim_same_realization_repeats(data):
    _sim("a", realization=4).apply(data)
    _sim("b", realization=4).apply(data)
    a, b = _copy(data, "a"), _copy(data, "b")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_sim_realizations_independent(data):
    _sim("a", realization=0, det_data_units=u.W).apply(data)
    _sim("b", realization=1, det_data_units=u.W).apply(data)
    a, b = _copy(data, "a"), _copy(data, "b")
    det = str(data.obs[0].local_detectors[0])
    first = np.concatenate([a[(ob.name, det)] for ob in data.obs])
    second = np.concatenate([b[(ob.name, det)] for ob in data.obs])
    assert not np.any(first == second)
    # Samples decorrelate within a few samples (4 Hz filter), so two independent series
    # of n = 4584 samples have a correlation coefficient of sigma ~ sqrt(3 / n) = 0.026;
    # 5 sigma is 0.13.
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.13


def test_sim_mean_matches_rate_times_area(data):
    # The mean of the wafer term is rate x mean deposit x B x tau_wafer per detector,
    # because the near-field weights average to 1 over the wafer. Island hits add ~1e-3.
    phi = 0.35
    _sim("cr", phi=phi * u.GV, det_data_units=u.W).apply(data)
    values = np.concatenate([ob.detdata["cr"].data for ob in data.obs], axis=1)

    config = MCConfig()
    sampler = HitSampler(config, phi)
    uniforms = np.random.default_rng(14).random((200_000, HIT_UNIFORMS))
    deposits = sampler.hits("wafer", uniforms, 1.0).deposit_kev
    expected = (
        sampler.wafer_rate_hz * deposits.mean() * wafer_step_power_w_per_kev(config)
        * config.wafer.tau_wafer_s
    )
    # Detectors share the wafer hits, so the error of the observed mean comes from one
    # detector's means over 20 s stretches (382 samples). Pulses and filter forget within
    # ~1 s, so the 12 stretch means are nearly independent. That error is combined with
    # the error of the deposit mean; the test allows 5 sigma + 2e-3.
    first = values[0]
    blocks = first[: first.size // 382 * 382].reshape(-1, 382).mean(axis=1)
    error = np.hypot(blocks.std(ddof=1) / np.sqrt(blocks.size),
                     expected * deposits.std() / deposits.mean() / np.sqrt(deposits.size))
    assert abs(values.mean() - expected) < 5.0 * error + 2e-3 * expected
    assert values.mean() > 0.0


def test_sim_skips_flagged_detectors(data):
    ob = data.obs[0]
    flagged = ob.local_detectors[0]
    ob.update_local_detector_flags({flagged: defaults.det_mask_invalid})
    _sim("cr").apply(data)
    assert np.all(ob.detdata["cr"][flagged] == 0)
    assert np.all(ob.detdata["cr"][ob.local_detectors[1]] != 0)


def test_sim_skips_flagged_samples(data):
    mask = 4
    ob = data.obs[0]
    det = ob.local_detectors[0]
    ob.detdata[defaults.det_flags][det][100:200] |= mask
    _sim("full").apply(data)
    _sim("cut", det_flag_mask=mask).apply(data)
    cut = ob.detdata["cut"][det]
    full = ob.detdata["full"][det]
    assert np.all(cut[100:200] == 0)
    np.testing.assert_array_equal(cut[:100], full[:100])
    np.testing.assert_array_equal(cut[200:], full[200:])


def test_sim_detector_subset_matches_full(data):
    subset = list(data.obs[0].local_detectors[3:6])
    _sim("full").apply(data)
    _sim("part").apply(data, detectors=subset)
    for ob in data.obs:
        for det in subset:
            np.testing.assert_array_equal(ob.detdata["part"][det], ob.detdata["full"][det])
        assert set(ob.detdata["part"].detectors) == set(subset)


def test_sim_inside_pipeline(data):
    _sim("direct").apply(data)
    pipe = toast.ops.Pipeline(operators=[_sim("piped")], detector_sets=["SINGLE"])
    for ob in data.obs:  # SINGLE mode creates keys per detector; create them first
        ob.detdata.ensure("piped", create_units=u.K)
    pipe.apply(data)
    direct, piped = _copy(data, "direct"), _copy(data, "piped")
    for name in direct:
        np.testing.assert_array_equal(direct[name], piped[name])


def test_sim_units_follow_target_key(data):
    _sim("in_k").apply(data)
    for ob in data.obs:
        ob.detdata.ensure("in_mk", create_units=u.mK)
        ob.detdata.ensure("in_w", create_units=u.W)
        ob.detdata.ensure("in_fw", create_units=u.fW)
    for key in ("in_mk", "in_w", "in_fw"):
        _sim(key).apply(data)
    ob = data.obs[0]
    fp = ob.telescope.focalplane
    for det in ob.local_detectors[:3]:
        in_k = ob.detdata["in_k"][det]
        np.testing.assert_allclose(ob.detdata["in_mk"][det], 1e3 * in_k, rtol=1e-12)
        np.testing.assert_allclose(ob.detdata["in_fw"][det], 1e15 * ob.detdata["in_w"][det], rtol=1e-12)
        dpdt = dpdt_cmb(fp[det]["bandcenter"], fp[det]["bandwidth"]).to_value(u.W / u.K)
        np.testing.assert_allclose(in_k * dpdt, ob.detdata["in_w"][det], rtol=1e-12)


def test_sim_fixed_calibration_and_efficiency(data):
    _sim("in_w", det_data_units=u.W).apply(data)
    _sim("in_k", calibration=2.0e-13 * u.W / u.K).apply(data)
    _sim("full").apply(data)
    _sim("half", optical_efficiency=0.5).apply(data)
    for ob in data.obs:
        for det in ob.local_detectors:
            np.testing.assert_allclose(
                ob.detdata["in_k"][det] * 2.0e-13, ob.detdata["in_w"][det], rtol=1e-12
            )
            np.testing.assert_allclose(ob.detdata["half"][det], 2 * ob.detdata["full"][det], rtol=1e-12)


def test_sim_phi_sets_flux_level(data):
    _sim("low", phi=0.30 * u.GV, det_data_units=u.W).apply(data)
    _sim("high", phi=1.0 * u.GV, det_data_units=u.W).apply(data)
    low = np.concatenate([ob.detdata["low"].data.ravel() for ob in data.obs])
    high = np.concatenate([ob.detdata["high"].data.ravel() for ob in data.obs])
    # Flux ratio 0.32 between phi = 1.0 and 0.3 GV; harder spectra deposit slightly less,
    # so the mean power ratio is near 0.3. Means of ~12000 wafer hits: a 20 % window.
    assert high.mean() / low.mean() == pytest.approx(0.31, rel=0.2)


def test_sim_phi_date_matches_phi(data):
    date = "2032-06-01"
    phi = SolarCycleConfig().phi_gv(date)
    SimCosmicRayMC(det_data="dated", phi_date=date).apply(data)
    _sim("fixed", phi=phi * u.GV).apply(data)
    dated, fixed = _copy(data, "dated"), _copy(data, "fixed")
    for name in dated:
        np.testing.assert_array_equal(dated[name], fixed[name])


def test_sim_phi_date_observation_uses_session_start(data):
    ob = data.obs[0]
    SimCosmicRayMC(det_data="auto").apply(data)
    SimCosmicRayMC(det_data="given", phi_date=ob.session.start.isoformat()).apply(data)
    np.testing.assert_array_equal(ob.detdata["auto"].data, ob.detdata["given"].data)


def test_sim_wafer_column_separates_wafers(data):
    # Two wafers: detectors 0-7 on "W0", 8-13 on "W1". Wafer hits are shared only within
    # a wafer, so same-wafer detectors are correlated and cross-wafer ones are not.
    focalplane = data.obs[0].telescope.focalplane
    names = list(focalplane.detector_data["name"])
    focalplane.detector_data.add_column(
        Column(name="wafer", data=["W0" if i < 8 else "W1" for i in range(len(names))])
    )
    _sim("cr", det_data_units=u.W).apply(data)
    values = np.concatenate([ob.detdata["cr"].data for ob in data.obs], axis=1)
    correlation = np.corrcoef(values)
    same = [correlation[i, j] for i in range(14) for j in range(i + 1, 14) if (i < 8) == (j < 8)]
    cross = [correlation[i, j] for i in range(8) for j in range(8, 14)]
    # Same wafer: most of the response is common (> 0.5 observed ~0.8). Different wafers:
    # independent series, |r| < 5 sqrt(3 / 4584) = 0.13.
    assert min(same) > 0.3
    assert max(abs(value) for value in cross) < 0.13


def test_sim_identical_positions_share_wafer_response(data):
    # Detectors A and B of a pixel sit at the same position: their wafer responses are
    # equal, so they differ only where an island hit one of them.
    _sim("cr").apply(data)
    ob = data.obs[0]
    first, second = ob.local_detectors[:2]
    difference = ob.detdata["cr"][first] * 1.0 - ob.detdata["cr"][second]
    fp = ob.telescope.focalplane
    ratio = (dpdt_cmb(fp[first]["bandcenter"], fp[first]["bandwidth"])
             / dpdt_cmb(fp[second]["bandcenter"], fp[second]["bandwidth"])).value
    assert ratio == pytest.approx(1.0)
    assert np.mean(np.abs(difference) < 1e-6 * np.abs(ob.detdata["cr"][first])) > 0.9


# ---------------------------------------------------------------- bad input


def _assert_untouched(data, key, before):
    after = _copy(data, key)
    for name, values in before.items():
        np.testing.assert_array_equal(after[name], values)


@pytest.fixture
def filled(data):
    """Data with a non-zero 'signal' to check that failures leave it as it was."""
    rng = np.random.default_rng(5)
    for ob in data.obs:
        ob.detdata["signal"].data[:] = rng.normal(size=ob.detdata["signal"].data.shape)
    return data, _copy(data, "signal")


def test_non_physical_units_rejected(filled):
    data, before = filled
    for ob in data.obs:
        ob.detdata.ensure("counts", create_units=u.ct)
    with pytest.raises(ValueError, match="units ct: they are neither power nor temperature"):
        _sim("counts").apply(data)
    for ob in data.obs:
        assert np.all(ob.detdata["counts"].data == 0)
    _assert_untouched(data, "signal", before)


def test_internal_rate_not_above_detector_rate_rejected(filled):
    data, before = filled
    with pytest.raises(ValueError, match="internal MC rate 15.0 Hz is not above the sample rate 19.1 Hz"):
        _sim("signal", internal_rate=15.0 * u.Hz).apply(data)
    _assert_untouched(data, "signal", before)


def test_plate_scale_too_large_rejected(filled):
    data, before = filled
    with pytest.raises(ValueError, match="more than the wafer side 0.1 m"):
        _sim("signal", plate_scale=50 * u.mm / u.deg).apply(data)
    _assert_untouched(data, "signal", before)


def test_missing_config_file_rejected(filled, tmp_path):
    data, before = filled
    with pytest.raises(FileNotFoundError, match="none.toml"):
        _sim("signal", mc_config=str(tmp_path / "none.toml")).apply(data)
    _assert_untouched(data, "signal", before)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[readout]\nnep_w_per_rthz = 1e-17\n", "SimNoise"),
        ("[environment]\nphi_range_gv = [0.3, 0.6]\n", "phi_range_gv is set"),
        ("[environment]\nspecies = ['p', 'muon']\n", "unknown species 'muon'"),
        ("[detector]\nisland_area_m2 = 0.0\n", "island_area_m2 must be > 0"),
    ],
)
def test_bad_config_file_rejected(filled, tmp_path, text, match):
    data, before = filled
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        _sim("signal", mc_config=str(path)).apply(data)
    _assert_untouched(data, "signal", before)


def test_missing_band_columns_rejected(filled):
    data, before = filled
    data.obs[0].telescope.focalplane.detector_data.remove_column("bandcenter")
    with pytest.raises(ValueError, match="no column \\['bandcenter'\\].*calibration"):
        _sim("signal").apply(data)
    _assert_untouched(data, "signal", before)


def test_missing_flag_key_rejected(filled):
    data, before = filled
    with pytest.raises(KeyError, match="no detector flags 'nope'"):
        _sim("signal", det_flags="nope", det_flag_mask=1).apply(data)
    _assert_untouched(data, "signal", before)


def test_phi_date_set_later_rejected(filled):
    data, before = filled
    op = SimCosmicRayMC(det_data="signal")
    with pytest.raises(traitlets.TraitError, match="'June 2032' is not an ISO 8601 date"):
        op.phi_date = "June 2032"
    op.apply(data)  # the rejected value left the valid default in place
    assert not np.array_equal(_copy(data, "signal")[next(iter(before))], next(iter(before.values())))


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("phi", -0.1 * u.GV, "phi must be >= 0 GV"),
        ("phi", 0.35 * u.K, "electric potential"),
        ("phi_date", "2032/06/01", "is not an ISO 8601 date"),
        ("realization", -1, "realization must be in"),
        ("component", 2**24, "component must be in"),
        ("block_length", 0, "block_length must be at least 1"),
        ("internal_rate", 0.0 * u.Hz, "positive frequency"),
        ("plate_scale", 1.0 * u.mm, "length per angle"),
        ("optical_efficiency", 0.0, "optical_efficiency must be in"),
        ("calibration", 1.0 * u.K, "power per temperature"),
        ("det_flag_mask", -2, "non-negative"),
    ],
)
def test_bad_trait_values_rejected(trait, value, message):
    with pytest.raises(traitlets.TraitError, match=message):
        SimCosmicRayMC(**{trait: value})


def test_requires_and_provides():
    op = SimCosmicRayMC(det_data="cr", det_flag_mask=1, det_flags="myflags")
    assert op.requires()["detdata"] == ["cr", "myflags"]
    assert op.requires()["shared"] == [defaults.times]
    assert op.provides()["detdata"] == ["cr"]
    assert SimCosmicRayMC(det_data="cr").requires()["detdata"] == ["cr"]
