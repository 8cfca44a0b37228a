"""Galactic cosmic-ray spectra at L2: interstellar spectra, solar modulation, sampling.

Sources:

* Proton local interstellar spectrum (LIS) in rigidity: Corti, C. et al. 2019, ApJ 871, 253,
  Eq. 13, with C = 5658 m^-2 s^-1 sr^-1 GV^-1, gamma_0 = 1.669,
  R_i = (0.572, 6.2, 540) GV, s_i = (1.78, 3.89, 1.53), Delta_i = (-4.117, -0.423, -0.26).
* Helium and heavier nuclei: the same rigidity shape scaled by ``helium_scale`` (k_He = 0.117
  reproduces the solar-minimum 4He spectrum of Vannuccini 2001 as tabulated in Geant4's
  ``cosmicray_charging`` example to about 15 %).
* Solar modulation: force-field approximation of Gleeson, L. J. & Axford, W. I. 1968,
  ApJ 154, 1011.
* Shielding: a sharp cut at 40 MeV per nucleon, the threshold above which protons reached the
  Planck HFI focal plane (Planck Collaboration 2014, A&A 571, A10).

Energies are kinetic energies per nucleon T in GeV/n, rigidities R in GV, differential
intensities J in m^-2 s^-1 sr^-1 (GeV/n)^-1.
"""

import dataclasses

import numpy as np
from scipy import integrate

from toast_crab.mc._interpolation import UniformTable

__all__ = [
    "Species",
    "SPECIES",
    "proton_lis_rigidity",
    "rigidity_gv",
    "lis_intensity",
    "modulated_intensity",
    "omnidirectional_flux_cm2_s",
    "SpectrumSampler",
]


@dataclasses.dataclass(frozen=True)
class Species:
    """A cosmic-ray nucleus or group of nuclei.

    Attributes:
        name (str): Key used in ``EnvironmentConfig.species``.
        charge (int): Charge number Z (effective Z for a group).
        mass_number (int): Mass number A.
        nucleon_mass_gev (float): Rest energy per nucleon, in GeV.
        group_share (float): Share of the Z > 2 number fraction given to this group; 0 for
            protons and helium.
    """

    name: str
    charge: int
    mass_number: int
    nucleon_mass_gev: float
    group_share: float = 0.0


# Proton and 4He masses per nucleon (PDG: 0.938272 GeV and 3.727379 GeV / 4). Heavier
# groups use the atomic mass unit, A = 2 Z, and the group shares 12 / 60 / 20 / 4 / 4 %
# (Li-B / C-O / Ne-Si / S-Ca / Fe).
# NOTE: the Z > 2 groups are placeholders (abundances not taken from a published LIS).
_AMU_GEV = 0.931494
SPECIES = {
    "p": Species("p", 1, 1, 0.938272),
    "He": Species("He", 2, 4, 3.727379 / 4.0),
    "LiBeB": Species("LiBeB", 4, 8, _AMU_GEV, 0.12),
    "CNO": Species("CNO", 7, 14, _AMU_GEV, 0.60),
    "NeMgSi": Species("NeMgSi", 12, 24, _AMU_GEV, 0.20),
    "SToCa": Species("SToCa", 18, 36, _AMU_GEV, 0.04),
    "Fe": Species("Fe", 26, 52, _AMU_GEV, 0.04),
}

_CORTI_NORM = 5658.0
_CORTI_GAMMA0 = 1.669
_CORTI_BREAK_GV = np.array([0.572, 6.2, 540.0])
_CORTI_SMOOTHNESS = np.array([1.78, 3.89, 1.53])
_CORTI_DELTA = np.array([-4.117, -0.423, -0.26])

# Upper end of the energy grid used for integration and sampling. The flux above
# 10 TeV/n is below 1e-6 of the total.
_GRID_MAX_GEV = 1.0e4
_GRID_POINTS = 4096


def proton_lis_rigidity(rigidity_gv):
    """Evaluate the Corti et al. (2019) proton LIS per unit rigidity (Eq. 13).

    Args:
        rigidity_gv (array_like): Rigidity R, float64, GV.

    Returns:
        ndarray: J_R(R), same shape, float64, m^-2 s^-1 sr^-1 GV^-1.
    """
    rigidity = np.asarray(rigidity_gv, dtype=np.float64)
    result = _CORTI_NORM * rigidity**_CORTI_GAMMA0
    for break_gv, smooth, delta in zip(_CORTI_BREAK_GV, _CORTI_SMOOTHNESS, _CORTI_DELTA):
        factor = (1.0 + (rigidity / break_gv) ** smooth) / (1.0 + break_gv ** (-smooth))
        result = result * factor ** (delta / smooth)
    return result


def rigidity_gv(species, energy_gev_per_nucleon):
    """Convert kinetic energy per nucleon to rigidity, R = (A/Z) sqrt(T (T + 2 m)).

    Args:
        species (Species): The nucleus.
        energy_gev_per_nucleon (array_like): T, float64, GeV/n.

    Returns:
        ndarray: R, float64, GV.
    """
    energy = np.asarray(energy_gev_per_nucleon, dtype=np.float64)
    mass = species.nucleon_mass_gev
    return species.mass_number / species.charge * np.sqrt(energy * (energy + 2.0 * mass))


def _species_scale(species, environment):
    """Return the LIS normalisation of a species relative to the proton LIS."""
    if species.name == "p":
        return 1.0
    if species.name == "He":
        return environment.helium_scale
    return environment.helium_scale * environment.heavy_fraction * species.group_share


def lis_intensity(species, energy_gev_per_nucleon, environment):
    """Evaluate the local interstellar intensity per unit kinetic energy per nucleon.

    J_T(T) = k J_R(R(T)) dR/dT with dR/dT = (A/Z) (T + m) / sqrt(T (T + 2 m)).

    Args:
        species (Species): The nucleus.
        energy_gev_per_nucleon (array_like): T, float64, GeV/n.
        environment (EnvironmentConfig): Provides the species scale factors.

    Returns:
        ndarray: J, float64, m^-2 s^-1 sr^-1 (GeV/n)^-1.
    """
    energy = np.asarray(energy_gev_per_nucleon, dtype=np.float64)
    mass = species.nucleon_mass_gev
    momentum = np.sqrt(energy * (energy + 2.0 * mass))
    ratio = species.mass_number / species.charge
    derivative = ratio * (energy + mass) / momentum
    return _species_scale(species, environment) * proton_lis_rigidity(ratio * momentum) * derivative


def modulated_intensity(species, energy_gev_per_nucleon, phi_gv, environment):
    """Apply the force-field solar modulation (Gleeson & Axford 1968).

    J(T) = J_LIS(T + Phi) T (T + 2m) / ((T + Phi)(T + Phi + 2m)), Phi = (Z/A) phi.

    Args:
        species (Species): The nucleus.
        energy_gev_per_nucleon (array_like): T at L2, float64, GeV/n.
        phi_gv (float): Modulation potential, GV.
        environment (EnvironmentConfig): Provides the species scale factors.

    Returns:
        ndarray: J, float64, m^-2 s^-1 sr^-1 (GeV/n)^-1.
    """
    energy = np.asarray(energy_gev_per_nucleon, dtype=np.float64)
    mass = species.nucleon_mass_gev
    shift = species.charge / species.mass_number * phi_gv
    shifted = energy + shift
    factor = energy * (energy + 2.0 * mass) / (shifted * (shifted + 2.0 * mass))
    return lis_intensity(species, shifted, environment) * factor


def _energy_grid(environment):
    cutoff_gev = environment.cutoff_energy_mev_per_nucleon * 1.0e-3
    return np.geomspace(cutoff_gev, max(_GRID_MAX_GEV, 10.0 * cutoff_gev), _GRID_POINTS)


def _integrated_curve(species, phi_gv, environment):
    """Return the energy grid and the cumulative omnidirectional flux above the cut, m^-2 s^-1."""
    energy = _energy_grid(environment)
    intensity = modulated_intensity(species, energy, phi_gv, environment)
    # Integrate J dT = J T dlnT on the logarithmic grid; 4 pi for the omnidirectional flux.
    cumulative = integrate.cumulative_trapezoid(
        4.0 * np.pi * intensity * energy, np.log(energy), initial=0.0
    )
    return energy, cumulative


def omnidirectional_flux_cm2_s(environment, phi_gv=None):
    """Compute the omnidirectional flux above the shielding cut for each configured species.

    Phi = 4 pi integral of J(T) dT from the cut to 10 TeV/n. For an isotropic field a thin
    plate of face area A receives Phi A / 2 particles per second (both faces).

    Args:
        environment (EnvironmentConfig): Species, modulation and cut.
        phi_gv (float, optional): Modulation potential in GV; ``environment.phi_gv`` if None.

    Returns:
        dict: Species name to flux in cm^-2 s^-1 (float).
    """
    phi = environment.phi_gv if phi_gv is None else float(phi_gv)
    if phi < 0.0:
        raise ValueError(f"phi_gv must be >= 0 GV, got {phi!r}")
    fluxes = {}
    for name in environment.species:
        _, cumulative = _integrated_curve(SPECIES[name], phi, environment)
        fluxes[name] = float(cumulative[-1]) * 1.0e-4
    return fluxes


def _inverse_cdf_table(energy, cumulative):
    """Tabulate log T against c = -log(1 - F), F the cumulative fraction, on a uniform grid."""
    if cumulative[-1] <= 0.0:
        return UniformTable(np.array([0.0, 1.0]), np.log(energy[[0, 0]]), 2)
    survival = 1.0 - cumulative / cumulative[-1]
    # The last point has survival 0; stop at the last one with a finite coordinate.
    finite = survival > 0.0
    coordinate = -np.log(survival[finite])
    return UniformTable(coordinate, np.log(energy[finite]), 1 << 14)


class SpectrumSampler:
    """Draw species and kinetic energies of particles arriving at L2.

    Uses the inverse of the cumulative spectrum tabulated on a logarithmic energy grid
    (4096 points from the cut to 10 TeV/n), interpolating log T linearly in
    c = -log(1 - F) of the cumulative fraction F, which resolves the high-energy tail.

    Args:
        environment (EnvironmentConfig): Species, modulation and cut.
        phi_gv (float, optional): Modulation potential in GV; ``environment.phi_gv`` if None.

    Attributes:
        phi_gv (float): Modulation potential used, GV.
        species (tuple of Species): Species in configuration order.
        flux_cm2_s (ndarray): (n_species,) float64, omnidirectional flux per species, cm^-2 s^-1.
        total_flux_cm2_s (float): Sum over species, cm^-2 s^-1.
    """

    def __init__(self, environment, phi_gv=None):
        self.phi_gv = environment.phi_gv if phi_gv is None else float(phi_gv)
        if self.phi_gv < 0.0:
            raise ValueError(f"phi_gv must be >= 0 GV, got {self.phi_gv!r}")
        self.species = tuple(SPECIES[name] for name in environment.species)
        self._inverse_cdf = []
        fluxes = []
        for species in self.species:
            energy, cumulative = _integrated_curve(species, self.phi_gv, environment)
            fluxes.append(cumulative[-1] * 1.0e-4)
            self._inverse_cdf.append(_inverse_cdf_table(energy, cumulative))
        self.flux_cm2_s = np.asarray(fluxes, dtype=np.float64)
        self.total_flux_cm2_s = float(self.flux_cm2_s.sum())
        if self.total_flux_cm2_s > 0:
            self._species_cdf = np.cumsum(self.flux_cm2_s) / self.total_flux_cm2_s
        else:
            self._species_cdf = np.ones(len(self.species))

        self.charge = np.array([s.charge for s in self.species], dtype=np.float64)
        self.mass_number = np.array([s.mass_number for s in self.species], dtype=np.float64)
        self.nucleon_mass_gev = np.array([s.nucleon_mass_gev for s in self.species])

    def species_from_uniform(self, uniform):
        """Map uniform numbers in [0, 1) to species indices in proportion to the fluxes.

        Args:
            uniform (ndarray): (n,) float64 in [0, 1).

        Returns:
            ndarray: (n,) int64 indices into ``self.species``.
        """
        index = np.searchsorted(self._species_cdf, uniform, side="right")
        return np.minimum(index, len(self.species) - 1)

    def energy_from_uniform(self, species_index, uniform):
        """Map uniform numbers to kinetic energies per nucleon by the inverse spectrum.

        Args:
            species_index (ndarray): (n,) int, indices into ``self.species``.
            uniform (ndarray): (n,) float64 in [0, 1).

        Returns:
            ndarray: (n,) float64, kinetic energy per nucleon, GeV/n.
        """
        species_index = np.asarray(species_index)
        uniform = np.asarray(uniform, dtype=np.float64)
        log_energy = np.empty(species_index.shape, dtype=np.float64)
        for index in range(len(self.species)):
            selected = species_index == index
            if np.any(selected):
                log_energy[selected] = self._inverse_cdf[index](-np.log1p(-uniform[selected]))
        return np.exp(log_energy)

    def sample_species(self, rng, size):
        """Draw species indices in proportion to their fluxes.

        Returns:
            ndarray: (size,) int64 indices into ``self.species``.
        """
        return self.species_from_uniform(rng.random(size))

    def sample_energy(self, species_index, rng):
        """Draw kinetic energies per nucleon for the given species indices.

        Args:
            species_index (ndarray): (n,) int, indices into ``self.species``.
            rng (numpy.random.Generator): Random source.

        Returns:
            ndarray: (n,) float64, kinetic energy per nucleon, GeV/n.
        """
        species_index = np.asarray(species_index)
        return self.energy_from_uniform(species_index, rng.random(species_index.shape))
