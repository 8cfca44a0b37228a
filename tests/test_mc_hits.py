"""Tests of hits drawn from uniforms and of independently rendered time blocks (toast_crab.mc)."""

import numpy as np
import pytest

from toast_crab.mc import (
    HIT_UNIFORMS,
    BlockRenderer,
    EnvironmentConfig,
    HitSampler,
    MCConfig,
    WaferConfig,
    omnidirectional_flux_cm2_s,
    poisson_counts,
    simulate_timestream,
)
from toast_crab.mc.response import detector_positions_m

RATE_HZ = 19.1


def test_poisson_counts_moments():
    uniform = np.random.default_rng(1).random(50_000)
    for expected in (2.5, 1.0e4):
        counts = poisson_counts(uniform, expected)
        # Mean and variance of n Poisson draws: standard errors sqrt(mu / n) and
        # mu sqrt(2 / n) (for large mu); 5 sigma.
        assert abs(counts.mean() - expected) < 5.0 * np.sqrt(expected / uniform.size)
        assert abs(counts.var() - expected) < 5.0 * expected * np.sqrt(2.0 / uniform.size) + 0.05
    assert counts.dtype == np.int64


def test_poisson_counts_zero_uniform():
    assert poisson_counts(np.array([0.0, 1e-300]), 3.0).tolist() == [0, 0]


def test_hit_rates_equal_flux_times_area():
    config = MCConfig()
    sampler = HitSampler(config, phi_gv=0.30)
    flux = sum(omnidirectional_flux_cm2_s(config.environment, 0.30).values())
    assert sampler.wafer_rate_hz == pytest.approx(0.5 * flux * 100.0, rel=1e-12)
    assert sampler.island_rate_hz == pytest.approx(0.5 * flux * 0.06e-2, rel=1e-12)


def test_hits_follow_uniform_columns():
    config = MCConfig()
    sampler = HitSampler(config, phi_gv=0.35)
    uniforms = np.random.default_rng(2).random((1000, HIT_UNIFORMS))
    hits = sampler.hits("wafer", uniforms, 10.0)
    again = sampler.hits("wafer", uniforms.copy(), 10.0)
    assert len(hits) == 1000
    assert np.array_equal(hits.deposit_kev, again.deposit_kev)
    assert np.array_equal(hits.time_s, uniforms[:, 0] * 10.0)
    assert np.array_equal(hits.x_m, (uniforms[:, 3] - 0.5) * 0.10)
    assert np.all(hits.deposit_kev > 0.0)
    # Changing only the deposit column changes only the deposits.
    other = uniforms.copy()
    other[:, 7] = 1.0 - other[:, 7]
    changed = sampler.hits("wafer", other, 10.0)
    assert np.array_equal(changed.path_m, hits.path_m)
    assert not np.array_equal(changed.deposit_kev, hits.deposit_kev)


def test_counted_hits_follow_rates():
    # Counts of many blocks drawn from uniforms average to rate x duration.
    config = MCConfig(wafer=WaferConfig(wafer_side_m=0.03))
    sampler = HitSampler(config, phi_gv=0.35)
    duration_s = 1060 / RATE_HZ
    counts = poisson_counts(np.random.default_rng(3).random(2000), sampler.wafer_rate_hz * duration_s)
    expected = sampler.wafer_rate_hz * duration_s
    # Sum of 2000 Poisson counts: standard error sqrt(expected / 2000); 5 sigma.
    assert abs(counts.mean() - expected) < 5.0 * np.sqrt(expected / counts.size)


def test_heavy_species_deposit_more():
    environment = EnvironmentConfig(species=("p", "He", "CNO", "Fe"))
    config = MCConfig(environment=environment)
    sampler = HitSampler(config, phi_gv=0.35)
    names = [species.name for species in sampler.spectrum.species]
    assert names == ["p", "He", "CNO", "Fe"]
    # Heavier groups: 1 % of He+heavy by number is spread over placeholder groups.
    fractions = sampler.spectrum.flux_cm2_s / sampler.spectrum.total_flux_cm2_s
    assert fractions[2] > fractions[3] > 0.0
    hits = sampler.hits("wafer", np.random.default_rng(4).random((200_000, HIT_UNIFORMS)), 1.0)
    median = [np.median(hits.deposit_kev[hits.species_index == k]) for k in range(4)]
    # Deposits scale as Z^2 at equal velocity. The spectra differ by species, so the
    # medians keep the order and only roughly the Z^2 ratios (1, 4, 49, 676).
    assert median[0] < median[1] < median[2] < median[3]
    assert 20.0 < median[2] / median[0] < 100.0
    assert 300.0 < median[3] / median[0] < 1500.0


def _random_hits(sampler, rng, duration_s, n_islands, n_det):
    n_wafer = rng.poisson(sampler.wafer_rate_hz * duration_s)
    wafer = sampler.hits("wafer", rng.random((n_wafer, HIT_UNIFORMS)), duration_s)
    island = sampler.hits("island", rng.random((n_islands, HIT_UNIFORMS)), duration_s)
    return wafer, island, rng.integers(0, n_det, n_islands)


def test_block_renderer_matches_continuous():
    # A block rendered alone after its lead-in equals the same samples of one long
    # rendering: the hits before the lead-in are cut, and their remaining influence
    # (tails decaying over 10 ms, filter ringing after 20 / f_cutoff) is below 1e-9 of
    # the signal spread.
    config = MCConfig()
    sampler = HitSampler(config, phi_gv=0.35)
    positions = detector_positions_m(6, config.wafer)
    renderer = BlockRenderer(config, positions)
    block, lead = 1060, renderer.pre_roll_samples
    rng = np.random.default_rng(5)
    wafer, island, channel = _random_hits(sampler, rng, (lead + 2 * block) / RATE_HZ, 40, 6)
    whole = renderer.render(lead + 2 * block, lead, wafer, island, channel)

    start_s = block / RATE_HZ
    late_wafer = wafer.select(wafer.time_s >= start_s).shifted(-start_s)
    late = island.time_s >= start_s
    part = renderer.render(
        lead + block, lead, late_wafer, island.select(late).shifted(-start_s), channel[late]
    )
    assert part.shape == (6, block)
    assert np.abs(part - whole[:, block:]).max() < 1.0e-9 * whole.std()


def test_block_renderer_subset_bitwise():
    # A process that holds only some detectors of a wafer renders their rows bit for bit.
    config = MCConfig()
    sampler = HitSampler(config, phi_gv=0.35)
    positions = detector_positions_m(8, config.wafer)
    rng = np.random.default_rng(6)
    wafer, island, channel = _random_hits(sampler, rng, 1110 / RATE_HZ, 50, 8)
    full = BlockRenderer(config, positions).render(1110, 50, wafer, island, channel)
    subset = [2, 5]
    mine = np.isin(channel, subset)
    rows = BlockRenderer(config, positions[subset]).render(
        1110, 50, wafer, island.select(mine), np.searchsorted(subset, channel[mine])
    )
    assert np.array_equal(rows, full[subset])


def test_island_hit_reaches_own_detector():
    config = MCConfig()
    sampler = HitSampler(config, phi_gv=0.35)
    positions = detector_positions_m(3, config.wafer)
    renderer = BlockRenderer(config, positions)
    no_wafer = sampler.hits("wafer", np.zeros((0, HIT_UNIFORMS)), 1.0)
    island = sampler.hits("island", np.full((1, HIT_UNIFORMS), 0.5), 200 / RATE_HZ)
    power = renderer.render(250, 50, no_wafer, island, np.array([1]))
    assert np.all(power[[0, 2]] == 0.0)
    assert power[1].max() > 0.0
    # Area of the pulse: L/(1+L) of the deposit, seen through the unit-gain filter.
    area_j = power[1].sum() / RATE_HZ
    expected_j = config.detector.loop_fraction * island.deposit_kev[0] * 1.602176634e-16
    assert area_j == pytest.approx(expected_j, rel=1e-3)


def test_wafer_correlation_falls_with_distance():
    # 16 detectors on a 4 x 4 grid of 2 cm pitch. The near-field share (30 %, 12 mm
    # e-folding) of each wafer hit reaches close detectors more strongly than far ones.
    config = MCConfig(wafer=WaferConfig(detectors_per_pixel=1, pixel_pitch_m=0.02))
    result = simulate_timestream(config, 4000, np.random.default_rng(3), n_detectors=16)
    positions = detector_positions_m(16, config.wafer)
    distance = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    correlation = np.corrcoef(result.power_w)
    upper = np.triu_indices(16, 1)
    near = correlation[upper][np.isclose(distance[upper], 0.02)]
    far = correlation[upper][distance[upper] > 0.055]
    # Observed means 0.89 (near) and 0.74 (far) with a spread of 0.05 between pairs;
    # requiring a gap of 0.05 leaves room for the spread of the means.
    assert near.mean() - far.mean() > 0.05
    assert np.all(correlation[upper] > 0.3)
    # Detectors share most of the wafer response: all pairs are correlated.
    ranks = np.argsort(np.argsort(distance[upper]))
    spearman = np.corrcoef(ranks, np.argsort(np.argsort(correlation[upper])))[0, 1]
    assert spearman < -0.5
