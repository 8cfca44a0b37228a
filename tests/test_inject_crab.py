"""InjectCRAB on one process: injection contract, keys, units, flags and bad input."""

import os

import numpy as np
import pytest
import toast.ops
from astropy import units as u
from toast.observation import default_values as defaults

from helpers import (
    create_comm,
    create_satellite_data,
    edit_card,
    write_tiny_bundle,
)
from toast_crab.bundle import BundleError
from toast_crab.calibration import dpdt_cmb
from toast_crab.ops import InjectCRAB


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture
def data():
    data = create_satellite_data(create_comm(None))
    yield data
    data.clear()


def _copy(data, key):
    return {(ob.name, str(det)): np.array(ob.detdata[key][det])
            for ob in data.obs for det in ob.local_detectors}


def test_inject_adds_to_existing_signal(bundle_path, data):
    rng = np.random.default_rng(11)
    for ob in data.obs:
        ob.detdata.ensure("total", create_units=u.K)
        ob.detdata["total"].data[:] = rng.normal(0, 1e-3, ob.detdata["total"].data.shape)
    before = _copy(data, "total")

    InjectCRAB(model=bundle_path, det_data="total").apply(data)
    InjectCRAB(model=bundle_path, det_data="cr_only").apply(data)

    after = _copy(data, "total")
    cr_only = _copy(data, "cr_only")
    for name in before:
        assert np.any(cr_only[name] != 0)
        np.testing.assert_allclose(after[name], before[name] + cr_only[name], rtol=0, atol=1e-15)


def test_inject_same_realization_repeats(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="a", realization=4).apply(data)
    InjectCRAB(model=bundle_path, det_data="b", realization=4).apply(data)
    a, b = _copy(data, "a"), _copy(data, "b")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_inject_realizations_independent(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="a", realization=0).apply(data)
    InjectCRAB(model=bundle_path, det_data="b", realization=1).apply(data)
    a = np.concatenate(list(_copy(data, "a").values()))
    b = np.concatenate(list(_copy(data, "b").values()))
    assert not np.any(a == b)
    # Independent streams: |r| of n ~ 1.3e5 samples is ~ 1/sqrt(n) = 0.003; since
    # samples inside a chunk are correlated the effective n is smaller, so allow 0.05.
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05


def test_inject_detectors_get_distinct_streams(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="cr").apply(data)
    ob = data.obs[0]
    first, second = ob.local_detectors[:2]
    assert not np.any(ob.detdata["cr"][first] == ob.detdata["cr"][second])


def test_inject_skips_flagged_detectors(bundle_path, data):
    ob = data.obs[0]
    flagged = ob.local_detectors[0]
    ob.update_local_detector_flags({flagged: defaults.det_mask_invalid})
    InjectCRAB(model=bundle_path, det_data="cr").apply(data)
    assert np.all(ob.detdata["cr"][flagged] == 0)
    assert np.any(ob.detdata["cr"][ob.local_detectors[1]] != 0)


def test_inject_detector_subset(bundle_path, data):
    subset = list(data.obs[0].local_detectors[2:4])
    InjectCRAB(model=bundle_path, det_data="full").apply(data)
    InjectCRAB(model=bundle_path, det_data="part").apply(data, detectors=subset)
    for ob in data.obs:
        for det in subset:
            np.testing.assert_array_equal(ob.detdata["part"][det], ob.detdata["full"][det])
        assert set(ob.detdata["part"].detectors) == set(subset)


def test_inject_skips_flagged_samples(bundle_path, data):
    mask = 4
    ob = data.obs[0]
    det = ob.local_detectors[0]
    ob.detdata[defaults.det_flags][det][100:200] |= mask
    InjectCRAB(model=bundle_path, det_data="full").apply(data)
    InjectCRAB(model=bundle_path, det_data="cut", det_flag_mask=mask).apply(data)
    cut = ob.detdata["cut"][det]
    full = ob.detdata["full"][det]
    assert np.all(cut[100:200] == 0)
    np.testing.assert_array_equal(cut[:100], full[:100])
    np.testing.assert_array_equal(cut[200:], full[200:])


def test_inject_inside_pipeline(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="direct").apply(data)
    pipe = toast.ops.Pipeline(
        operators=[InjectCRAB(model=bundle_path, det_data="piped")],
        detector_sets=["SINGLE"],
    )
    for ob in data.obs:  # SINGLE mode creates keys per detector; create them first
        ob.detdata.ensure("piped", create_units=u.K)
    pipe.apply(data)
    direct, piped = _copy(data, "direct"), _copy(data, "piped")
    for name in direct:
        np.testing.assert_array_equal(direct[name], piped[name])


def test_inject_units_follow_target_key(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="in_k").apply(data)
    for ob in data.obs:
        ob.detdata.ensure("in_mk", create_units=u.mK)
        ob.detdata.ensure("in_w", create_units=u.W)
        ob.detdata.ensure("in_fw", create_units=u.fW)
    InjectCRAB(model=bundle_path, det_data="in_mk").apply(data)
    InjectCRAB(model=bundle_path, det_data="in_w").apply(data)
    InjectCRAB(model=bundle_path, det_data="in_fw").apply(data)
    ob = data.obs[0]
    fp = ob.telescope.focalplane
    for det in ob.local_detectors[:3]:
        in_k = ob.detdata["in_k"][det]
        np.testing.assert_allclose(ob.detdata["in_mk"][det], 1e3 * in_k, rtol=1e-12)
        np.testing.assert_allclose(ob.detdata["in_fw"][det], 1e15 * ob.detdata["in_w"][det], rtol=1e-12)
        dpdt = dpdt_cmb(fp[det]["bandcenter"], fp[det]["bandwidth"]).to_value(u.W / u.K)
        np.testing.assert_allclose(in_k * dpdt, ob.detdata["in_w"][det], rtol=1e-12)


def test_inject_fixed_calibration(bundle_path, data):
    cal = 2.0e-13 * u.W / u.K
    InjectCRAB(model=bundle_path, det_data="in_w", det_data_units=u.W).apply(data)
    InjectCRAB(model=bundle_path, det_data="in_k", calibration=cal).apply(data)
    for ob in data.obs:
        for det in ob.local_detectors:
            np.testing.assert_allclose(
                ob.detdata["in_k"][det] * 2.0e-13, ob.detdata["in_w"][det], rtol=1e-12
            )


def test_inject_optical_efficiency_scales(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="full").apply(data)
    InjectCRAB(model=bundle_path, det_data="half", optical_efficiency=0.5).apply(data)
    ob = data.obs[0]
    det = ob.local_detectors[0]
    np.testing.assert_allclose(ob.detdata["half"][det], 2 * ob.detdata["full"][det], rtol=1e-12)


def test_calibration_matches_known_value():
    # 140 GHz, 42 GHz wide, eta = 1: k_B * dnu * x^2 e^x / (e^x - 1)^2 at the band
    # centre gives 3.58e-13 W/K; the band integral differs from it by under 2 %.
    value = dpdt_cmb(140 * u.GHz, 42 * u.GHz).to_value(u.W / u.K)
    assert value == pytest.approx(3.58e-13, rel=0.02)
    # Rayleigh-Jeans limit: dP/dT -> k_B dnu at low frequency.
    low = dpdt_cmb(1 * u.GHz, 0.1 * u.GHz).to_value(u.W / u.K)
    assert low == pytest.approx(1.380649e-23 * 0.1e9, rel=2e-3)


def test_calibration_rejects_bad_band():
    with pytest.raises(ValueError, match="bandwidth"):
        dpdt_cmb(100 * u.GHz, 250 * u.GHz)
    with pytest.raises(ValueError, match="optical_efficiency"):
        dpdt_cmb(100 * u.GHz, 20 * u.GHz, optical_efficiency=1.5)


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


def test_missing_model_file_rejected(filled, tmp_path):
    data, before = filled
    missing = str(tmp_path / "nothing.keras")
    with pytest.raises(FileNotFoundError, match="nothing.keras.*not found"):
        InjectCRAB(model=missing).apply(data)
    _assert_untouched(data, "signal", before)


def test_unreadable_model_file_rejected(filled, tmp_path, bundle_path):
    data, before = filled
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras archive")
    card = os.path.splitext(bundle_path)[0] + ".json"
    (tmp_path / "broken.json").write_text(open(card).read())
    with pytest.raises(BundleError, match="could not be loaded by Keras"):
        InjectCRAB(model=str(broken)).apply(data)
    _assert_untouched(data, "signal", before)


def test_wrong_card_schema_rejected(filled, tmp_path):
    data, before = filled
    path = write_tiny_bundle(tmp_path, name="old")
    edit_card(path, schema_version=99)
    with pytest.raises(BundleError, match="schema_version 99"):
        InjectCRAB(model=path).apply(data)
    edit_card(path, schema_version=1, output_unit="K")
    with pytest.raises(BundleError, match="output_unit"):
        InjectCRAB(model=path).apply(data)
    _assert_untouched(data, "signal", before)


def test_card_not_json_rejected(filled, tmp_path):
    data, before = filled
    path = write_tiny_bundle(tmp_path, name="garbled")
    with open(os.path.splitext(path)[0] + ".json", "w") as handle:
        handle.write("{ not json")
    with pytest.raises(BundleError, match="not readable JSON"):
        InjectCRAB(model=path).apply(data)
    _assert_untouched(data, "signal", before)


def test_sample_rate_mismatch_rejected(filled, tmp_path):
    data, before = filled
    path = write_tiny_bundle(tmp_path, name="fast", sample_rate_hz=31.0)
    with pytest.raises(ValueError, match=r"sampled at 19.1 Hz but model 'fast' was trained at 31.0 Hz"):
        InjectCRAB(model=path).apply(data)
    _assert_untouched(data, "signal", before)


def test_non_physical_units_rejected(bundle_path, filled):
    data, before = filled
    for ob in data.obs:
        ob.detdata.ensure("counts", create_units=u.ct)
    with pytest.raises(ValueError, match="units ct: they are neither power nor temperature"):
        InjectCRAB(model=bundle_path, det_data="counts").apply(data)
    for ob in data.obs:
        assert np.all(ob.detdata["counts"].data == 0)
    _assert_untouched(data, "signal", before)


def test_missing_band_columns_rejected(bundle_path, filled):
    data, before = filled
    # Both observations share one telescope, so one removal covers them.
    data.obs[0].telescope.focalplane.detector_data.remove_column("bandcenter")
    with pytest.raises(ValueError, match="no column \\['bandcenter'\\].*calibration"):
        InjectCRAB(model=bundle_path).apply(data)
    _assert_untouched(data, "signal", before)


def test_missing_flag_key_rejected(bundle_path, filled):
    data, before = filled
    with pytest.raises(KeyError, match="no detector flags 'nope'"):
        InjectCRAB(model=bundle_path, det_flags="nope", det_flag_mask=1).apply(data)
    _assert_untouched(data, "signal", before)


@pytest.mark.parametrize(
    "trait, value, message",
    [
        ("realization", -1, "realization must be in"),
        ("component", 2**24, "component must be in"),
        ("batch_size", 0, "batch_size must be at least 1"),
        ("optical_efficiency", 0.0, "optical_efficiency must be in"),
        ("calibration", 1.0 * u.K, "power per temperature"),
        ("det_flag_mask", -2, "non-negative"),
    ],
)
def test_bad_trait_values_rejected(trait, value, message):
    with pytest.raises(Exception, match=message):
        InjectCRAB(**{trait: value})


def test_requires_and_provides():
    op = InjectCRAB(det_data="cr", det_flag_mask=1, det_flags="myflags")
    assert op.requires()["detdata"] == ["cr", "myflags"]
    assert op.provides()["detdata"] == ["cr"]
    assert InjectCRAB(det_data="cr").requires()["detdata"] == ["cr"]


def test_wafer_streams_shared_within_wafer(bundle_path, data):
    ob = data.obs[0]
    table = ob.telescope.focalplane.detector_data
    # Two wafers: the first half of the detectors on "w0", the rest on "w1".
    names = [str(name) for name in table["name"]]
    table["wafer"] = ["w0" if i < len(names) // 2 else "w1" for i in range(len(names))]
    InjectCRAB(model=bundle_path, det_data="shared", streams="wafer").apply(data)
    InjectCRAB(model=bundle_path, det_data="own").apply(data)
    first, second, last = names[0], names[1], names[-1]
    np.testing.assert_array_equal(ob.detdata["shared"][first], ob.detdata["shared"][second])
    assert not np.any(ob.detdata["shared"][first] == ob.detdata["shared"][last])
    assert not np.any(ob.detdata["shared"][first] == ob.detdata["own"][first])


def test_wafer_streams_without_wafer_column(bundle_path, data):
    InjectCRAB(model=bundle_path, det_data="shared", streams="wafer").apply(data)
    ob = data.obs[0]
    reference = ob.detdata["shared"][ob.local_detectors[0]]
    for det in ob.local_detectors[1:]:
        np.testing.assert_array_equal(ob.detdata["shared"][det], reference)


def test_unknown_streams_mode_rejected():
    with pytest.raises(Exception, match=r"streams must be one of \['detector', 'wafer'\]. Got 'pixel'"):
        InjectCRAB(streams="pixel")
