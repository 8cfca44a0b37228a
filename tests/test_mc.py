"""Tests of the reference cosmic-ray MC (toast_crab.mc): physics, sampling, timelines, config."""

import dataclasses

import numpy as np
import pytest

from toast_crab.mc import (
    DetectorConfig,
    EnvironmentConfig,
    MCConfig,
    MCWarning,
    ReadoutConfig,
    WaferConfig,
    omnidirectional_flux_cm2_s,
    simulate_timestream,
    simulate_training_chunks,
)
from toast_crab.mc.deposit import (
    MATERIALS,
    landau_phi,
    mean_energy_loss_mev_cm2_g,
    most_probable_deposit_kev,
    sample_deposits_kev,
    sample_isotropic_tracks,
)
from toast_crab.mc.deposit import _landau_table
from toast_crab.mc.readout import Decimator, ExponentialPulseSynthesizer
from toast_crab.mc.response import (
    island_peak_power_w_per_kev,
    wafer_heat_capacity_j_per_k,
    wafer_response_w,
    wafer_step_power_w_per_kev,
)

PROTON_MASS_GEV = 0.938272
HELIUM_NUCLEON_MASS_GEV = 3.727379 / 4.0
SILICON = MATERIALS["Si"]


def _protons(n, energy_gev):
    return np.ones(n), np.full(n, energy_gev), np.full(n, PROTON_MASS_GEV), np.ones(n)


# --- Environment ---------------------------------------------------------------------------


def test_flux_deep_minimum_matches_planck():
    # Planck 2013 X (A&A 571, A10): ~5 cm^-2 s^-1 above ~40 MeV at L2 in 2009-2010; the model
    # tolerance is 20 % (uncertainty of the measured value and of the force-field model).
    flux = omnidirectional_flux_cm2_s(EnvironmentConfig(), phi_gv=0.30)
    total = flux["p"] + flux["He"]
    assert total == pytest.approx(5.0, rel=0.20)


def test_flux_decreases_with_phi():
    environment = EnvironmentConfig()
    totals = [
        sum(omnidirectional_flux_cm2_s(environment, phi_gv=phi).values())
        for phi in (0.25, 0.30, 0.40, 0.60, 1.00)
    ]
    assert np.all(np.diff(totals) < 0.0)


def test_flux_ratio_solar_max_to_min():
    # Expected ratio 0.32 between phi = 1.0 and 0.3 GV for this LIS; 30 % tolerance.
    environment = EnvironmentConfig()
    low = sum(omnidirectional_flux_cm2_s(environment, phi_gv=0.30).values())
    high = sum(omnidirectional_flux_cm2_s(environment, phi_gv=1.00).values())
    assert high / low == pytest.approx(0.32, rel=0.30)


def test_flux_helium_above_100_mev():
    # Geant4 cosmicray_charging solar-minimum 4He table (Vannuccini 2001): 0.315 cm^-2 s^-1
    # above 100 MeV/n; k_He = 0.117 was fitted to it at phi = 0.40 GV (15 % tolerance).
    environment = EnvironmentConfig(cutoff_energy_mev_per_nucleon=100.0)
    flux = omnidirectional_flux_cm2_s(environment, phi_gv=0.40)
    assert flux["He"] == pytest.approx(0.315, rel=0.15)


def test_energy_sampler_follows_integral_flux():
    from toast_crab.mc.environment import SpectrumSampler

    sampler = SpectrumSampler(EnvironmentConfig(), phi_gv=0.35)
    rng = np.random.default_rng(11)
    energy = sampler.sample_energy(np.zeros(200_000, dtype=int), rng)
    above = omnidirectional_flux_cm2_s(
        EnvironmentConfig(cutoff_energy_mev_per_nucleon=1000.0), phi_gv=0.35
    )["p"]
    expected = above / sampler.flux_cm2_s[0]
    # Binomial error of a fraction from 2e5 draws: sqrt(p (1-p) / n) ~ 1.1e-3; allow 5 sigma.
    sigma = np.sqrt(expected * (1.0 - expected) / energy.size)
    assert abs(np.mean(energy > 1.0) - expected) < 5.0 * sigma
    assert energy.min() >= 0.040


def test_species_fractions_follow_fluxes():
    from toast_crab.mc.environment import SpectrumSampler

    sampler = SpectrumSampler(EnvironmentConfig(), phi_gv=0.35)
    index = sampler.sample_species(np.random.default_rng(5), 100_000)
    expected = sampler.flux_cm2_s[1] / sampler.total_flux_cm2_s
    sigma = np.sqrt(expected * (1.0 - expected) / index.size)
    assert abs(np.mean(index == 1) - expected) < 5.0 * sigma


# --- Energy deposit ------------------------------------------------------------------------


def test_bethe_minimum_ionising_silicon():
    # PDG: minimum ionisation in Si 1.664 MeV cm^2 g^-1; 0.5 % covers the PDG rounding.
    betagamma = np.geomspace(1.0, 30.0, 3000)
    energy = PROTON_MASS_GEV * (np.sqrt(1.0 + betagamma**2) - 1.0)
    loss = mean_energy_loss_mev_cm2_g(SILICON, 1, energy, PROTON_MASS_GEV, 1)
    assert loss.min() == pytest.approx(1.664, rel=0.005)


def test_mip_most_probable_300um():
    # Landau-Vavilov-Bichsel most probable loss of a 3 GeV proton in 300 um Si: ~79 keV.
    value = most_probable_deposit_kev(SILICON, 1, 3.0, PROTON_MASS_GEV, 1, 300.0e-6)
    assert value == pytest.approx(79.0, rel=0.05)
    thick = most_probable_deposit_kev(SILICON, 1, 3.0, PROTON_MASS_GEV, 1, 500.0e-6)
    assert thick == pytest.approx(136.0, rel=0.05)


def test_mip_sampled_mode_300um():
    rng = np.random.default_rng(3)
    deposits = sample_deposits_kev(rng, SILICON, *_protons(200_000, 3.0), np.full(200_000, 300e-6))
    counts, edges = np.histogram(deposits, bins=np.arange(40.0, 160.0, 2.0))
    mode = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    # ~1.9e4 draws per 2 keV bin near the peak (Poisson 0.7 %), so the modal bin is off by at
    # most one bin (2.5 %); 5 % tolerance.
    assert mode == pytest.approx(79.0, rel=0.05)


def test_deposit_mean_equals_bethe_mean():
    rng = np.random.default_rng(4)
    n = 200_000
    deposits = sample_deposits_kev(rng, SILICON, *_protons(n, 3.0), np.full(n, 300e-6))
    expected = mean_energy_loss_mev_cm2_g(SILICON, 1, 3.0, PROTON_MASS_GEV, 1) * 2.329 * 0.03e3
    # The truncated Landau has finite variance; 5 standard errors of the sample mean.
    assert abs(deposits.mean() - expected) < 5.0 * deposits.std() / np.sqrt(n)


def test_mean_loss_scales_with_charge_squared():
    proton = mean_energy_loss_mev_cm2_g(SILICON, 1, 1.0, PROTON_MASS_GEV, 1)
    helium = mean_energy_loss_mev_cm2_g(SILICON, 2, 1.0, HELIUM_NUCLEON_MASS_GEV, 4)
    # Equal energy per nucleon is nearly equal beta gamma; W_max differs slightly (0.5 %).
    assert helium / proton == pytest.approx(4.0, rel=0.01)


def test_deposit_median_scales_with_charge_squared():
    rng = np.random.default_rng(8)
    n = 100_000
    path = np.full(n, 500e-6)
    proton = sample_deposits_kev(rng, SILICON, *_protons(n, 1.0), path)
    helium = sample_deposits_kev(
        rng, SILICON, np.full(n, 2.0), np.ones(n), np.full(n, HELIUM_NUCLEON_MASS_GEV),
        np.full(n, 4.0), path,
    )
    # Landau width grows as z^2 and the most probable loss slightly faster (log xi term):
    # the median ratio is 4.0-4.6 in this model.
    assert 4.0 <= np.median(helium) / np.median(proton) <= 4.6


def test_deposit_clipped_to_kinetic_energy():
    rng = np.random.default_rng(9)
    n = 1000
    # 40 MeV protons along a 5 cm grazing path lose more than their energy.
    deposits = sample_deposits_kev(rng, SILICON, *_protons(n, 0.040), np.full(n, 0.05))
    assert np.all(deposits == pytest.approx(40_000.0))


def test_landau_quantiles():
    # Quantiles of Landau's phi(lambda): 5 % -1.498, 50 % 1.356, 90 % 11.65.
    distribution = landau_phi()
    assert distribution.ppf([0.05, 0.5, 0.9]) == pytest.approx([-1.498, 1.356, 11.65], rel=0.005)
    samples = _landau_table().sample(np.random.default_rng(2), np.full(1_000_000, 1.0e6))
    # Quantile standard error sqrt(q (1-q) / n) / pdf ~ 3e-3 at the median; 0.5 % tolerance at
    # the 50 % and 90 % points, 0.02 absolute at the 5 % point.
    assert np.quantile(samples, 0.5) == pytest.approx(1.356, rel=0.005)
    assert np.quantile(samples, 0.9) == pytest.approx(11.65, rel=0.01)
    assert np.quantile(samples, 0.05) == pytest.approx(-1.498, abs=0.02)


# --- Geometry ------------------------------------------------------------------------------


def test_slab_chord_statistics():
    rng = np.random.default_rng(1)
    thickness = 1.0e-4
    _, _, mu, path = sample_isotropic_tracks(rng, 1_000_000, 1.0, thickness)
    # mu ~ 2 mu on (0, 1]: mean 2/3, standard error 0.236 / 1000.
    assert mu.mean() == pytest.approx(2.0 / 3.0, abs=5 * 0.236e-3)
    # Median chord sqrt(2) t; the median is robust, 1 % tolerance.
    assert np.median(path) / thickness == pytest.approx(np.sqrt(2.0), rel=0.01)
    # Mean chord 2 t (Cauchy 4 V / S). p(L) = 2 t^2 / L^3 has a log-divergent variance, so
    # the sample mean scatters by ~0.5 % for 1e6 tracks; the side cut at 1e4 t removes ~0.1 %.
    assert path.mean() / thickness == pytest.approx(2.0, rel=0.02)


def test_chord_cut_at_side_face():
    rng = np.random.default_rng(6)
    _, _, _, path = sample_isotropic_tracks(rng, 100_000, 0.01, 5.0e-4)
    assert path.max() <= np.sqrt(2.0) * 0.01 * (1 + 1e-9)


# --- Response and readout ------------------------------------------------------------------


def test_response_derived_values():
    config = MCConfig()
    detector = config.detector
    assert detector.loop_gain == pytest.approx(16.0, rel=0.01)
    assert detector.conductance_w_per_k == pytest.approx(28.5e-12, rel=0.01)
    assert detector.bath_conductance_w_per_k == pytest.approx(9.75e-12, rel=0.01)
    assert detector.island_heat_capacity_j_per_k == pytest.approx(1.9e-12, rel=0.03)
    # Debye heat capacity of a 10 x 10 x 0.05 cm Si wafer at 0.1 K: 3.0e-9 J/K, times
    # the default multiplier for the parts coupled to the wafer.
    debye = wafer_heat_capacity_j_per_k(config.wafer, 0.1) / config.wafer.heat_capacity_multiplier
    assert debye == pytest.approx(3.0e-9, rel=0.02)
    # A 0.2 keV island hit peaks at 7.5 fW.
    assert 0.2 * island_peak_power_w_per_kev(detector) == pytest.approx(7.5e-15, rel=0.02)


def test_wafer_response_area():
    config = MCConfig()
    time_s = np.linspace(0.0, 1.0, 400_001)
    response = wafer_response_w(time_s, 300.0, config)
    area = np.trapezoid(response, time_s)
    expected = 300.0 * wafer_step_power_w_per_kev(config) * config.wafer.tau_wafer_s
    assert area == pytest.approx(expected, rel=1e-4)


def test_synthesizer_bin_averages_exact():
    rate_hz = 1000.0
    tau_s = 3.0e-3
    synth = ExponentialPulseSynthesizer(1, [tau_s], rate_hz)
    start_s = 0.01234
    signal = synth.render(100, [(np.array([start_s]), np.array([0]), np.array([2.0]))])[0]
    edges = np.arange(101) / rate_hz
    upper = np.exp(-np.clip(edges[1:] - start_s, 0.0, None) / tau_s)
    lower = np.exp(-np.clip(edges[:-1] - start_s, 0.0, None) / tau_s)
    expected = 2.0 * tau_s * rate_hz * (lower - upper)
    assert signal == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_synthesizer_blocks_match_single_block():
    rng = np.random.default_rng(12)
    times = rng.uniform(0.0, 0.2, 50)
    amplitudes = rng.normal(size=50)
    channels = rng.integers(0, 2, 50)
    whole = ExponentialPulseSynthesizer(2, [2e-3, 9e-3], 1000.0)
    expected = whole.render(200, [(times, channels, amplitudes), (times, channels, -amplitudes)])
    split = ExponentialPulseSynthesizer(2, [2e-3, 9e-3], 1000.0)
    parts = []
    for low, high in ((0.0, 0.05), (0.05, 0.2)):
        select = (times >= low) & (times < high)
        pulses = (times[select] - low, channels[select], amplitudes[select])
        negative = (pulses[0], pulses[1], -pulses[2])
        parts.append(split.render(int(round((high - low) * 1000)), [pulses, negative]))
    assert np.concatenate(parts, axis=1) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_decimator_length_and_dc_gain():
    readout = ReadoutConfig()
    decimator = Decimator(1, readout)
    output = decimator.process(np.ones((1, 64 * 500)))
    assert output.shape == (1, 500)
    assert output[0, -100:] == pytest.approx(1.0, rel=1e-6)


# --- Timelines and chunks ------------------------------------------------------------------


def _small_config(**readout):
    """A fast configuration: 2 cm wafer (about 10 hits per second)."""
    return MCConfig(wafer=WaferConfig(wafer_side_m=0.02), readout=ReadoutConfig(**readout))


def test_timestream_length_and_rate():
    config = _small_config(sample_rate_hz=10.0, internal_rate_hz=2000.0)
    result = simulate_timestream(config, 777, np.random.default_rng(0), n_detectors=3)
    assert result.power_w.shape == (3, 777)
    assert result.power_w.dtype == np.float64
    assert result.sample_rate_hz == 10.0


def test_counted_hit_rates_match_flux():
    config = MCConfig(
        wafer=WaferConfig(wafer_side_m=0.03),
        detector=DetectorConfig(island_area_m2=2.0e-5),
    )
    n_samples = 20_000
    result = simulate_timestream(config, n_samples, np.random.default_rng(21), n_detectors=4)
    duration_s = n_samples / config.readout.sample_rate_hz
    flux = sum(omnidirectional_flux_cm2_s(config.environment).values())
    wafer_expected = 0.5 * flux * 9.0 * duration_s
    island_expected = 0.5 * flux * 0.2 * duration_s
    assert result.wafer_rate_hz * duration_s == pytest.approx(wafer_expected, rel=1e-12)
    # Poisson counts: 5 sigma = 5 sqrt(expected).
    assert abs(result.n_wafer_hits - wafer_expected) < 5.0 * np.sqrt(wafer_expected)
    for count in result.n_direct_hits:
        assert abs(count - island_expected) < 5.0 * np.sqrt(island_expected)


def test_timestream_mean_matches_rate_times_area():
    config = MCConfig(wafer=WaferConfig(near_field_fraction=0.0))
    result = simulate_training_chunks(config, 40, seed=13, n_runs=1)
    rng = np.random.default_rng(14)
    from toast_crab.mc.environment import SpectrumSampler

    sampler = SpectrumSampler(config.environment)
    n = 400_000
    index = sampler.sample_species(rng, n)
    _, _, _, path = sample_isotropic_tracks(rng, n, 0.1, 5e-4)
    deposits = sample_deposits_kev(
        rng, SILICON, sampler.charge[index], sampler.sample_energy(index, rng),
        sampler.nucleon_mass_gev[index], sampler.mass_number[index], path,
    )
    rate_hz = 0.5 * sampler.total_flux_cm2_s * 100.0
    # Mean of the wafer term: rate x mean deposit x B x tau_w (pulse area B tau_w per keV).
    expected = (
        rate_hz * deposits.mean() * wafer_step_power_w_per_kev(config) * config.wafer.tau_wafer_s
    )
    chunk_means = result.chunks.mean(axis=1)
    # Chunks are 55 s long against 10 ms tails, so chunk means are nearly independent. The
    # error combines their scatter / sqrt(40) with the deposit-mean error; allow 5 sigma.
    error = chunk_means.std() / np.sqrt(chunk_means.size)
    error = np.hypot(error, expected * deposits.std() / deposits.mean() / np.sqrt(n))
    # Island hits add ~1e-3 of the mean (0.0015 s^-1 x 0.5 keV vs 230 s^-1 x 700 keV x 3e-3).
    assert abs(chunk_means.mean() - expected) < 5.0 * error + 2e-3 * expected


def test_same_seed_same_output():
    config = _small_config()
    first = simulate_training_chunks(config, 6, chunk_length=200, seed=42, n_runs=2)
    second = simulate_training_chunks(config, 6, chunk_length=200, seed=42, n_runs=2)
    assert np.array_equal(first.chunks, second.chunks)
    for name, value in first.labels.items():
        assert np.array_equal(value, second.labels[name]), name


def test_different_seeds_uncorrelated():
    config = _small_config()
    first = simulate_training_chunks(config, 10, chunk_length=1060, seed=1).chunks.ravel()
    second = simulate_training_chunks(config, 10, chunk_length=1060, seed=2).chunks.ravel()
    assert not np.array_equal(first, second)
    # Samples decorrelate within a few samples, so the correlation coefficient of two
    # independent series of 10600 samples has sigma ~ sqrt(3 / 10600) ~ 0.017; 5 sigma.
    assert abs(np.corrcoef(first, second)[0, 1]) < 0.085


def test_chunks_are_adjacent_pieces_of_runs():
    config = _small_config()
    result = simulate_training_chunks(config, 5, chunk_length=300, seed=7, n_runs=2)
    assert result.chunks.shape == (5, 300)
    assert list(result.labels["run_id"]) == [0, 0, 0, 1, 1]
    assert list(result.labels["chunk_index"]) == [0, 1, 2, 0, 1]
    run_seed = np.random.SeedSequence(7).spawn(2)[0]
    timeline = simulate_timestream(
        config, 900, np.random.default_rng(run_seed), block_samples=300
    )
    assert np.array_equal(timeline.power_w[0], result.chunks[:3].ravel())
    assert result.labels["start_time_s"][1] == pytest.approx(300 / 19.1)


def test_workers_give_same_chunks():
    config = _small_config()
    serial = simulate_training_chunks(config, 4, chunk_length=100, seed=3, n_runs=2)
    parallel = simulate_training_chunks(config, 4, chunk_length=100, seed=3, n_runs=2, n_workers=2)
    assert np.array_equal(serial.chunks, parallel.chunks)


def test_joule_convention_flips_sign():
    optical = simulate_training_chunks(_small_config(), 2, chunk_length=200, seed=5)
    joule = simulate_training_chunks(
        _small_config(sign_convention="joule"), 2, chunk_length=200, seed=5
    )
    assert np.array_equal(joule.chunks, -optical.chunks)
    assert optical.chunks.mean() > 0.0


def test_phi_range_drawn_per_run():
    config = MCConfig(
        environment=EnvironmentConfig(phi_range_gv=(0.3, 0.6)),
        wafer=WaferConfig(wafer_side_m=0.02),
    )
    result = simulate_training_chunks(config, 4, chunk_length=50, seed=9, n_runs=4)
    phi = result.labels["phi_gv"]
    assert np.all((phi >= 0.3) & (phi <= 0.6))
    assert np.unique(phi).size == 4


def test_group_of_detectors_shape_and_correlation():
    config = MCConfig(wafer=WaferConfig(near_field_fraction=0.3))
    result = simulate_training_chunks(config, 2, chunk_length=1060, seed=4, n_detectors=8)
    assert result.chunks.shape == (2, 8, 1060)
    # Wafer hits dominate and are shared: neighbouring detectors are strongly correlated.
    correlation = np.corrcoef(result.chunks[0])
    assert correlation[0, 4] > 0.5


def test_white_noise_level():
    # NEP 1e-13 W/sqrt(Hz) gives 3e-13 W per sample, far above the CR signal (~1e-15 W).
    config = MCConfig(readout=ReadoutConfig(nep_w_per_rthz=1.0e-13))
    result = simulate_training_chunks(config, 10, seed=6)
    expected = 1.0e-13 * np.sqrt(19.1 / 2.0)
    # 10600 Gaussian samples: relative error of the std 1 / sqrt(2 n) ~ 0.7 %; 5 sigma.
    assert result.chunks.std() == pytest.approx(expected, rel=0.035)


# --- Configuration -------------------------------------------------------------------------


def test_config_round_trip():
    config = MCConfig(environment=EnvironmentConfig(phi_range_gv=(0.3, 0.5), species=("p",)))
    assert MCConfig.from_dict(config.to_dict()) == config


def test_config_toml_example_is_default():
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "mc_default.toml"
    assert MCConfig.from_toml(path) == MCConfig()


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: EnvironmentConfig(phi_gv=-0.1), ValueError, "phi_gv must be >= 0"),
        (lambda: EnvironmentConfig(phi_gv="high"), TypeError, "phi_gv must be a real number"),
        (lambda: EnvironmentConfig(species=("p", "muon")), ValueError, "unknown species 'muon'"),
        (lambda: EnvironmentConfig(species="p"), TypeError, "list of species"),
        (lambda: EnvironmentConfig(phi_range_gv=(0.6, 0.3)), ValueError, "0 <= min <= max"),
        (lambda: DetectorConfig(island_area_m2=0.0), ValueError, "island_area_m2 must be > 0"),
        (lambda: DetectorConfig(tau_eff_s=-1e-3), ValueError, "tau_eff_s must be > 0"),
        (lambda: DetectorConfig(critical_temperature_k=0.09), ValueError, "above bath"),
        (lambda: DetectorConfig(island_material="Au"), ValueError, "island_material"),
        (lambda: WaferConfig(wafer_side_m=0.0), ValueError, "wafer_side_m must be > 0"),
        (lambda: WaferConfig(tau_wafer_s=0.0), ValueError, "tau_wafer_s must be > 0"),
        (lambda: WaferConfig(near_field_fraction=1.5), ValueError, r"in \[0, 1\]"),
        (
            lambda: ReadoutConfig(sample_rate_hz=2000.0, internal_rate_hz=1000.0),
            ValueError,
            "is above internal_rate_hz",
        ),
        (lambda: ReadoutConfig(internal_rate_hz=1000.0), ValueError, "integer multiple"),
        (lambda: ReadoutConfig(antialias_cutoff_fraction=0.6), ValueError, r"\(0, 0.5\)"),
        (lambda: ReadoutConfig(sign_convention="up"), ValueError, "sign_convention"),
        (
            lambda: MCConfig(wafer=WaferConfig(tau_wafer_s=4.0e-3)),
            ValueError,
            "distinct time constants",
        ),
        (lambda: MCConfig.from_dict({"readout": {"rate": 1}}), ValueError, "unknown key"),
        (lambda: MCConfig.from_dict({"optics": {}}), ValueError, "unknown MC configuration"),
    ],
)
def test_config_rejects_bad_values(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_config_warns_on_coarse_internal_grid():
    with pytest.warns(MCWarning, match="internal_rate_hz"):
        MCConfig(readout=ReadoutConfig(internal_rate_hz=8 * 19.1))


def test_config_missing_toml(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        MCConfig.from_toml(tmp_path / "missing.toml")


def test_simulate_rejects_bad_arguments():
    config = _small_config()
    with pytest.raises(ValueError, match="n_runs"):
        simulate_training_chunks(config, 2, n_runs=3)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        simulate_timestream(config, 10, rng=1)
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        simulate_timestream(config, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="span"):
        simulate_timestream(config, 10, np.random.default_rng(0), n_detectors=100)


def test_config_is_frozen():
    config = MCConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.environment.phi_gv = 1.0


def test_mc_imports_without_toast_or_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, toast_crab.mc, toast_crab.mc.cli; "
        "print(sorted(m for m in ('toast', 'tensorflow', 'keras') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert completed.stdout.strip() == "[]"
