"""Cosmic-ray hits on a wafer and on TES islands, drawn from uniform random numbers.

Every random choice of a hit is the inverse cumulative distribution of one uniform number
in [0, 1), so any source of uniforms drives the same physics: a ``numpy.random.Generator``
in the training-set MC, or TOAST's counter-based RNG in ``SimCosmicRayMC``. A block of
hits on one target (the wafer or one island) takes

* one uniform for the number of hits, the Poisson quantile at the expected count
  (``scipy.stats.poisson.ppf``), and
* ``HIT_UNIFORMS`` uniforms per hit, columns of an (n_hits, 8) array: 0 start time in the
  block, 1 species, 2 kinetic energy, 3 and 4 entry point x and y, 5 direction cosine
  (mu = sqrt(u)), 6 azimuth, 7 energy deposit.
"""

import dataclasses

import numpy as np
from scipy import stats

from toast_crab.mc.deposit import MATERIALS, deposits_from_uniform, tracks_from_uniforms
from toast_crab.mc.environment import SpectrumSampler

__all__ = ["HIT_UNIFORMS", "Hits", "HitSampler", "poisson_counts"]

HIT_UNIFORMS = 8


def poisson_counts(uniform, expected):
    """Map uniforms to Poisson counts by the inverse cumulative distribution.

    Args:
        uniform (float or ndarray): Uniform numbers in [0, 1).
        expected (float): Expected count (mean), >= 0.

    Returns:
        ndarray: int64 counts, shape of ``uniform``.
    """
    # ppf(0) is -1 in SciPy's convention; a zero uniform means no hit.
    counts = stats.poisson.ppf(np.asarray(uniform, dtype=np.float64), expected)
    return np.maximum(counts, 0).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Hits:
    """Particles that crossed one target during a time interval.

    Attributes:
        time_s (ndarray): (n,) float64, start times from the interval start, s.
        species_index (ndarray): (n,) int64, index into ``HitSampler.spectrum.species``.
        energy_gev_per_nucleon (ndarray): (n,) float64, kinetic energy per nucleon, GeV/n.
        x_m, y_m (ndarray): (n,) float64, entry point relative to the target centre, m.
        path_m (ndarray): (n,) float64, path length in the target, m.
        deposit_kev (ndarray): (n,) float64, deposited energy, keV.
    """

    time_s: np.ndarray
    species_index: np.ndarray
    energy_gev_per_nucleon: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    path_m: np.ndarray
    deposit_kev: np.ndarray

    def __len__(self):
        return int(self.time_s.size)

    @property
    def max_deposit_kev(self):
        """Largest deposit, keV (0 without hits)."""
        return float(self.deposit_kev.max()) if len(self) else 0.0

    def select(self, mask):
        """Return the hits where ``mask`` ((n,) bool or index array) selects them."""
        return Hits(**{f.name: getattr(self, f.name)[mask] for f in dataclasses.fields(self)})

    def shifted(self, offset_s):
        """Return the same hits with ``offset_s`` added to their start times."""
        return dataclasses.replace(self, time_s=self.time_s + offset_s)

    @classmethod
    def concatenate(cls, parts):
        """Join hit lists in the given order (an empty list gives no hits)."""
        fields = [field.name for field in dataclasses.fields(cls)]
        if not parts:
            empty = {name: np.zeros(0) for name in fields}
            empty["species_index"] = np.zeros(0, dtype=np.int64)
            return cls(**empty)
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})


class HitSampler:
    """Turn uniform random numbers into hits on the wafer and on a TES island.

    Args:
        config (MCConfig): MC configuration (environment, detector and wafer sections).
        phi_gv (float, optional): Modulation potential, GV; ``config.phi_gv`` if None.

    Attributes:
        spectrum (SpectrumSampler): Species and energies at L2.
        phi_gv (float): Modulation potential used, GV.
        wafer_rate_hz (float): Expected wafer hit rate, Phi A / 2 (both faces), s^-1.
        island_rate_hz (float): Expected hit rate of one TES island, s^-1.
    """

    def __init__(self, config, phi_gv=None):
        phi_gv = config.phi_gv if phi_gv is None else phi_gv
        self.spectrum = SpectrumSampler(config.environment, phi_gv)
        self.phi_gv = self.spectrum.phi_gv
        wafer = config.wafer
        detector = config.detector
        flux_cm2_s = self.spectrum.total_flux_cm2_s
        self.wafer_rate_hz = 0.5 * flux_cm2_s * wafer.wafer_side_m**2 * 1.0e4
        self.island_rate_hz = 0.5 * flux_cm2_s * detector.island_area_m2 * 1.0e4
        self._targets = {
            "wafer": (MATERIALS["Si"], wafer.wafer_side_m, wafer.wafer_thickness_m),
            "island": (
                MATERIALS[detector.island_material],
                float(np.sqrt(detector.island_area_m2)),
                detector.island_thickness_m,
            ),
        }

    def hits(self, target, uniforms, duration_s):
        """Map uniforms to hits on the wafer or on one island.

        Args:
            target (str): "wafer" or "island".
            uniforms (ndarray): (n_hits, HIT_UNIFORMS) float64 in [0, 1), columns as in the
                module docstring.
            duration_s (float): Length of the time interval, s.

        Returns:
            Hits: The n_hits hits, in the row order of ``uniforms``.
        """
        material, side_m, thickness_m = self._targets[target]
        columns = np.asarray(uniforms, dtype=np.float64).reshape(-1, HIT_UNIFORMS).T
        spectrum = self.spectrum
        species = spectrum.species_from_uniform(columns[1])
        energy = spectrum.energy_from_uniform(species, columns[2])
        x_m, y_m, _, path_m = tracks_from_uniforms(columns[3:7], side_m, thickness_m)
        deposit_kev = deposits_from_uniform(
            columns[7], material, spectrum.charge[species], energy,
            spectrum.nucleon_mass_gev[species], spectrum.mass_number[species], path_m,
        )
        return Hits(
            time_s=columns[0] * duration_s,
            species_index=species.astype(np.int64),
            energy_gev_per_nucleon=energy,
            x_m=x_m,
            y_m=y_m,
            path_m=path_m,
            deposit_kev=deposit_kev,
        )
