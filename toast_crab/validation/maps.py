"""Map-level comparison: binned cosmic-ray maps from the reference MC and from generators.

One small LiteBIRD-like TOAST observation (a few detectors of one channel from the
public instrument model, the LiteBIRD scanning strategy with its half-wave plate) is
built once. For each realization, a CR-only timestream goes into a detdata key.
:class:`toast_crab.ops.SimCosmicRayMC` (the reference MC as a TOAST operator) or
:class:`toast_crab.ops.InjectCRAB` (a generator bundle) simulates it, and
``toast.ops.BinMap`` bins it into IQU HEALPix maps (no destriping, white-noise
weights from ``DefaultNoiseModel``). From each map the panel takes the RMS of I, Q
and U over observed pixels and the angular power spectra TT, EE and BB
(``healpy.anafast`` on the RING-ordered map with unobserved pixels set to 0, divided
by the observed sky fraction).

Comparison rule: for each spectrum and ell bin, Welch's t = (mean_gen - mean_MC) /
sqrt(var_MC / n_MC + var_gen / n_gen) over the realizations is turned into the
normal score z of the same tail probability (t law with Welch-Satterthwaite
degrees of freedom). A spectrum passes when chi^2 = sum of z^2 over its bins has a
chi^2(n_bins) p-value >= 0.01, that is, when the generator mean sits within the MC
realization scatter. Each map RMS passes when |z| <= 3 and a two-sided F test of the
realization variances has p >= 0.01, so a generator whose maps scatter far more than the
MC's cannot pass on the means alone. The same statistics between the two halves of the
MC realizations are reported as the MC-vs-MC reference.

Limitations: the chi^2 law assumes Gaussian bin means and independent bins, which
holds only roughly for a few realizations of heavy-tailed CR maps on a partial sky;
the p-value is a guide, not an exact test.
"""

import os
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "MapSetup",
    "angular_spectra",
    "bin_cr_maps",
    "build_observation",
    "compare_realizations",
    "mc_config_toml",
    "run_map_comparison",
]

CR_KEY = "crab_validation_cr"

# Smallest chi^2 p-value of a passing spectrum and largest |z| of a passing map RMS.
SPECTRUM_P_MIN = 0.01
RMS_Z_MAX = 3.0
# Smallest two-sided p-value of the F test on the realization scatter of a map RMS.
SCATTER_P_MIN = 0.01

_SPECTRA = ("TT", "EE", "BB")


@dataclass(frozen=True)
class MapSetup:
    """Size of the map-level run.

    Attributes:
        channel (str): LiteBIRD IMo channel.
        n_detectors (int): Detectors taken in IMo order (even: T/B pairs).
        obs_hours (float): Length of each observation, hours.
        num_obs (int): Number of observations.
        nside (int): HEALPix resolution of the maps.
        sample_rate_hz (float): Detector sample rate; must equal the bundles' rate.
        ell_bin_width (int): Width of the ell bins of the spectrum comparison.
    """

    channel: str = "L4-140"
    n_detectors: int = 4
    obs_hours: float = 2.0
    num_obs: int = 1
    nside: int = 32
    sample_rate_hz: float = 19.1
    ell_bin_width: int = 8

    def __post_init__(self):
        if self.n_detectors < 2 or self.n_detectors % 2:
            raise ValueError(f"n_detectors must be even and >= 2. Got {self.n_detectors}.")
        if not self.obs_hours > 0:
            raise ValueError(f"obs_hours must be positive. Got {self.obs_hours}.")
        if self.num_obs < 1:
            raise ValueError(f"num_obs must be at least 1. Got {self.num_obs}.")
        if self.nside < 1 or self.nside & (self.nside - 1):
            raise ValueError(f"nside must be a power of 2. Got {self.nside}.")
        if self.ell_bin_width < 1:
            raise ValueError(f"ell_bin_width must be at least 1. Got {self.ell_bin_width}.")


def mc_config_toml(config_dict):
    """Return TOML text for an ``MCConfig.to_dict()`` dictionary (None entries left out)."""
    lines = []
    for section, values in config_dict.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            elif isinstance(value, (list, tuple)):
                text = "[" + ", ".join(
                    f'"{item}"' if isinstance(item, str) else repr(item) for item in value
                ) + "]"
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)


def build_observation(setup, comm=None):
    """Simulate pointing and the HWP angle of a small LiteBIRD observation.

    Args:
        setup (MapSetup): Size of the run.
        comm (mpi4py.MPI.Comm): World communicator or None.

    Returns:
        (toast.Data): Observations with pointing, HWP angle and a noise model
        ``noise_model``.
    """
    import toast
    import toast.ops
    from astropy import units as u

    from .. import instrument

    imo = instrument.load_imo()
    telescope_name = instrument.telescope_of_channel(setup.channel, imo=imo)
    telescope = instrument.litebird_telescope(
        channel=setup.channel, n_detectors=setup.n_detectors,
        sample_rate=setup.sample_rate_hz * u.Hz, imo=imo, comm=comm,
    )
    schedule = instrument.litebird_schedule(
        num_observations=setup.num_obs, observation_time=setup.obs_hours * u.hour,
        telescope=telescope_name, imo=imo,
    )
    scan = instrument.litebird_scanning(telescope_name, imo=imo)
    data = toast.Data(comm=toast.Comm(world=comm, groupsize=0))
    toast.ops.SimSatellite(
        name="sim_satellite", telescope=telescope, schedule=schedule,
        hwp_angle="hwp_angle", hwp_rpm=scan.hwp_rpm, spin_angle=scan.spin_angle,
        prec_angle=scan.prec_angle, detset_key="pixel",
    ).apply(data)
    toast.ops.DefaultNoiseModel(name="default_model", noise_model="noise_model").apply(data)
    return data


def _binning_operators(setup):
    import toast.ops

    det_pointing = toast.ops.PointingDetectorSimple(name="val_det_pointing", boresight="boresight_radec")
    pixels = toast.ops.PixelsHealpix(
        name="val_pixels", nside=setup.nside, nside_submap=min(16, setup.nside), nest=True,
        detector_pointing=det_pointing,
    )
    weights = toast.ops.StokesWeights(
        name="val_weights", mode="IQU", hwp_angle="hwp_angle", detector_pointing=det_pointing
    )
    return pixels, weights


def bin_cr_maps(data, setup, make_injector, realizations, work_dir, tag, progress=None):
    """Simulate and bin CR-only IQU maps, one per realization.

    Args:
        data (toast.Data): From :func:`build_observation`.
        setup (MapSetup): Size of the run.
        make_injector (callable): realization -> TOAST operator that adds CR
            timestreams to ``det_data = CR_KEY``.
        realizations (list): Realization indices.
        work_dir (str): Folder for the FITS maps.
        tag (str): File-name prefix.
        progress (callable): Called with a message per realization.

    Returns:
        (tuple): (maps (n_real, 3, npix) float64 in K_CMB, NESTED; hits (npix,)) on
        world rank 0, (None, None) on other ranks.
    """
    import healpy as hp
    import toast.ops
    from astropy import units as u

    pixels, weights = _binning_operators(setup)
    common = dict(pixel_dist="val_pixel_dist", pixel_pointing=pixels, stokes_weights=weights,
                  noise_model="noise_model")
    if "val_covariance" not in data:
        toast.ops.CovarianceAndHits(
            name="val_cov_hits", covariance="val_covariance", hits="val_hits", **common
        ).apply(data)
        data["val_hits"].write(os.path.join(work_dir, "val_hits.fits"))
    world = data.comm.comm_world
    rank = 0 if world is None else world.rank

    maps = []
    for realization in realizations:
        if progress is not None:
            progress(f"{tag} realization {realization}")
        for ob in data.obs:
            ob.detdata.ensure(CR_KEY, create_units=u.K)
            ob.detdata[CR_KEY].data[:] = 0.0
        make_injector(realization).apply(data)
        toast.ops.BinMap(
            name="val_binner", det_data=CR_KEY, binned="val_binned", covariance="val_covariance",
            **common,
        ).apply(data)
        path = os.path.join(work_dir, f"{tag}_{realization}.fits")
        data["val_binned"].write(path)
        if rank == 0:
            maps.append(np.asarray(hp.read_map(path, field=None, nest=True), dtype=np.float64))
        del data["val_binned"]
    if rank != 0:
        return None, None
    hits = np.asarray(hp.read_map(os.path.join(work_dir, "val_hits.fits"), nest=True))
    return np.array(maps), hits


def angular_spectra(iqu_nest, hits):
    """Return TT, EE, BB pseudo-spectra of a NESTED IQU map, divided by the sky fraction.

    Args:
        iqu_nest (array): (3, npix) float64, K_CMB, NESTED ordering.
        hits (array): (npix,) hit counts; pixels without hits are set to 0.

    Returns:
        (ndarray): (3, lmax + 1) float64, K^2, with lmax = 3 nside - 1.
    """
    import healpy as hp

    seen = np.asarray(hits) > 0
    if not seen.any():
        raise ValueError("The map has no observed pixel; the observation is empty.")
    maps = np.where(seen[None, :], np.asarray(iqu_nest, dtype=np.float64), 0.0)
    ring = np.array([hp.reorder(m, n2r=True) for m in maps])
    cls = hp.anafast(ring, pol=True)
    return np.array([cls[0], cls[1], cls[2]]) / seen.mean()


def _rms(iqu_nest, hits):
    seen = np.asarray(hits) > 0
    return np.sqrt(np.mean(np.asarray(iqu_nest)[:, seen] ** 2, axis=1))


def _z_scores(mc, gen):
    """Return a normal score per column for the difference of the two means.

    Welch's t (difference of means over the combined standard error) has a t law
    with the Welch-Satterthwaite degrees of freedom, which are few for a handful of
    realizations. Each t is mapped to the normal score of the same tail
    probability, so the scores of different columns can be summed as chi^2.
    """
    import scipy.stats

    mc = np.asarray(mc, dtype=np.float64)
    gen = np.asarray(gen, dtype=np.float64)
    var_mc = mc.var(axis=0, ddof=1) / mc.shape[0]
    var_gen = gen.var(axis=0, ddof=1) / gen.shape[0]
    error = np.sqrt(var_mc + var_gen)
    difference = gen.mean(axis=0) - mc.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = difference / error
        dof = (var_mc + var_gen) ** 2 / (
            var_mc**2 / (mc.shape[0] - 1) + var_gen**2 / (gen.shape[0] - 1)
        )
    z = np.where(np.isfinite(t), scipy.stats.norm.isf(scipy.stats.t.sf(np.abs(t), dof)), np.inf)
    z = np.sign(difference) * z
    # Identical constant columns (for example two sets of zero maps) do not differ.
    return np.where((error == 0) & (difference == 0), 0.0, z)


def compare_realizations(mc_cls, gen_cls, mc_rms, gen_rms, ell_edges):
    """Compare binned spectra and map RMS of two sets of realizations.

    Args:
        mc_cls (array): (n_mc, 3, n_ell) MC spectra, K^2.
        gen_cls (array): (n_gen, 3, n_ell) generator spectra.
        mc_rms (array): (n_mc, 3) map RMS of I, Q, U, K.
        gen_rms (array): (n_gen, 3).
        ell_edges (array): Bin edges in ell; bin i is [edge_i, edge_{i+1}).

    Returns:
        (dict): Per spectrum ``chi2``, ``n_bins``, ``p_value``, ``max_abs_z``,
        ``passed``, ``z`` (list); per Stokes RMS ``z`` and ``passed``.
    """
    import scipy.stats

    mc_cls = np.asarray(mc_cls)
    gen_cls = np.asarray(gen_cls)
    if mc_cls.shape[0] < 2 or gen_cls.shape[0] < 2:
        raise ValueError(
            f"Each side needs at least 2 realizations to estimate its scatter. Got "
            f"{mc_cls.shape[0]} and {gen_cls.shape[0]}."
        )
    ell = np.arange(mc_cls.shape[-1])
    out = {}
    for index, name in enumerate(_SPECTRA):
        binned_mc, binned_gen = [], []
        for low, high in zip(ell_edges[:-1], ell_edges[1:]):
            selected = (ell >= low) & (ell < high)
            binned_mc.append(mc_cls[:, index, selected].mean(axis=1))
            binned_gen.append(gen_cls[:, index, selected].mean(axis=1))
        z = _z_scores(np.array(binned_mc).T, np.array(binned_gen).T)
        chi2 = float(np.sum(z**2))
        p_value = float(scipy.stats.chi2.sf(chi2, z.size)) if np.all(np.isfinite(z)) else float("nan")
        out[name] = {
            "chi2": chi2,
            "n_bins": int(z.size),
            "p_value": p_value,
            "max_abs_z": float(np.max(np.abs(z))),
            "passed": bool(np.isfinite(p_value) and p_value >= SPECTRUM_P_MIN),
            "z": z.tolist(),
        }
    z_rms = _z_scores(mc_rms, gen_rms)
    mc_rms, gen_rms = np.asarray(mc_rms), np.asarray(gen_rms)
    for index, stokes in enumerate("IQU"):
        value = float(z_rms[index])
        # Two-sided F test of the realization variances: a generator whose maps scatter
        # far more (or less) than the MC's would otherwise pass the z test on the means.
        var_mc = float(np.var(mc_rms[:, index], ddof=1))
        var_gen = float(np.var(gen_rms[:, index], ddof=1))
        p_scatter = _variance_ratio_p(var_gen, var_mc, gen_rms.shape[0] - 1, mc_rms.shape[0] - 1)
        passed = (np.isfinite(value) and abs(value) <= RMS_Z_MAX
                  and np.isfinite(p_scatter) and p_scatter >= SCATTER_P_MIN)
        out[f"rms_{stokes}"] = {
            "z": value,
            "scatter_ratio": float(np.sqrt(var_gen / var_mc)) if var_mc > 0 else float("nan"),
            "scatter_p_value": p_scatter,
            "passed": bool(passed),
        }
    return out


def _variance_ratio_p(var_a, var_b, dof_a, dof_b):
    """Return the two-sided p-value of the F test of var_a / var_b."""
    import scipy.stats

    if not (var_a > 0 and var_b > 0):
        return 1.0 if var_a == var_b else 0.0
    ratio = var_a / var_b
    tail = scipy.stats.f.sf(ratio, dof_a, dof_b) if ratio >= 1 else scipy.stats.f.cdf(ratio, dof_a, dof_b)
    return float(min(1.0, 2.0 * tail))


def _plot(path, ell_edges, spectra, rms, labels, colors):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    centers = 0.5 * (ell_edges[:-1] + ell_edges[1:])
    ell = np.arange(next(iter(spectra.values())).shape[-1])
    for index, name in enumerate(_SPECTRA):
        ax = axes[index]
        for label, cls in spectra.items():
            binned = np.array([
                [c[index, (ell >= lo) & (ell < hi)].mean() for lo, hi in zip(ell_edges[:-1], ell_edges[1:])]
                for c in cls
            ]) * 1e12
            mean, spread = binned.mean(axis=0), binned.std(axis=0, ddof=1)
            color = colors[label]
            if label == "MC":
                ax.fill_between(centers, mean - spread, mean + spread, color="0.8",
                                label="MC mean +- 1 sigma")
                ax.plot(centers, mean, color=color, label="MC mean")
            else:
                ax.errorbar(centers, mean, yerr=spread / np.sqrt(binned.shape[0]), fmt="o-",
                            ms=3, color=color, label=f"{label} mean +- error")
        ax.set_yscale("log")
        ax.set_xlabel("multipole ell")
        ax.set_ylabel(f"C_ell {name} [uK^2]")
        ax.set_title(f"CR-only {name}")
    axes[0].legend(fontsize=7)
    ax = axes[3]
    for offset, (label, values) in enumerate(rms.items()):
        values = np.asarray(values) * 1e6
        for stokes in range(3):
            x = stokes + 0.15 * (offset - 0.5 * (len(rms) - 1))
            ax.plot(np.full(values.shape[0], x), values[:, stokes], "o", color=colors[label],
                    alpha=0.6, label=label if stokes == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(range(3))
    ax.set_xticklabels(["I", "Q", "U"])
    ax.set_ylabel("map RMS over observed pixels [uK_CMB]")
    ax.set_title("map RMS per realization")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_map_comparison(bundles, mc_config_dict, setup, n_realizations, out_dir, progress=None,
                       comm=None, work_dir=None):
    """Bin CR maps from SimCosmicRayMC and from each bundle and compare them.

    Args:
        bundles (dict): Label -> bundle path.
        mc_config_dict (dict): MC configuration (``MCConfig.to_dict()``) of the
            reference; None uses the MC defaults. Its ``environment.phi_gv`` sets
            SimCosmicRayMC's phi for every observation.
        setup (MapSetup): Size of the run.
        n_realizations (int): Realizations per injector (>= 2; 4 or more advised).
        out_dir (str): Report folder for the PNG.
        progress (callable): Called with a message per step.
        comm (mpi4py.MPI.Comm): World communicator or None.
        work_dir (str): Folder of the FITS maps and the MC configuration file;
            None uses ``out_dir/maps``.

    Returns:
        (tuple): (document dict for metrics.json, PNG file name) on rank 0. When
        SimCosmicRayMC cannot be imported the document has ``skipped`` and the
        PNG name is None.
    """
    if n_realizations < 2:
        raise ValueError(f"n_realizations must be at least 2. Got {n_realizations}.")
    try:
        from ..ops import InjectCRAB, SimCosmicRayMC
    except ImportError as err:
        return {"skipped": f"toast_crab.ops.SimCosmicRayMC is not importable ({err})."}, None
    from astropy import units as u

    from ..bundle import read_card

    if work_dir is None:
        work_dir = os.path.join(out_dir, "maps")
    os.makedirs(work_dir, exist_ok=True)
    rank = 0 if comm is None else comm.rank
    if mc_config_dict is None:
        from ..mc import MCConfig

        mc_config_dict = MCConfig().to_dict()
    mc_config_path = os.path.join(work_dir, "mc_config.toml")
    if rank == 0:
        with open(mc_config_path, "w", encoding="utf-8") as handle:
            handle.write(mc_config_toml(mc_config_dict))
    if comm is not None:
        comm.barrier()
    # A fixed phi, as in the training sets, instead of the solar-cycle date model.
    phi = float(mc_config_dict["environment"]["phi_gv"])
    phi_quantity = phi * u.GV

    data = build_observation(setup, comm)
    realizations = list(range(n_realizations))

    def make_mc(realization):
        return SimCosmicRayMC(
            name="val_mc", det_data=CR_KEY, realization=realization, mc_config=mc_config_path,
            phi=phi_quantity,
        )

    maps = {"MC": bin_cr_maps(data, setup, make_mc, realizations, work_dir, "mc", progress)}
    for label, path in bundles.items():
        # A flux-conditioned bundle gets the MC's phi; others take none.
        conditioned = bool(read_card(path)["conditioning"])

        def make_gen(realization, path=path, conditioned=conditioned):
            return InjectCRAB(
                name="val_inject", det_data=CR_KEY, realization=realization, model=path,
                phi=phi_quantity if conditioned else None,
            )

        tag = "gen_" + "".join(ch if ch.isalnum() else "_" for ch in label)
        maps[label] = bin_cr_maps(data, setup, make_gen, realizations, work_dir, tag, progress)
    data.clear()
    if rank != 0:
        return None, None

    hits = maps["MC"][1]
    spectra = {label: np.array([angular_spectra(m, hits) for m in value[0]])
               for label, value in maps.items()}
    rms = {label: np.array([_rms(m, hits) for m in value[0]]) for label, value in maps.items()}
    lmax = 3 * setup.nside - 1
    ell_edges = np.arange(2, lmax + 2, setup.ell_bin_width)
    half = n_realizations // 2
    mc_vs_mc = None
    if half >= 2 and n_realizations - half >= 2:
        mc_vs_mc = compare_realizations(spectra["MC"][:half], spectra["MC"][half:],
                                        rms["MC"][:half], rms["MC"][half:], ell_edges)
    comparisons = {
        label: compare_realizations(spectra["MC"], spectra[label], rms["MC"], rms[label], ell_edges)
        for label in bundles
    }

    colors = {"MC": "black"}
    palette = ("tab:red", "tab:blue", "tab:green", "tab:purple")
    colors.update({label: palette[i % len(palette)] for i, label in enumerate(bundles)})
    plot_name = "maps.png"
    _plot(os.path.join(out_dir, plot_name), ell_edges, spectra, rms, list(maps), colors)

    rows = []
    for key in list(_SPECTRA) + [f"rms_{s}" for s in "IQU"]:
        is_spectrum = key in _SPECTRA
        row = {
            "quantity": f"C_ell {key}" if is_spectrum else f"map RMS {key[-1]}",
            "statistic": (f"chi2 p-value over {len(ell_edges) - 1} ell bins (pass >= {SPECTRUM_P_MIN:g})"
                          if is_spectrum else f"z of the mean (pass |z| <= {RMS_Z_MAX:g} and "
                          f"scatter F-test p >= {SCATTER_P_MIN:g})"),
            "values": {},
        }
        entries = dict(comparisons)
        if mc_vs_mc is not None:
            entries["MC half vs half"] = mc_vs_mc
        for label, comparison in entries.items():
            value = comparison[key]["p_value"] if is_spectrum else comparison[key]["z"]
            row["values"][label] = {"value": value, "passed": comparison[key]["passed"]}
        rows.append(row)
    candidates = (["MC half vs half"] if mc_vs_mc is not None else []) + list(bundles)
    mc_rms = rms["MC"].mean(axis=0)
    description = (
        f"{n_realizations} realizations each of SimCosmicRayMC (phi = {phi} GV, MC configuration "
        f"of the MC file) and InjectCRAB, {setup.n_detectors} detectors of {setup.channel}, "
        f"{setup.num_obs} x {setup.obs_hours:g} h at {setup.sample_rate_hz:g} Hz, binned IQU at "
        f"nside {setup.nside} ({int(np.count_nonzero(hits))} observed pixels). Mean MC map RMS "
        f"I/Q/U: {', '.join(f'{v * 1e6:.3g}' for v in mc_rms)} uK_CMB. Per ell bin, Welch's t of "
        "the difference of the realization means becomes a normal score z; a spectrum passes "
        "when the chi2 of its z values has p >= 0.01, a map RMS when |z| <= 3 and the F test "
        "of the realization scatter has p >= 0.01."
    )
    document = {
        "setup": asdict(setup),
        "n_realizations": n_realizations,
        "phi_gv": phi,
        "ell_edges": ell_edges.tolist(),
        "description": description,
        "candidates": candidates,
        "rows": rows,
        "comparisons": comparisons,
        "mc_half_vs_half": mc_vs_mc,
        "map_rms_k": {label: values.tolist() for label, values in rms.items()},
        "n_observed_pixels": int(np.count_nonzero(hits)),
    }
    return document, plot_name
