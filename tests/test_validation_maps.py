"""Map-level comparison: spectra statistics and a tiny TOAST run."""

import json
import os

import numpy as np
import pytest

from helpers import write_tiny_bundle
from toast_crab.mc import MCConfig
from toast_crab.validation.maps import (
    MapSetup,
    angular_spectra,
    compare_realizations,
    mc_config_toml,
    run_map_comparison,
)


def test_monopole_spectrum_full_sky():
    import healpy as hp

    nside = 8
    npix = hp.nside2npix(nside)
    iqu = np.zeros((3, npix))
    iqu[0] = 2.0
    cls = angular_spectra(iqu, np.ones(npix))
    # A constant map c has a_00 = c sqrt(4 pi), so C_0 = 4 pi c^2, and no power at
    # l > 0; the pixel quadrature of nside 8 is good to about 1e-4.
    assert cls[0, 0] == pytest.approx(4 * np.pi * 4.0, rel=1e-3)
    # Pixelization leaks about 1e-8 of the monopole into even l > 0.
    assert np.max(np.abs(cls[0, 1:])) < 1e-6 * cls[0, 0]
    assert np.max(np.abs(cls[1:])) < 1e-10


def test_spectra_need_observed_pixels():
    with pytest.raises(ValueError, match="no observed pixel"):
        angular_spectra(np.zeros((3, 768)), np.zeros(768))


def test_compare_same_and_shifted():
    rng = np.random.default_rng(np.random.SeedSequence(21))
    n_real, n_ell = 8, 40
    mc = rng.normal(1.0, 0.1, (n_real, 3, n_ell))
    same = rng.normal(1.0, 0.1, (n_real, 3, n_ell))
    rms_mc = rng.normal(1.0, 0.05, (n_real, 3))
    rms_same = rng.normal(1.0, 0.05, (n_real, 3))
    edges = np.arange(2, n_ell + 1, 8)
    result = compare_realizations(mc, same, rms_mc, rms_same, edges)
    for name in ("TT", "EE", "BB"):
        assert result[name]["n_bins"] == 4
        assert result[name]["passed"] is True
    # Doubling the BB power is many standard errors away in every bin.
    shifted = same.copy()
    shifted[:, 2] *= 2.0
    result = compare_realizations(mc, shifted, rms_mc, 2 * rms_same, edges)
    assert result["BB"]["passed"] is False
    assert result["TT"]["passed"] is True
    assert result["rms_I"]["passed"] is False


def test_compare_rms_scatter_checked():
    # Same mean RMS, ten times the realization scatter: the z test of the means alone
    # passes (|z| <= 1.5 here), while the F test on 7 and 7 degrees of freedom gives
    # p < 1e-3 for a variance ratio near 100.
    rng = np.random.default_rng(np.random.SeedSequence(22))
    n_real, n_ell = 8, 40
    mc = rng.normal(1.0, 0.1, (n_real, 3, n_ell))
    rms_mc = rng.normal(1.0, 0.05, (n_real, 3))
    rms_wide = 1.0 + 10.0 * (rng.normal(0.0, 0.05, (n_real, 3)))
    edges = np.arange(2, n_ell + 1, 8)
    result = compare_realizations(mc, mc, rms_mc, rms_wide, edges)
    for stokes in "IQU":
        assert result[f"rms_{stokes}"]["scatter_p_value"] < 0.01
        assert result[f"rms_{stokes}"]["passed"] is False
    same = compare_realizations(mc, mc, rms_mc, rng.normal(1.0, 0.05, (n_real, 3)), edges)
    assert all(same[f"rms_{stokes}"]["passed"] for stokes in "IQU")


def test_compare_needs_two_realizations():
    with pytest.raises(ValueError, match="at least 2 realizations"):
        compare_realizations(np.ones((1, 3, 10)), np.ones((3, 3, 10)), np.ones((1, 3)),
                             np.ones((3, 3)), np.array([2, 6, 10]))


def test_mc_config_toml_round_trip(tmp_path):
    config = MCConfig()
    path = tmp_path / "mc.toml"
    path.write_text(mc_config_toml(config.to_dict()))
    assert MCConfig.from_toml(str(path)).to_dict() == config.to_dict()


def test_map_setup_checked():
    with pytest.raises(ValueError, match="n_detectors must be even"):
        MapSetup(n_detectors=3)
    with pytest.raises(ValueError, match="nside must be a power of 2"):
        MapSetup(nside=12)


@pytest.mark.slow
def test_map_comparison_tiny_run(tmp_path):
    bundle = write_tiny_bundle(tmp_path, chunk_length=64)
    setup = MapSetup(n_detectors=2, obs_hours=0.2, nside=8, ell_bin_width=4)
    config = MCConfig().to_dict()
    config["environment"]["phi_gv"] = 0.35
    document, plot = run_map_comparison({"tiny": bundle}, config, setup, 3, str(tmp_path))
    assert plot == "maps.png"
    assert os.path.isfile(tmp_path / "maps.png")
    assert os.path.isfile(tmp_path / "maps" / "mc_0.fits")
    assert document["phi_gv"] == 0.35
    quantities = [row["quantity"] for row in document["rows"]]
    assert quantities == ["C_ell TT", "C_ell EE", "C_ell BB", "map RMS I", "map RMS Q", "map RMS U"]
    rms = np.array(document["map_rms_k"]["MC"])
    assert rms.shape == (3, 3)
    assert np.all(rms > 0)
    # The random-weight bundle makes noise of about 1e-17 W, far below the MC's
    # 0.2 fW mean wafer heating, so its intensity map RMS cannot match. With 3
    # realizations per side Welch's t has about 2 degrees of freedom; 2 would leave
    # too heavy a tail to reject even this difference at |z| > 3.
    assert document["comparisons"]["tiny"]["rms_I"]["passed"] is False
    assert document["comparisons"]["tiny"]["TT"]["passed"] is False
    json.dumps(document)
