#!/usr/bin/env python3
"""Simulate LiteBIRD observations with cosmic rays and bin maps of the CR signal.

The workflow builds one LiteBIRD channel from the public instrument model (IMo)
shipped with litebird_sim. It scans the sky with the LiteBIRD scanning strategy and a
rotating half-wave plate (HWP), and adds instrument noise (SimNoise) and cosmic-ray
(CR) timestreams from the toast_crab generator (InjectCRAB) or, with
``--inject_crab.disable --sim_cr_mc.enable``, from the reference Monte-Carlo
(SimCosmicRayMC). It then bins HEALPix
maps of the CR-only signal and of the total signal. FITS maps, PNG plots, the
resolved configuration and a JSON summary go to ``--out_dir``.

Run the small default configuration (8 detectors, 2 x 12 h, nside 64) with:

    export OMP_NUM_THREADS=1
    mpiexec -n 2 python workflows/toast_crab_sim_satellite.py \\
        --config workflows/litebird_small.toml --out_dir out/litebird_crab

Every operator trait can be changed with ``--<operator name>.<trait> VALUE``, for
example ``--pixels.nside 128`` or ``--inject_crab.realization 3``. List them with
``--help``, or dump all defaults with ``--defaults defaults.toml``.

For bigger runs, raise ``--n_detectors`` (up to the channel size, e.g. 144 for
L4-140), ``--num_obs`` and ``--obs_hours``, and ``--pixels.nside``; run with more MPI
processes. A year of one full LFT channel needs an HPC allocation.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
from astropy import units as u

import toast
import toast.ops
import traitlets
from toast.mpi import MPI
from toast.observation import default_values as defaults

from toast_crab import instrument
from toast_crab.bundle import default_bundle_path, network_condition, read_card
from toast_crab.calibration import dpdt_cmb
from toast_crab.ops import InjectCRAB, SimCosmicRayMC

CR_KEY = "cr_signal"

# Samples per detector and observation gathered for the timestream plot are capped
# at this many minutes.
MAX_PLOT_MINUTES = 60.0


def build_operators(scan):
    """Return the configurable operators with this workflow's defaults.

    Args:
        scan (ScanningParameters):  LiteBIRD scanning strategy from the IMo.

    Returns:
        (list):  Named TOAST operators. Their names set the command-line prefixes.

    """
    return [
        toast.ops.SimSatellite(
            name="sim_satellite",
            detset_key="pixel",
            hwp_angle=defaults.hwp_angle,
            spin_angle=scan.spin_angle,
            prec_angle=scan.prec_angle,
        ),
        toast.ops.DefaultNoiseModel(name="default_model"),
        toast.ops.SimNoise(name="sim_noise"),
        InjectCRAB(name="inject_crab", det_data=CR_KEY),
        SimCosmicRayMC(name="sim_cr_mc", det_data=CR_KEY, enabled=False),
        toast.ops.Combine(
            name="add_cr", op="add", first=defaults.det_data, second=CR_KEY,
            result=defaults.det_data,
        ),
        toast.ops.PointingDetectorSimple(name="det_pointing"),
        toast.ops.PixelsHealpix(name="pixels", nside=64, nest=True),
        toast.ops.StokesWeights(name="weights", mode="IQU"),
        toast.ops.BinMap(name="binner", pixel_dist="pix_dist"),
        toast.ops.MapMaker(
            name="mapmaker_cr", det_data=CR_KEY, write_hits=True, write_map=True,
            write_binmap=False, write_cov=False, write_rcond=False,
        ),
        toast.ops.MapMaker(
            name="mapmaker_total", det_data=defaults.det_data, write_hits=True,
            write_map=True, write_binmap=False, write_cov=False, write_rcond=False,
        ),
    ]


def parse_arguments(operators, comm):
    """Parse the command line and config files.

    Returns:
        (tuple):  The TOAST config dictionary, the script arguments and the job
            arguments.

    """
    parser = argparse.ArgumentParser(
        description="LiteBIRD satellite simulation with cosmic rays from toast_crab: "
        "binned CR-only and total maps, plots and a JSON summary.",
        epilog="Bigger runs: raise --n_detectors, --num_obs, --obs_hours and "
        "--pixels.nside, and use more MPI processes.",
    )
    parser.add_argument(
        "--out_dir", default="out/litebird_crab", help="Output folder"
    )
    parser.add_argument(
        "--channel",
        default=instrument.DEFAULT_CHANNEL,
        help="LiteBIRD IMo channel, e.g. L4-140 (LFT) or M1-140 (MFT)",
    )
    parser.add_argument(
        "--n_detectors",
        type=int,
        default=instrument.DEFAULT_N_DETECTORS,
        help="Number of detectors (even, T/B pairs) taken in IMo order",
    )
    parser.add_argument(
        "--sample_rate",
        type=float,
        default=instrument.LITEBIRD_SAMPLE_RATE.to_value(u.Hz),
        help="Detector sample rate in Hz. It must match the CR model bundle",
    )
    parser.add_argument(
        "--num_obs", type=int, default=2, help="Number of observations"
    )
    parser.add_argument(
        "--obs_hours", type=float, default=12.0, help="Length of each observation in hours"
    )
    parser.add_argument(
        "--mission_start",
        default=instrument.DEFAULT_MISSION_START.isoformat(),
        help="Start of the first observation, ISO 8601 with time zone",
    )
    parser.add_argument(
        "--plot_minutes",
        type=float,
        default=5.0,
        help=f"Length of the CR timestream stretch to plot in minutes "
        f"(at most {MAX_PLOT_MINUTES:g})",
    )
    config, args, jobargs = toast.parse_config(parser, operators=operators)

    if not 0 < args.plot_minutes <= MAX_PLOT_MINUTES:
        raise ValueError(
            f"--plot_minutes {args.plot_minutes} is out of range. Use a value in "
            f"(0, {MAX_PLOT_MINUTES:g}]."
        )
    start = datetime.datetime.fromisoformat(args.mission_start)
    if start.tzinfo is None:
        raise ValueError(
            f"--mission_start {args.mission_start} has no time zone. Append one, "
            f"e.g. {args.mission_start}+00:00."
        )
    args.mission_start = start

    if comm is None or comm.rank == 0:
        os.makedirs(args.out_dir, exist_ok=True)
    if comm is not None:
        comm.barrier()
    return config, args, jobargs


def create_instrument(args, comm):
    """Build the telescope and schedule from the IMo."""
    imo = instrument.load_imo()
    telescope = instrument.litebird_telescope(
        channel=args.channel,
        n_detectors=args.n_detectors,
        sample_rate=args.sample_rate * u.Hz,
        imo=imo,
        comm=comm,
    )
    schedule = instrument.litebird_schedule(
        num_observations=args.num_obs,
        observation_time=args.obs_hours * u.hour,
        mission_start=args.mission_start,
        telescope=instrument.telescope_of_channel(args.channel, imo=imo),
        imo=imo,
    )
    scan = instrument.litebird_scanning(
        instrument.telescope_of_channel(args.channel, imo=imo), imo=imo
    )
    return telescope, schedule, scan


def cr_source(ops):
    """Return the one enabled cosmic-ray operator: InjectCRAB or SimCosmicRayMC.

    Raises:
        ValueError: If both or neither are enabled.
    """
    enabled = [op for op in (ops.inject_crab, ops.sim_cr_mc) if op.enabled]
    if len(enabled) != 1:
        raise ValueError(
            f"Exactly one cosmic-ray source must be enabled, but {len(enabled)} are "
            f"(inject_crab: {ops.inject_crab.enabled}, sim_cr_mc: {ops.sim_cr_mc.enabled}). "
            "Use the generator (default) or pass --inject_crab.disable --sim_cr_mc.enable "
            "for the reference Monte-Carlo."
        )
    return enabled[0]


def check_model(op, sample_rate_hz, schedule=None):
    """Check the model bundle before any simulation, so a bad path fails at once.

    Args:
        op (InjectCRAB): The configured operator.
        sample_rate_hz (float): Detector sample rate.
        schedule (toast.schedule.SatelliteSchedule): Scans whose dates give phi for a
            flux-conditioned model.

    Raises:
        FileNotFoundError: If a file of the bundle is missing.
        ValueError: If the card is invalid, the bundle's sample rate differs, or phi
            does not suit the model.
    """
    path = op.model or default_bundle_path()
    card = read_card(path)
    if not card["conditioning"] and op.phi is not None:
        raise ValueError(
            f"--inject_crab.phi is {op.phi}, but model {card['name']!r} is not conditioned on "
            "the cosmic-ray flux. Leave phi unset or choose a flux-conditioned bundle."
        )
    if card["conditioning"] and schedule is not None:
        for name, phi_gv in observation_phi_gv(op, schedule).items():
            try:
                network_condition(card, phi_gv)
            except ValueError as err:
                raise ValueError(
                    f"{err} It is the phi of observation {name!r}; set --inject_crab.phi "
                    "inside that range."
                ) from err
    if abs(card["sample_rate_hz"] - sample_rate_hz) > 1.0e-6 * card["sample_rate_hz"]:
        raise ValueError(
            f"Model {card['name']!r} ({path}) was trained at {card['sample_rate_hz']} Hz "
            f"but the detectors are sampled at {sample_rate_hz} Hz. Use --sample_rate "
            f"{card['sample_rate_hz']} or a bundle trained at {sample_rate_hz} Hz."
        )


def connect_operators(ops, args, telescope, schedule, scan):
    """Set the links between operators and the values taken from the IMo."""
    log = toast.utils.Logger.get()
    if cr_source(ops) is ops.inject_crab:
        check_model(ops.inject_crab, args.sample_rate, schedule)
    ops.sim_satellite.telescope = telescope
    ops.sim_satellite.schedule = schedule
    if ops.sim_satellite.hwp_rpm is None and ops.sim_satellite.hwp_step is None:
        ops.sim_satellite.hwp_rpm = scan.hwp_rpm
        log.info_rank(
            f"HWP of {scan.telescope}: {scan.hwp_rpm:g} rpm (IMo {instrument.IMO_RELEASE})",
            comm=toast.get_world()[0],
        )

    ops.sim_noise.noise_model = ops.default_model.noise_model
    ops.det_pointing.boresight = ops.sim_satellite.boresight
    ops.pixels.detector_pointing = ops.det_pointing
    ops.weights.detector_pointing = ops.det_pointing
    ops.weights.hwp_angle = ops.sim_satellite.hwp_angle
    ops.binner.pixel_pointing = ops.pixels
    ops.binner.stokes_weights = ops.weights
    ops.binner.noise_model = ops.default_model.noise_model
    for mapmaker in (ops.mapmaker_cr, ops.mapmaker_total):
        mapmaker.binning = ops.binner
        mapmaker.template_matrix = None
        mapmaker.output_dir = args.out_dir


def choose_group_size(comm, jobargs, schedule, telescope, sim_satellite):
    """Return a process group size that gives every process work.

    SimSatellite gives each process of a group whole detector sets (T/B pairs with
    ``detset_key="pixel"``), so a group cannot have more processes than sets, and
    TOAST's MapMaker fails on a group without observations. The size that TOAST
    derives from memory is reduced until both hold. A size given with
    ``--job_group_size`` is used as given.

    Raises:
        ValueError:  If no group size satisfies both conditions.

    """
    log = toast.utils.Logger.get()
    group_size = toast.job_group_size(
        comm, jobargs, schedule=schedule, focalplane=telescope.focalplane
    )
    if comm is None or jobargs.group_size is not None:
        return group_size
    table = telescope.focalplane.detector_data
    key = sim_satellite.detset_key
    n_sets = len(table) if key is None else len(set(table[key]))
    n_obs = len(schedule.scans)
    candidates = [
        size for size in range(group_size, 0, -1)
        if comm.size % size == 0 and size <= n_sets and comm.size // size <= n_obs
    ]
    if len(candidates) == 0:
        raise ValueError(
            f"{comm.size} MPI processes cannot share {n_sets} detector sets (by "
            f"{key!r}) and {n_obs} observations so that every process has data. "
            f"Raise --n_detectors or --num_obs, or run with fewer processes."
        )
    if candidates[0] != group_size:
        log.info_rank(
            f"Process groups of {candidates[0]} instead of {group_size}, because there "
            f"are {n_sets} detector sets by {key!r} and {n_obs} observations",
            comm=comm,
        )
    return candidates[0]


def simulate(ops, data):
    """Simulate pointing, noise and cosmic rays, and bin the maps."""
    log = toast.utils.Logger.get()
    world = data.comm.comm_world
    timer = toast.timing.Timer()
    timer.start()
    steps = [
        ("Simulated pointing and HWP angle", ops.sim_satellite),
        ("Built the noise model", ops.default_model),
        ("Simulated instrument noise", ops.sim_noise),
        (f"Injected cosmic rays with {cr_source(ops).name}", cr_source(ops)),
        ("Added cosmic rays to the total signal", ops.add_cr),
        ("Binned the CR-only map", ops.mapmaker_cr),
        ("Binned the total map", ops.mapmaker_total),
    ]
    step_times = dict()
    for message, operator in steps:
        operator.apply(data)
        step_times[operator.name] = timer.elapsed_seconds()
        # With a timer, info_rank waits for all processes and restarts the timer.
        log.info_rank(f"{message} in", comm=world, timer=timer)
    return step_times


def timestream_statistics(data, key):
    """Reduce the sum, sum of squares, extremes and count of a detdata key.

    Returns:
        (dict):  ``n``, ``mean``, ``rms``, ``min`` and ``max`` in the units of the
            key, over all detectors and observations of the job.

    """
    local = np.zeros(3, dtype=np.float64)
    low, high = np.inf, -np.inf
    for ob in data.obs:
        values = ob.detdata[key].data
        local += (values.size, np.sum(values), np.sum(values**2))
        if values.size > 0:
            low, high = min(low, values.min()), max(high, values.max())
    world = data.comm.comm_world
    if world is not None:
        local = world.allreduce(local, op=MPI.SUM)
        low = world.allreduce(low, op=MPI.MIN)
        high = world.allreduce(high, op=MPI.MAX)
    n_samples = int(local[0])
    return {
        "n": n_samples,
        "mean": local[1] / n_samples,
        "rms": np.sqrt(local[2] / n_samples),
        "min": low,
        "max": high,
    }


def reduce_histogram(data, key, edges):
    """Histogram all samples of a detdata key over the job, counts on every rank."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for ob in data.obs:
        counts += np.histogram(ob.detdata[key].data, bins=edges)[0]
    world = data.comm.comm_world
    if world is not None:
        counts = world.allreduce(counts)
    return counts


def gather_stretch(data, key_cr, key_total, detectors, minutes, rate_hz):
    """Gather a stretch of timestream for the plot onto world rank 0.

    The stretch comes from the earliest observation and is centred on the largest
    absolute CR sample of the first detector there.

    Returns:
        (dict):  On rank 0, ``obs_name``, ``units``, ``time_s`` (n,) float64 seconds
            from the observation start, and per detector ``cr`` and ``total`` (n,)
            float64 in the detdata units. None on other ranks.

    """
    world = data.comm.comm_world
    owned = [ob for ob in data.obs if detectors[0] in ob.local_detectors]
    local_first = min((ob.shared[defaults.times].data[0] for ob in owned), default=np.inf)
    first = local_first if world is None else world.allreduce(local_first, op=MPI.MIN)

    n_window = int(minutes * 60.0 * rate_hz)
    local = dict()
    for ob in owned:
        times = ob.shared[defaults.times].data
        if times[0] != first:
            continue
        cr_first = ob.detdata[key_cr][detectors[0]]
        center = int(np.argmax(np.abs(cr_first)))
        start = max(0, min(center - n_window // 2, ob.n_local_samples - n_window))
        stop = min(ob.n_local_samples, start + n_window)
        local["obs_name"] = ob.name
        local["units"] = str(ob.detdata[key_cr].units)
        local["time_s"] = np.array(times[start:stop] - times[0])
        for det in detectors:
            if det in ob.local_detectors:
                local[det] = {
                    "cr": np.array(ob.detdata[key_cr][det][start:stop]),
                    "total": np.array(ob.detdata[key_total][det][start:stop]),
                }
    if world is None:
        return local
    pieces = world.gather(local, root=0)
    if world.rank != 0:
        return None
    merged = dict()
    for piece in pieces:
        merged.update(piece)
    return merged


def read_map_products(out_dir, name):
    """Read the binned IQU map and hits written by a MapMaker (NESTED ordering)."""
    import healpy as hp

    iqu = hp.read_map(os.path.join(out_dir, f"{name}_map.fits"), field=None, nest=True)
    hits = hp.read_map(os.path.join(out_dir, f"{name}_hits.fits"), nest=True)
    return np.asarray(iqu, dtype=np.float64), np.asarray(hits)


def map_rms(iqu, hits):
    """Return the RMS of I, Q and U over hit pixels, in the map units."""
    seen = hits > 0
    return {
        stokes: float(np.sqrt(np.mean(iqu[index][seen] ** 2)))
        for index, stokes in enumerate("IQU")
    }


def package_versions():
    """Return the versions of the packages behind the results."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for package in (
        "toast", "toast_crab", "tensorflow", "keras", "numpy", "healpy",
        "astropy", "litebird_sim", "mpi4py",
    ):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit():
    """Return the commit of the toast_crab checkout, or None outside a git repository."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        result = subprocess.run(
            ["git", "-C", repo, "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def calibration_w_per_k(ops, telescope, detector):
    """Return the dP/dT_CMB (W / K) that the cosmic-ray operator used for one detector."""
    source = cr_source(ops)
    if source.calibration is not None:
        return source.calibration.to_value(u.W / u.K)
    row = telescope.focalplane[detector]
    dpdt = dpdt_cmb(row["bandcenter"], row["bandwidth"], source.optical_efficiency)
    return dpdt.to_value(u.W / u.K)


def plot_timestream(stretch, detectors, cal_w_per_k, path, title):
    """Plot CR-only and total timestreams of a short stretch, in µK_CMB and aW."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    to_uk = (1.0 * u.Unit(stretch["units"])).to_value(u.uK)
    minutes = stretch["time_s"] / 60.0
    fig, (ax_cr, ax_total) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for det in detectors:
        if det in stretch:
            ax_cr.plot(minutes, stretch[det]["cr"] * to_uk, lw=0.8, label=det)
    ax_cr.set_ylabel("CR signal [µK$_\\mathrm{CMB}$]")
    ax_cr.set_title(title, fontsize=10)
    ax_cr.legend(fontsize=8, loc="upper right")
    # 1 µK_CMB corresponds to cal * 1e-6 W, shown in aW (1e-18 W).
    uk_to_aw = cal_w_per_k * 1.0e-6 / 1.0e-18
    power_axis = ax_cr.secondary_yaxis(
        "right", functions=(lambda y: y * uk_to_aw, lambda p: p / uk_to_aw)
    )
    power_axis.set_ylabel("absorbed power change [aW]")

    first = detectors[0]
    total_uk = stretch[first]["total"] * to_uk
    ax_total.plot(minutes, stretch[first]["cr"] * to_uk, lw=0.8, color="C0",
                  label=f"{first}: CR only")
    ax_total.plot(minutes, total_uk, lw=0.5, color="0.3", alpha=0.8,
                  label=f"{first}: noise + CR")
    # Show the noise: clip the y range at the 0.5 and 99.5 % quantiles of the total,
    # so a single large glitch does not flatten everything else.
    low, high = np.percentile(total_uk, [0.5, 99.5])
    margin = 0.1 * (high - low) if high > low else 1.0
    ax_total.set_ylim(low - margin, high + margin)
    ax_total.set_title("y range clipped to the 0.5-99.5 % quantiles of noise + CR", fontsize=9)
    ax_total.set_xlabel("time since observation start [min]")
    ax_total.set_ylabel("signal [µK$_\\mathrm{CMB}$]")
    ax_total.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histogram(edges_uk, counts, rms_uk, path, title):
    """Plot the histogram of all CR samples with a logarithmic count axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.stairs(counts, edges_uk, fill=True, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("CR signal per sample [µK$_\\mathrm{CMB}$]")
    ax.set_ylabel("number of samples")
    ax.set_title(f"{title}\n{int(counts.sum())} samples, RMS {rms_uk:.3g} µK$_\\mathrm{{CMB}}$",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_maps(iqu, hits, path, title):
    """Plot hits and I, Q, U maps (NESTED) in µK_CMB, unobserved pixels grey."""
    import healpy as hp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seen = hits > 0
    fig = plt.figure(figsize=(12, 8))
    hit_map = np.where(seen, hits, hp.UNSEEN).astype(np.float64)
    hp.mollview(hit_map, nest=True, fig=fig.number, sub=(2, 2, 1), title="hits",
                unit="samples (log scale)", cmap="viridis", norm="log",
                format="%.0f")
    for index, stokes in enumerate("IQU"):
        values = iqu[index] * 1.0e6
        # Centre the colour scale on the median of the observed pixels, because the
        # CR intensity map has a large positive offset. Clip it at the 99th
        # percentile of the deviation so that a few poorly sampled pixels do not
        # hide the rest.
        centre = float(np.median(values[seen])) if seen.any() else 0.0
        limit = float(np.percentile(np.abs(values[seen] - centre), 99)) if seen.any() else 1.0
        limit = limit if limit > 0 else 1.0
        masked = np.where(seen, values, hp.UNSEEN)
        hp.mollview(masked, nest=True, fig=fig.number, sub=(2, 2, index + 2),
                    title=f"Stokes {stokes}", unit="µK$_\\mathrm{CMB}$",
                    min=centre - limit, max=centre + limit, cmap="RdBu_r", format="%.3g")
    # healpy places its axes itself: squeeze them into the lower 90 % of the
    # figure to make room for the title.
    for axis in fig.axes:
        box = axis.get_position()
        axis.set_position([box.x0, 0.9 * box.y0, box.width, 0.9 * box.height])
    fig.suptitle(f"{title}\ncolour scales of I, Q, U centred on the median, clipped at the "
                 f"99th percentile of the deviation; grey = not observed", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_resolved_config(ops, out_dir, comm):
    """Write the configuration of every operator as used, in TOML."""
    objects = [op for op in vars(ops).values() if isinstance(op, toast.ops.Operator)]
    resolved = toast.config.build_config(objects)
    path = os.path.join(out_dir, "config_resolved.toml")
    toast.config.dump_toml(path, resolved, comm=comm)
    return path


def make_plots(data, ops, args, telescope, cr_stats):
    """Write the timestream, histogram and map plots and return their paths."""
    world = data.comm.comm_world
    rank = 0 if world is None else world.rank
    detectors = list(telescope.focalplane.detectors[:2])
    channel = args.channel
    stretch = gather_stretch(
        data, CR_KEY, defaults.det_data, detectors, args.plot_minutes, args.sample_rate
    )
    to_uk = (1.0 * u.K).to_value(u.uK)
    edges_uk = np.linspace(cr_stats["min"], cr_stats["max"], 201) * to_uk
    if edges_uk[0] == edges_uk[-1]:
        edges_uk = edges_uk[0] + np.linspace(-1.0, 1.0, 201)
    counts = reduce_histogram(data, CR_KEY, edges_uk / to_uk)
    if rank != 0:
        return dict()

    paths = {
        "timestream": os.path.join(args.out_dir, "cr_timestream.png"),
        "histogram": os.path.join(args.out_dir, "cr_histogram.png"),
        "maps_cr": os.path.join(args.out_dir, "maps_cr.png"),
        "maps_total": os.path.join(args.out_dir, "maps_total.png"),
    }
    plot_timestream(
        stretch, detectors, calibration_w_per_k(ops, telescope, detectors[0]),
        paths["timestream"],
        f"LiteBIRD {channel}, observation {stretch['obs_name']}\n"
        f"{args.plot_minutes:g} min around the largest CR sample of {detectors[0]}",
    )
    plot_histogram(
        edges_uk, counts, cr_stats["rms"] * to_uk, paths["histogram"],
        f"LiteBIRD {channel}: CR samples of all detectors and observations",
    )
    nside = ops.pixels.nside
    for name, label in (("mapmaker_cr", "maps_cr"), ("mapmaker_total", "maps_total")):
        iqu, hits = read_map_products(args.out_dir, getattr(ops, name).name)
        content = "CR only" if label == "maps_cr" else "noise + CR"
        plot_maps(
            iqu, hits, paths[label],
            f"LiteBIRD {channel}, binned {content}, nside {nside}, equatorial, "
            f"{len(telescope.focalplane.detectors)} detectors",
        )
    return paths


def observation_phi_gv(op, schedule):
    """Return the phi (GV) a flux-conditioned InjectCRAB uses for each scheduled scan."""
    from toast_crab.mc.config import MCConfig, SolarCycleConfig

    if op.phi is not None:
        return {scan.name: float(op.phi.to_value(u.GV)) for scan in schedule.scans}
    cycle = SolarCycleConfig() if op.mc_config is None else MCConfig.from_toml(op.mc_config).solar_cycle
    if op.phi_date != "observation":
        return {scan.name: float(cycle.phi_gv(op.phi_date)) for scan in schedule.scans}
    return {scan.name: float(cycle.phi_gv(scan.start)) for scan in schedule.scans}


def build_summary(ops, args, telescope, schedule, cr_stats, total_stats, plots,
                  step_times, config_path, n_procs):
    """Assemble the JSON summary on rank 0."""
    source = cr_source(ops)
    phi_gv = None
    if source is ops.inject_crab:
        model_path = os.path.abspath(ops.inject_crab.model or default_bundle_path())
        card = read_card(model_path)
        model_name = card["name"]
        model_family = card["family"]
        if card["conditioning"]:
            phi_gv = observation_phi_gv(ops.inject_crab, schedule)
    else:
        model_path = None
        model_name = "reference Monte-Carlo (SimCosmicRayMC)"
        model_family = None
    map_stats = dict()
    map_files = dict()
    for name in ("mapmaker_cr", "mapmaker_total"):
        mapmaker = getattr(ops, name)
        iqu, hits = read_map_products(args.out_dir, mapmaker.name)
        map_stats[name] = map_rms(iqu, hits)
        map_files[name] = {
            "map": os.path.join(args.out_dir, f"{mapmaker.name}_map.fits"),
            "hits": os.path.join(args.out_dir, f"{mapmaker.name}_hits.fits"),
        }
    n_hit_pixels = int(np.count_nonzero(hits > 0))
    detectors = list(telescope.focalplane.detectors)
    return {
        "workflow": "toast_crab_sim_satellite",
        "command": sys.argv,
        "channel": args.channel,
        "telescope": telescope.name,
        "imo_release": instrument.IMO_RELEASE,
        "detectors": detectors,
        "n_detectors": len(detectors),
        "sample_rate_hz": args.sample_rate,
        "observations": [scan.name for scan in schedule.scans],
        "samples": cr_stats["n"],
        "samples_per_detector": cr_stats["n"] // len(detectors),
        "hwp_rpm": ops.sim_satellite.hwp_rpm,
        "nside": ops.pixels.nside,
        "cr_source": source.name,
        "model_name": model_name,
        "model_path": model_path,
        "model_family": model_family,
        "phi_gv_per_observation": phi_gv,
        "realization": source.realization,
        "streams": ops.inject_crab.streams if source is ops.inject_crab else "wafer (MC)",
        "cr_rms_kcmb": cr_stats["rms"],
        "cr_mean_kcmb": cr_stats["mean"],
        "cr_min_kcmb": cr_stats["min"],
        "cr_max_kcmb": cr_stats["max"],
        "total_rms_kcmb": total_stats["rms"],
        "cr_map_rms_kcmb": map_stats["mapmaker_cr"],
        "total_map_rms_kcmb": map_stats["mapmaker_total"],
        "n_hit_pixels": n_hit_pixels,
        "step_times_s": step_times,
        "n_processes": n_procs,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "outputs": {"maps": map_files, "plots": plots, "config": config_path},
    }


@toast.timing.function_timer
def main():
    log = toast.utils.Logger.get()
    timer0 = toast.timing.Timer()
    timer0.start()
    comm, n_procs, rank = toast.get_world()
    threads = os.environ.get("OMP_NUM_THREADS", "an unknown number of")
    log.info_rank(
        f"toast_crab_sim_satellite: {n_procs} MPI processes with {threads} OpenMP "
        f"threads each, started {datetime.datetime.now().isoformat(timespec='seconds')}",
        comm=comm,
    )

    # The spin and precession angles are the same for the three telescopes.
    operators = build_operators(instrument.litebird_scanning("LFT"))
    config, args, jobargs = parse_arguments(operators, comm)
    telescope, schedule, scan = create_instrument(args, comm)
    job = toast.create_from_config(config)
    ops = job.operators
    connect_operators(ops, args, telescope, schedule, scan)
    config_path = write_resolved_config(ops, args.out_dir, comm)
    log.info_rank(f"Telescope: {telescope}", comm=comm)
    log.info_rank(f"Schedule: {schedule}", comm=comm)

    group_size = choose_group_size(comm, jobargs, schedule, telescope, ops.sim_satellite)
    data = toast.Data(comm=toast.Comm(world=comm, groupsize=group_size))
    step_times = simulate(ops, data)

    cr_stats = timestream_statistics(data, CR_KEY)
    total_stats = timestream_statistics(data, defaults.det_data)
    log.info_rank(
        f"CR RMS over {cr_stats['n']} samples: {cr_stats['rms'] * 1e6:.4g} µK_CMB",
        comm=comm,
    )
    plot_timer = toast.timing.Timer()
    plot_timer.start()
    plots = make_plots(data, ops, args, telescope, cr_stats)
    log.info_rank("Wrote plots in", comm=comm, timer=plot_timer)

    alltimers = toast.timing.gather_timers(comm=comm)
    if rank == 0:
        toast.timing.dump(alltimers, os.path.join(args.out_dir, "timing"))
        summary = build_summary(
            ops, args, telescope, schedule, cr_stats, total_stats, plots,
            step_times, config_path, n_procs,
        )
        summary["run_time_s"] = timer0.elapsed_seconds()
        with open(os.path.join(args.out_dir, "summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    log.info_rank(f"Workflow finished, outputs in {args.out_dir}, in", comm=comm,
                  timer=timer0)
    data.clear()


def main_with_input_errors():
    """Run main(); report an input error in one line instead of a traceback.

    Bad values, missing files and unknown keys raise the same error on every process,
    so each failing process prints one line and the job stops at once with exit code
    2. Any other exception goes to TOAST's exception guard, which prints the traceback.
    """
    world = toast.get_world()[0]
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, traitlets.TraitError) as err:
        if world is not None and world.rank != 0:
            # Rank 0 usually fails the same way and aborts the job first; the wait
            # keeps its message from being printed once per process.
            time.sleep(2.0)
        print(f"toast_crab_sim_satellite: error: {err}", file=sys.stderr, flush=True)
        if world is None or world.size == 1:
            sys.exit(2)
        world.Abort(2)


if __name__ == "__main__":
    with toast.mpi.exception_guard(comm=toast.get_world()[0]):
        main_with_input_errors()
