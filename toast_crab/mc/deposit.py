"""Track geometry and energy deposited by charged nuclei in thin layers.

Sources:

* Mean energy loss: Bethe formula with the Sternheimer density-effect correction, in the
  conventions of the Particle Data Group (PDG), Review of Particle Physics, "Passage of
  particles through matter": K = 0.307075 MeV mol^-1 cm^2, m_e c^2 = 0.51099895 MeV.
* Silicon: Z/A = 0.49848, rho = 2.329 g cm^-3, I = 173 eV and the Sternheimer parameters
  a = 0.14921, k = 3.2546, x0 = 0.2015, x1 = 2.8716, C = 4.4355, delta0 = 0.14 (PDG table of
  atomic and nuclear properties of Si).
* Silicon nitride (Si3N4): rho = 3.17 g cm^-3 (bulk handbook value), I = 128 eV from Bragg's
  additivity rule with the PDG elemental values I(Si) = 173 eV and I(N) = 82 eV, and density
  parameters from the general prescription of Sternheimer, R. M. & Peierls, R. F. 1971,
  Phys. Rev. B 3, 3681.
* Straggling: Landau, L. 1944, J. Phys. USSR 8, 201, with the most probable loss
  Delta_p = xi [ln(2 m_e c^2 beta^2 gamma^2 / I) + ln(xi / I) + j - beta^2 - delta], j = 0.200
  (PDG; Bichsel, H. 1988, Rev. Mod. Phys. 60, 663). Landau's universal function phi(lambda)
  (mode -0.22278) is ``scipy.stats.landau(loc=log(pi/2), scale=pi/2)``: SciPy implements the
  alpha = 1, beta = 1 stable law, and this location and scale map it onto Landau's variable.
* Isotropic incidence on a plane: the direction cosine follows p(mu) = 2 mu, so mu = sqrt(U),
  and the mean chord through a slab of thickness t is 2 t (Cauchy's formula 4 V / S).

Energy-loss model per hit (thin absorber, velocity constant along the track):

1. kappa = xi / W_max < 1: Landau, Delta = Delta_p + xi (lambda - lambda_mp). The Landau tail
   is truncated at lambda_c chosen per hit so that the mean of the truncated distribution
   equals the Bethe mean loss, which keeps the average deposit right and bounds the tail.
2. kappa >= 1: Gaussian with the Bethe mean and variance xi W_max (1 - beta^2 / 2).
3. The deposit is clipped to [0, total kinetic energy]; a particle whose mean loss exceeds its
   energy stops and deposits all of it.

Delta-ray escape from thin layers is ignored (the deposit equals the energy loss), which biases
the tail of thin-layer deposits high.
"""

import dataclasses
import functools

import numpy as np
from scipy import integrate, special, stats

from toast_crab.mc._interpolation import UniformTable

__all__ = [
    "Material",
    "MATERIALS",
    "LANDAU_MODE",
    "landau_phi",
    "tracks_from_uniforms",
    "sample_isotropic_tracks",
    "mean_energy_loss_mev_cm2_g",
    "most_probable_deposit_kev",
    "deposits_from_uniform",
    "sample_deposits_kev",
]

_K_MEV_CM2_MOL = 0.307075
_ELECTRON_MASS_MEV = 0.51099895
_LN10 = np.log(10.0)
_LANDAU_J = 0.200

# Mode of Landau's phi(lambda).
LANDAU_MODE = -0.22278


@dataclasses.dataclass(frozen=True)
class Material:
    """Stopping-power constants of an absorber.

    Attributes:
        name (str): Short name.
        z_over_a (float): Mean Z/A, mol/g.
        density_g_cm3 (float): Density, g cm^-3.
        excitation_energy_ev (float): Mean excitation energy I, eV.
        sternheimer_a, sternheimer_k, sternheimer_x0, sternheimer_x1, sternheimer_c,
        sternheimer_delta0 (float): Density-effect parameters (x in log10(beta gamma)).
    """

    name: str
    z_over_a: float
    density_g_cm3: float
    excitation_energy_ev: float
    sternheimer_a: float
    sternheimer_k: float
    sternheimer_x0: float
    sternheimer_x1: float
    sternheimer_c: float
    sternheimer_delta0: float = 0.0


def _sternheimer_peierls(name, z_over_a, density_g_cm3, excitation_energy_ev):
    """Build a Material with density-effect parameters from Sternheimer & Peierls (1971)."""
    plasma_energy_ev = 28.816 * np.sqrt(density_g_cm3 * z_over_a)
    c_bar = 2.0 * np.log(excitation_energy_ev / plasma_energy_ev) + 1.0
    if excitation_energy_ev < 100.0:
        x1 = 2.0
        x0 = 0.2 if c_bar < 3.681 else 0.326 * c_bar - 1.0
    else:
        x1 = 3.0
        x0 = 0.2 if c_bar < 5.215 else 0.326 * c_bar - 1.5
    a = (c_bar - 2.0 * _LN10 * x0) / (x1 - x0) ** 3
    return Material(name, z_over_a, density_g_cm3, excitation_energy_ev, a, 3.0, x0, x1, c_bar)


def _silicon_nitride():
    mass_si, mass_n = 28.0855, 14.007
    molar_mass = 3 * mass_si + 4 * mass_n
    weight_si = 3 * mass_si / molar_mass
    weight_n = 4 * mass_n / molar_mass
    za_si, za_n = 14.0 / mass_si, 7.0 / mass_n
    z_over_a = weight_si * za_si + weight_n * za_n
    # Bragg additivity: ln I is the electron-weighted mean of the elemental ln I.
    log_i = (weight_si * za_si * np.log(173.0) + weight_n * za_n * np.log(82.0)) / z_over_a
    return _sternheimer_peierls("SiN", z_over_a, 3.17, float(np.exp(log_i)))


MATERIALS = {
    "Si": Material("Si", 14.0 / 28.0855, 2.329, 173.0, 0.14921, 3.2546, 0.2015, 2.8716, 4.4355, 0.14),
    "SiN": _silicon_nitride(),
}


def landau_phi():
    """Return Landau's phi(lambda) as a frozen ``scipy.stats`` distribution."""
    return stats.landau(loc=np.log(np.pi / 2.0), scale=np.pi / 2.0)


def tracks_from_uniforms(uniforms, side_m, thickness_m):
    """Map uniform numbers to tracks entering a square slab from an isotropic field.

    The entry point is uniform on a face, mu = cos(theta) = sqrt(U) (cosine law) and the
    azimuth is uniform. The path is t / mu, cut where the track leaves through a side face.
    Particles entering through the side faces (a share 2 t / side of the total) are ignored.

    Args:
        uniforms (ndarray): (4, n) float64 in [0, 1): rows give x, y, mu and azimuth.
        side_m (float): Side of the square face, m.
        thickness_m (float): Slab thickness, m.

    Returns:
        tuple: (x_m, y_m, mu, path_m), each (n,) float64: entry position relative to the
        face centre in m, direction cosine to the normal, and path length in m.
    """
    half = 0.5 * side_m
    x_m = (uniforms[0] - 0.5) * side_m
    y_m = (uniforms[1] - 0.5) * side_m
    mu = np.sqrt(uniforms[2])
    azimuth = 2.0 * np.pi * uniforms[3]

    cos_az = np.cos(azimuth)
    sin_az = np.sin(azimuth)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_x = np.where(cos_az > 0.0, half - x_m, -half - x_m) / cos_az
        to_y = np.where(sin_az > 0.0, half - y_m, -half - y_m) / sin_az
        horizontal_m = np.fmin(np.abs(to_x), np.abs(to_y))
        sin_theta = np.sqrt(1.0 - mu * mu)
        path_m = np.fmin(thickness_m / mu, horizontal_m / sin_theta)
    path_m = np.where(np.isfinite(path_m), path_m, thickness_m)
    return x_m, y_m, mu, path_m


def sample_isotropic_tracks(rng, size, side_m, thickness_m):
    """Draw tracks entering a square slab from an isotropic field through its faces.

    See ``tracks_from_uniforms`` for the geometry.

    Args:
        rng (numpy.random.Generator): Random source.
        size (int): Number of tracks.
        side_m (float): Side of the square face, m.
        thickness_m (float): Slab thickness, m.

    Returns:
        tuple: (x_m, y_m, mu, path_m), each (size,) float64.
    """
    return tracks_from_uniforms(rng.random((4, size)), side_m, thickness_m)


def _kinematics(energy_gev_per_nucleon, nucleon_mass_gev, mass_number):
    gamma = 1.0 + energy_gev_per_nucleon / nucleon_mass_gev
    beta2 = 1.0 - 1.0 / (gamma * gamma)
    betagamma2 = gamma * gamma - 1.0
    mass_ratio = _ELECTRON_MASS_MEV / (mass_number * nucleon_mass_gev * 1.0e3)
    w_max_mev = (
        2.0 * _ELECTRON_MASS_MEV * betagamma2 / (1.0 + 2.0 * gamma * mass_ratio + mass_ratio**2)
    )
    return beta2, betagamma2, w_max_mev


def _density_effect(material, betagamma2):
    """Sternheimer density-effect correction delta(beta gamma)."""
    x = 0.5 * np.log10(betagamma2)
    m = material
    high = 2.0 * _LN10 * x - m.sternheimer_c
    middle = high + m.sternheimer_a * np.clip(m.sternheimer_x1 - x, 0.0, None) ** m.sternheimer_k
    low = m.sternheimer_delta0 * 10.0 ** (2.0 * (x - m.sternheimer_x0))
    return np.where(x >= m.sternheimer_x1, high, np.where(x >= m.sternheimer_x0, middle, low))


def mean_energy_loss_mev_cm2_g(material, charge, energy_gev_per_nucleon, nucleon_mass_gev, mass_number):
    """Compute the Bethe mean mass stopping power with density effect.

    Args:
        material (Material): Absorber.
        charge (array_like): Charge number z of the projectile.
        energy_gev_per_nucleon (array_like): Kinetic energy per nucleon, GeV/n.
        nucleon_mass_gev (array_like): Rest energy per nucleon, GeV.
        mass_number (array_like): Mass number A.

    Returns:
        ndarray: <-dE/dx>, float64, MeV cm^2 g^-1 (broadcast shape of the inputs).
    """
    beta2, betagamma2, w_max_mev = _kinematics(
        np.asarray(energy_gev_per_nucleon, dtype=np.float64), nucleon_mass_gev, mass_number
    )
    excitation_mev = material.excitation_energy_ev * 1.0e-6
    delta = _density_effect(material, betagamma2)
    log_term = 0.5 * np.log(2.0 * _ELECTRON_MASS_MEV * betagamma2 * w_max_mev / excitation_mev**2)
    charge = np.asarray(charge, dtype=np.float64)
    return (
        _K_MEV_CM2_MOL * charge**2 * material.z_over_a / beta2
        * (log_term - beta2 - 0.5 * delta)
    )


def _loss_parameters(material, charge, energy_gev_per_nucleon, nucleon_mass_gev, mass_number, path_m):
    """Return xi, most probable loss, mean loss, W_max (MeV) and beta^2 per hit."""
    beta2, betagamma2, w_max_mev = _kinematics(energy_gev_per_nucleon, nucleon_mass_gev, mass_number)
    excitation_mev = material.excitation_energy_ev * 1.0e-6
    delta = _density_effect(material, betagamma2)
    charge2 = np.asarray(charge, dtype=np.float64) ** 2
    thickness_g_cm2 = material.density_g_cm3 * np.asarray(path_m) * 100.0

    xi_mev = 0.5 * _K_MEV_CM2_MOL * material.z_over_a * charge2 * thickness_g_cm2 / beta2
    most_probable_mev = xi_mev * (
        np.log(2.0 * _ELECTRON_MASS_MEV * betagamma2 / excitation_mev)
        + np.log(xi_mev / excitation_mev)
        + _LANDAU_J
        - beta2
        - delta
    )
    log_term = 0.5 * np.log(2.0 * _ELECTRON_MASS_MEV * betagamma2 * w_max_mev / excitation_mev**2)
    mean_mev = (2.0 * xi_mev) * (log_term - beta2 - 0.5 * delta)
    return xi_mev, most_probable_mev, mean_mev, w_max_mev, beta2


def most_probable_deposit_kev(material, charge, energy_gev_per_nucleon, nucleon_mass_gev, mass_number, path_m):
    """Compute the Landau-Vavilov-Bichsel most probable energy loss.

    Args:
        material (Material): Absorber.
        charge, energy_gev_per_nucleon, nucleon_mass_gev, mass_number (array_like): As in
            ``mean_energy_loss_mev_cm2_g``.
        path_m (array_like): Path length in the absorber, m.

    Returns:
        ndarray: Most probable loss, float64, keV.
    """
    _, most_probable_mev, _, _, _ = _loss_parameters(
        material, charge, np.asarray(energy_gev_per_nucleon, dtype=np.float64),
        nucleon_mass_gev, mass_number, path_m,
    )
    return most_probable_mev * 1.0e3


class _LandauTable:
    """Tabulated Landau phi(lambda) for truncated inverse-CDF sampling.

    The truncated mean m(lambda_c) = E[lambda | lambda <= lambda_c] increases monotonically
    with lambda_c, so the CDF at the cutoff is found by interpolating in m. The inverse CDF is
    tabulated in c = -log(1 - F), which resolves the 1/lambda^2 tail.
    """

    def __init__(self):
        distribution = landau_phi()
        grid = np.concatenate(
            [np.linspace(-6.0, 30.0, 6000, endpoint=False), np.geomspace(30.0, 1.0e10, 6000)]
        )
        cdf = distribution.cdf(grid)
        pdf = distribution.pdf(grid)
        # Partial first moment; the mass below lambda = -6 is below 1e-150.
        partial_moment = integrate.cumulative_trapezoid(grid * pdf, grid, initial=0.0)
        keep = cdf > 1.0e-12
        truncated_mean = partial_moment[keep] / cdf[keep]
        self.cutoff_cdf = UniformTable(truncated_mean, cdf[keep], 1 << 14)

        max_coordinate = float(-np.log(distribution.sf(grid[-1])))
        coordinate = np.linspace(0.0, max_coordinate, 1 << 16)
        inverse = distribution.isf(np.exp(-coordinate))
        inverse[0] = grid[0]
        self.inverse_cdf = UniformTable(coordinate, inverse, coordinate.size)

    def from_uniform(self, uniform, target_mean):
        """Map uniforms to lambda from phi truncated so that its mean equals ``target_mean``."""
        scaled = uniform * self.cutoff_cdf(target_mean)
        return self.inverse_cdf(-np.log1p(-scaled))

    def sample(self, rng, target_mean):
        """Draw lambda from phi truncated so that its mean equals ``target_mean`` per draw."""
        return self.from_uniform(rng.random(np.shape(target_mean)), target_mean)


@functools.lru_cache(maxsize=1)
def _landau_table():
    return _LandauTable()


def deposits_from_uniform(uniform, material, charge, energy_gev_per_nucleon, nucleon_mass_gev,
                          mass_number, path_m):
    """Map one uniform number per track to the energy it deposits in an absorber.

    Landau tracks (kappa < 1) invert the truncated Landau distribution; Gaussian tracks use
    the inverse normal CDF (``scipy.special.ndtri``) of the same uniform.

    Args:
        uniform (ndarray): (n,) float64 in [0, 1).
        material (Material): Absorber.
        charge (ndarray): (n,) float64, charge number z per track.
        energy_gev_per_nucleon (ndarray): (n,) float64, kinetic energy per nucleon, GeV/n.
        nucleon_mass_gev (ndarray): (n,) float64, rest energy per nucleon, GeV.
        mass_number (ndarray): (n,) float64, mass number A.
        path_m (ndarray): (n,) float64, path length in the absorber, m.

    Returns:
        ndarray: (n,) float64, deposited energy, keV.
    """
    energy = np.asarray(energy_gev_per_nucleon, dtype=np.float64)
    if energy.size == 0:
        return np.zeros(0, dtype=np.float64)
    uniform = np.asarray(uniform, dtype=np.float64)
    xi_mev, most_probable_mev, mean_mev, w_max_mev, beta2 = _loss_parameters(
        material, charge, energy, nucleon_mass_gev, mass_number, path_m
    )
    kappa = xi_mev / w_max_mev
    deposit_mev = np.empty_like(energy)

    landau = kappa < 1.0
    if np.any(landau):
        xi = xi_mev[landau]
        target = LANDAU_MODE + (mean_mev[landau] - most_probable_mev[landau]) / xi
        lam = _landau_table().from_uniform(uniform[landau], target)
        deposit_mev[landau] = most_probable_mev[landau] + xi * (lam - LANDAU_MODE)

    gaussian = ~landau
    if np.any(gaussian):
        sigma = np.sqrt(xi_mev[gaussian] * w_max_mev[gaussian] * (1.0 - 0.5 * beta2[gaussian]))
        deposit_mev[gaussian] = mean_mev[gaussian] + sigma * special.ndtri(uniform[gaussian])

    total_mev = energy * np.asarray(mass_number, dtype=np.float64) * 1.0e3
    deposit_mev = np.clip(deposit_mev, 0.0, total_mev)
    deposit_mev = np.where(mean_mev >= total_mev, total_mev, deposit_mev)
    return deposit_mev * 1.0e3


def sample_deposits_kev(rng, material, charge, energy_gev_per_nucleon, nucleon_mass_gev, mass_number, path_m):
    """Draw the energy deposited by each track in an absorber.

    Args:
        rng (numpy.random.Generator): Random source.
        material (Material): Absorber.
        charge (ndarray): (n,) float64, charge number z per track.
        energy_gev_per_nucleon (ndarray): (n,) float64, kinetic energy per nucleon, GeV/n.
        nucleon_mass_gev (ndarray): (n,) float64, rest energy per nucleon, GeV.
        mass_number (ndarray): (n,) float64, mass number A.
        path_m (ndarray): (n,) float64, path length in the absorber, m.

    Returns:
        ndarray: (n,) float64, deposited energy, keV.
    """
    energy = np.asarray(energy_gev_per_nucleon, dtype=np.float64)
    return deposits_from_uniform(
        rng.random(energy.shape), material, charge, energy, nucleon_mass_gev, mass_number, path_m
    )
