#!/usr/bin/env python3
"""Time InjectCRAB against TOAST's SimNoise and InjectCosmicRays on the same data.

The script simulates LiteBIRD-like data (a hexagonal focal plane of ``2 * n_pix``
detectors at 19.1 Hz, ``n_obs`` observations of ``hours`` each, satellite scanning)
and times, in one run and on the same observations:

* ``InjectCRAB`` with the default model bundle (or ``--model``),
* ``toast.ops.SimNoise`` (1/f + white noise from the default noise model),
* ``toast.ops.InjectCosmicRays`` with direct hits, fed with parameter files made
  from the toast_crab reference MC (see :func:`write_cosmic_ray_files`),
* ``toast_crab.ops.SimCosmicRayMC`` on ``--mc-detectors`` detectors, if importable.

Each operator first runs once on one detector (its start-up: imports, model
loading, tracing), then ``--repeats`` times on all detectors, adding to one
pre-allocated detdata key that is zeroed between runs. The order of the operators
rotates between repeats. For every run the script records the wall time (between
barriers), the CPU time of every process, and the peak resident memory that the
run added on every process (Linux ``VmHWM`` after resetting it through
``/proc/self/clear_refs``). One extra run per operator under ``tracemalloc``
records the peak of Python and NumPy allocations. The JSON output contains every
repeat, medians, ratios to SimNoise taken within each repeat, and the cost of the
whole LiteBIRD mission extrapolated from the per-core rate.

Run (one and two MPI processes):

    export OMP_NUM_THREADS=1
    python benchmarks/bench_injection.py
    mpiexec -n 2 python benchmarks/bench_injection.py

``python benchmarks/summarize_injection.py`` turns the JSON files into a table and
a plot.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# LiteBIRD mission: 4508 detectors (all channels of the public instrument model,
# release vPTEP, shipped with litebird_sim) sampled at 19.1 Hz for 3 years.
MISSION_DETECTORS = 4508
MISSION_YEARS = 3.0
SAMPLE_RATE_HZ = 19.1
SECONDS_PER_YEAR = 365.25 * 86400.0
MISSION_SAMPLES = MISSION_DETECTORS * MISSION_YEARS * SECONDS_PER_YEAR * SAMPLE_RATE_HZ

OPERATORS = ("inject_crab", "sim_noise", "inject_cosmic_rays", "sim_cosmic_ray_mc")
REFERENCE_OPERATOR = "sim_noise"
BENCH_KEY = "bench_signal"


def build_parser():
    parser = argparse.ArgumentParser(
        description="Time InjectCRAB, SimNoise, InjectCosmicRays and SimCosmicRayMC on "
        "the same simulated satellite data.",
    )
    parser.add_argument("--n-pix", type=int, default=7,
                        help="Pixels of the hexagonal focal plane (1, 7, 19, 37, ...); "
                        "two detectors each (default: 7)")
    parser.add_argument("--hours", type=float, default=24.0,
                        help="Length of each observation in hours (default: 24)")
    parser.add_argument("--n-obs", type=int, default=1,
                        help="Number of observations (default: 1)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timed runs of each operator (default: 3)")
    parser.add_argument("--ops", default=",".join(OPERATORS),
                        help=f"Comma-separated operators to time, from {list(OPERATORS)}")
    parser.add_argument("--mc-detectors", type=int, default=2,
                        help="Detectors per process given to SimCosmicRayMC, which is "
                        "much slower than the others (default: 2)")
    parser.add_argument("--model", default=None,
                        help="Model bundle for InjectCRAB (default: the shipped model)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="InjectCRAB batch size (default: 256)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                        help="InjectCRAB device policy (default: auto)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="Run InjectCRAB under mixed_float16 (GPU only)")
    parser.add_argument("--mc-seed", type=int, default=1,
                        help="Seed of the MC run behind the InjectCosmicRays files")
    parser.add_argument("--out", default=None,
                        help="Output JSON (default: benchmarks/results/"
                        "injection_<n>ranks_<time>.json)")
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="Skip the extra tracemalloc run of each operator")
    return parser


# ---------------------------------------------------------------- data


def build_data(comm, n_pix, hours, n_obs):
    """Simulate satellite observations of a hexagonal focal plane at 19.1 Hz.

    Returns:
        (toast.Data): Observations with pointing, a noise model ("noise_model") and
        an empty float64 key ``BENCH_KEY`` in K.
    """
    import toast
    import toast.ops
    from astropy import units as u
    from toast.instrument import SpaceSite, Telescope
    from toast.instrument_sim import fake_hexagon_focalplane
    from toast.schedule_sim_satellite import create_satellite_schedule

    focalplane = fake_hexagon_focalplane(
        n_pix=n_pix,
        sample_rate=SAMPLE_RATE_HZ * u.Hz,
        width=5 * u.deg,
        psd_net=50e-6 * u.K * np.sqrt(1 * u.s),
        psd_fmin=1e-5 * u.Hz,
        psd_fknee=0.05 * u.Hz,
    )
    telescope = Telescope("bench", focalplane=focalplane, site=SpaceSite("L2"))
    schedule = create_satellite_schedule(
        prefix="obs_",
        mission_start=datetime.datetime(2023, 2, 23, tzinfo=datetime.timezone.utc),
        observation_time=hours * u.hour,
        gap_time=0 * u.s,
        num_observations=n_obs,
        prec_period=96.174 * u.minute,
        spin_period=20 * u.minute,
    )
    data = toast.Data(comm=comm)
    toast.ops.SimSatellite(
        name="sim_satellite",
        telescope=telescope,
        schedule=schedule,
        hwp_angle=None,
        spin_angle=50 * u.deg,
        prec_angle=45 * u.deg,
        detset_key="pixel",
    ).apply(data)
    toast.ops.DefaultNoiseModel(noise_model="noise_model").apply(data)
    for ob in data.obs:
        ob.detdata.ensure(BENCH_KEY, create_units=u.K)
    return data


def write_cosmic_ray_files(folder, n_files, seed, mc_minutes=60.0):
    """Write InjectCosmicRays parameter files from the toast_crab reference MC.

    TOAST 3.0.6 ``InjectCosmicRays`` reads, for the detector at position ``kk`` of a
    process's local detector list, the file ``crfile.replace("detector",
    f"det{kk}")``. Every file here contains the same MC statistics, so that quirk
    does not change what a detector gets. Each file contains

    * ``low_noise``: [median, 1.4826 * MAD] of an MC timestream in W. The median
      absolute deviation ignores the rare direct hits, so this is the wafer
      continuum that InjectCosmicRays draws as white noise.
    * ``direct_hits``: (n, 3) [C1 in W, C2 in W, tau in ms] of island hits, for
      the glitch model C1 + C2 exp(-t / tau): C1 = 0 (the MC pulse returns to the
      baseline), C2 = deposit * the island's peak power per keV, tau = the TES
      effective time constant.
    * ``sampling_rate``: [the MC's internal rate in Hz], the rate at which the MC
      resolves a pulse.

    Args:
        folder (str): Output folder; its path must not contain "detector".
        n_files (int): Files det0 ... det{n_files - 1}.
        seed (int): Seed of the MC run.
        mc_minutes (float): Length of the MC timestream for ``low_noise``, minutes.

    Returns:
        (tuple): ``(crfile, parameters)``: the path pattern to give InjectCosmicRays
        and a dict of the MC numbers (rates in Hz, powers in W).
    """
    from toast_crab.mc import MCConfig, simulate_timestream
    from toast_crab.mc.hits import HIT_UNIFORMS, HitSampler
    from toast_crab.mc.response import island_peak_power_w_per_kev

    if "detector" in folder:
        raise ValueError(
            f"InjectCosmicRays replaces every 'detector' in its file path, so the folder "
            f"{folder!r} cannot hold its files. Choose a folder without that word."
        )
    config = MCConfig()
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    n_samples = int(mc_minutes * 60.0 * config.readout.sample_rate_hz)
    stream = simulate_timestream(config, n_samples, rng)
    power_w = stream.power_w[0]
    median_w = float(np.median(power_w))
    sigma_w = float(1.4826 * np.median(np.abs(power_w - median_w)))

    sampler = HitSampler(config)
    n_hits = 5000
    hits = sampler.hits("island", rng.random((n_hits, HIT_UNIFORMS)), 1.0)
    peak_w = island_peak_power_w_per_kev(config.detector) * hits.deposit_kev
    tau_ms = config.detector.tau_eff_s * 1.0e3
    direct_hits = np.column_stack([np.zeros(n_hits), peak_w, np.full(n_hits, tau_ms)])
    internal_rate_hz = float(config.readout.internal_rate_hz)

    crfile = os.path.join(folder, "crab_mc_detector.npz")
    for index in range(n_files):
        np.savez(
            crfile.replace("detector", f"det{index}"),
            low_noise=np.array([median_w, sigma_w]),
            direct_hits=direct_hits,
            sampling_rate=np.array([internal_rate_hz]),
        )
    parameters = {
        "low_noise_w": [median_w, sigma_w],
        "direct_hit_rate_hz": float(sampler.island_rate_hz),
        "direct_hit_peak_w_percentiles_1_50_99": [
            float(v) for v in np.percentile(peak_w, [1, 50, 99])
        ],
        "tau_ms": tau_ms,
        "sampling_rate_hz": internal_rate_hz,
        "mc_minutes": mc_minutes,
        "mc_seed": seed,
    }
    return crfile, parameters


# ---------------------------------------------------------------- operators


def make_operators(names, args, crfile, parameters, focalplane, local_detectors):
    """Return {name: (operator, detector subset or None)} for the requested names.

    Operators that cannot be built are left out, with the reason in ``skipped``.
    """
    import toast.ops
    from astropy import units as u

    from toast_crab.calibration import dpdt_cmb
    from toast_crab.ops import InjectCRAB

    operators = {}
    skipped = {}
    if "inject_crab" in names:
        operators["inject_crab"] = (
            InjectCRAB(
                det_data=BENCH_KEY,
                model=args.model,
                batch_size=args.batch_size,
                device=args.device,
                mixed_precision=args.mixed_precision,
            ),
            None,
        )
    if "sim_noise" in names:
        operators["sim_noise"] = (
            toast.ops.SimNoise(det_data=BENCH_KEY, noise_model="noise_model"),
            None,
        )
    if "inject_cosmic_rays" in names:
        # InjectCosmicRays takes one K/W factor for all detectors: that of the
        # first detector's band, as InjectCRAB computes it per detector.
        first = focalplane.detectors[0]
        dpdt = dpdt_cmb(focalplane[first]["bandcenter"], focalplane[first]["bandwidth"])
        operators["inject_cosmic_rays"] = (
            toast.ops.InjectCosmicRays(
                det_data=BENCH_KEY,
                crfile=crfile,
                crdata_units=u.W,
                eventrate=parameters["direct_hit_rate_hz"],
                inject_direct_hits=True,
                conversion_factor=(1.0 / dpdt).to(u.K / u.W),
            ),
            None,
        )
    if "sim_cosmic_ray_mc" in names:
        try:
            from toast_crab.ops import SimCosmicRayMC
        except ImportError as err:
            skipped["sim_cosmic_ray_mc"] = f"not importable: {err}"
        else:
            subset = list(local_detectors[: args.mc_detectors])
            operators["sim_cosmic_ray_mc"] = (SimCosmicRayMC(det_data=BENCH_KEY), subset)
    return operators, skipped


# ---------------------------------------------------------------- measurement


def _status_kib(field):
    """Return a ``/proc/self/status`` field in KiB (None where unavailable)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss():
    """Reset the peak RSS counter (Linux); return whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _zero(data):
    for ob in data.obs:
        ob.detdata[BENCH_KEY].data[:] = 0.0


def _local_samples(data, detectors):
    total = 0
    for ob in data.obs:
        total += len(ob.select_local_detectors(detectors)) * ob.n_local_samples
    return total


def time_run(data, operator, detectors, comm):
    """Run an operator once; return wall, per-process CPU time and peak RSS growth.

    Returns:
        (dict): ``wall_s`` (float), ``cpu_s`` and ``peak_extra_rss_mib`` (lists over
        processes; peak None where Linux peak counters are missing).
    """
    _zero(data)
    reset = _reset_peak_rss()
    rss_before = _status_kib("VmRSS")
    if comm is not None:
        comm.barrier()
    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    operator.apply(data, detectors=detectors)
    if comm is not None:
        comm.barrier()
    wall_s = time.perf_counter() - start
    cpu_s = _cpu_seconds() - cpu_start
    peak = _status_kib("VmHWM")
    extra_mib = None
    if reset and peak is not None and rss_before is not None:
        extra_mib = (peak - rss_before) / 1024.0
    cpu_all = [cpu_s] if comm is None else comm.allgather(cpu_s)
    extra_all = [extra_mib] if comm is None else comm.allgather(extra_mib)
    if comm is not None:
        wall_s = comm.allreduce(wall_s, op=_mpi_max())
    return {"wall_s": wall_s, "cpu_s": cpu_all, "peak_extra_rss_mib": extra_all}


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def traced_peak(data, operator, detectors, comm):
    """Run an operator under tracemalloc; return the peak traced MiB per process."""
    _zero(data)
    tracemalloc.start()
    operator.apply(data, detectors=detectors)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_mib = peak / 2**20
    return [peak_mib] if comm is None else comm.allgather(peak_mib)


# ---------------------------------------------------------------- summary


def summarize(name, runs, n_samples, n_procs, threads):
    """Reduce the repeats of one operator to medians and the mission extrapolation."""
    walls = np.array([run["wall_s"] for run in runs])
    cpus = np.array([sum(run["cpu_s"]) for run in runs])
    peaks = [max(p for p in run["peak_extra_rss_mib"] if p is not None)
             if any(p is not None for p in run["peak_extra_rss_mib"]) else None
             for run in runs]
    wall_median = float(np.median(walls))
    cpu_median = float(np.median(cpus))
    cores = n_procs * threads
    per_core_wall = n_samples / (wall_median * cores)
    per_core_cpu = n_samples / cpu_median if cpu_median > 0 else None
    return {
        "operator": name,
        "det_samples": int(n_samples),
        "wall_s": walls.tolist(),
        "wall_s_median": wall_median,
        "cpu_s_total": cpus.tolist(),
        "cpu_s_total_median": cpu_median,
        "samples_per_s": n_samples / wall_median,
        "samples_per_s_per_core_wall": per_core_wall,
        "samples_per_s_per_cpu_second": per_core_cpu,
        "peak_extra_rss_mib_max_over_procs": peaks,
        "mission_core_hours_from_wall": MISSION_SAMPLES / per_core_wall / 3600.0,
        "mission_core_hours_from_cpu": (
            None if per_core_cpu is None else MISSION_SAMPLES / per_core_cpu / 3600.0
        ),
    }


def ratios_to_reference(results):
    """Median over repeats of (operator time / SimNoise time) in the same repeat."""
    if REFERENCE_OPERATOR not in results:
        return {}
    out = {}
    reference = results[REFERENCE_OPERATOR]
    for name, result in results.items():
        # Compare per det-sample, since SimCosmicRayMC may run on fewer detectors.
        scale = reference["det_samples"] / result["det_samples"]
        wall = [scale * w / r for w, r in zip(result["wall_s"], reference["wall_s"])]
        cpu = [scale * c / r for c, r in zip(result["cpu_s_total"], reference["cpu_s_total"])]
        out[name] = {
            "wall_ratio_per_sample": wall,
            "wall_ratio_per_sample_median": float(np.median(wall)),
            "cpu_ratio_per_sample": cpu,
            "cpu_ratio_per_sample_median": float(np.median(cpu)),
        }
    return out


def machine_info():
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": None,
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["mem_total_gib"] = int(handle.readline().split()[1]) / 2**20
    except OSError:
        pass
    return info


def versions():
    import astropy
    import keras
    import tensorflow as tf
    import toast

    import toast_crab

    return {
        "toast": toast.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "astropy": astropy.__version__,
        "toast_crab": toast_crab.__version__,
    }


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain"],
                               capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- main


def main(argv=None):
    args = build_parser().parse_args(argv)
    names = [name.strip() for name in args.ops.split(",") if name.strip()]
    unknown = sorted(set(names) - set(OPERATORS))
    if unknown:
        raise SystemExit(f"Unknown operators {unknown}; choose from {list(OPERATORS)}.")
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1. Got {args.repeats}.")

    import toast
    from toast.mpi import MPI
    from toast.utils import Environment
    from tqdm import tqdm

    world = MPI.COMM_WORLD if MPI is not None else None
    rank = 0 if world is None else world.rank
    n_procs = 1 if world is None else world.size
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    Environment.get().set_log_level("WARNING")
    load_start = os.getloadavg()

    comm = toast.Comm(world=world, groupsize=0)
    t_build = time.perf_counter()
    data = build_data(comm, args.n_pix, args.hours, args.n_obs)
    build_s = time.perf_counter() - t_build
    focalplane = data.obs[0].telescope.focalplane

    # The parameter files go to a folder shared by all processes of this machine.
    crfile, parameters = None, None
    tmpdir = None
    if "inject_cosmic_rays" in names:
        if rank == 0:
            tmpdir = tempfile.mkdtemp(prefix="crab_bench_")
            crfile, parameters = write_cosmic_ray_files(
                tmpdir, len(focalplane.detectors), args.mc_seed
            )
        if world is not None:
            crfile, parameters = world.bcast((crfile, parameters), root=0)

    local_detectors = list(data.obs[0].local_detectors) if data.obs else []
    operators, skipped = make_operators(
        names, args, crfile, parameters, focalplane, local_detectors
    )

    # Start-up: one run on one detector per process (imports, model loading, tracing).
    startup = {}
    for name, (operator, subset) in operators.items():
        try:
            run = time_run(data, operator, local_detectors[:1], world)
            startup[name] = run["wall_s"]
        except Exception as err:  # record why an operator cannot run, keep the others
            if name != "sim_cosmic_ray_mc":
                raise
            skipped[name] = f"failed on the start-up run: {type(err).__name__}: {err}"
    for name in skipped:
        operators.pop(name, None)

    runs = {name: [] for name in operators}
    order = list(operators)
    progress = tqdm(total=args.repeats * len(order), desc="runs", disable=rank != 0)
    for repeat in range(args.repeats):
        shift = repeat % len(order)
        for name in order[shift:] + order[:shift]:
            operator, subset = operators[name]
            runs[name].append(time_run(data, operator, subset, world))
            progress.update(1)
    progress.close()

    traced = {}
    if not args.no_tracemalloc:
        for name, (operator, subset) in operators.items():
            traced[name] = traced_peak(data, operator, subset, world)

    results = {}
    for name, (operator, subset) in operators.items():
        local = _local_samples(data, subset)
        n_samples = local if world is None else world.allreduce(local)
        results[name] = summarize(name, runs[name], n_samples, n_procs, threads)
        results[name]["startup_wall_s"] = startup.get(name)
        results[name]["tracemalloc_peak_mib"] = traced.get(name)

    ratios = ratios_to_reference(results)
    ru_maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ru_all = [ru_maxrss_mib] if world is None else world.allgather(ru_maxrss_mib)
    data.clear()
    if rank != 0:
        return 0

    if tmpdir is not None:
        for file in os.listdir(tmpdir):
            os.remove(os.path.join(tmpdir, file))
        os.rmdir(tmpdir)

    card_name = None
    if "inject_crab" in operators:
        from toast_crab.bundle import default_bundle_path, read_card

        card_name = read_card(args.model or default_bundle_path())["name"]
    record = {
        "benchmark": "bench_injection",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "n_procs": n_procs,
        "omp_num_threads": threads,
        "machine": machine_info(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "versions": versions(),
        "git_commit": git_commit(),
        "config": vars(args),
        "data": {
            "n_detectors": len(focalplane.detectors),
            "hours_per_observation": args.hours,
            "n_observations": args.n_obs,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "build_s": build_s,
        },
        "model_card_name": card_name,
        "cosmic_ray_files": parameters,
        "mission": {
            "detectors": MISSION_DETECTORS,
            "years": MISSION_YEARS,
            "sample_rate_hz": SAMPLE_RATE_HZ,
            "det_samples": MISSION_SAMPLES,
        },
        "results": results,
        "ratios_to_sim_noise": ratios,
        "skipped": skipped,
        "ru_maxrss_mib_per_proc": ru_all,
    }
    out = args.out
    if out is None:
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        out = os.path.join(folder, f"injection_{n_procs}ranks_{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(record, handle, indent=1)

    print(f"{'operator':20s} {'samples/s':>11s} {'/core':>11s} {'wall/SimNoise':>14s} "
          f"{'cpu/SimNoise':>13s} {'peak MiB':>9s} {'mission core-h':>15s}")
    for name, result in results.items():
        ratio = ratios.get(name, {})
        peaks = [p for p in result["peak_extra_rss_mib_max_over_procs"] if p is not None]
        print(f"{name:20s} {result['samples_per_s']:11.3e} "
              f"{result['samples_per_s_per_core_wall']:11.3e} "
              f"{ratio.get('wall_ratio_per_sample_median', float('nan')):14.2f} "
              f"{ratio.get('cpu_ratio_per_sample_median', float('nan')):13.2f} "
              f"{(np.median(peaks) if peaks else float('nan')):9.1f} "
              f"{result['mission_core_hours_from_wall']:15.0f}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
