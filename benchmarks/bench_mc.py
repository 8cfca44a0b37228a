"""Measure the CPU cost of the reference MC per detector-hour of timestream.

Three cases at the default MC configuration (19.1 Hz output, 1222.4 Hz internal grid,
10 x 10 cm wafer at about 230 hits per second):

* ``mc_single``: ``simulate_training_chunks`` with one detector per chunk,
* ``mc_group``: the same with a group of detectors on one wafer per chunk,
* ``operator``: ``SimCosmicRayMC`` on a TOAST satellite observation of a 7-pixel
  (14-detector) hexagonal focal plane on one process, all detectors on one wafer, at the
  MC's default phi = 0.35 GV.

CPU seconds come from ``time.process_time`` of this process (OMP_NUM_THREADS=1), so
they do not count other jobs on the machine, but a loaded machine still slows caches and
memory. The JSON result records the machine, its load average, versions and the command.

Example::

    OMP_NUM_THREADS=1 python benchmarks/bench_mc.py --hours 1 --repeats 3
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RATE_HZ = 19.1
CHUNK_LENGTH = 1060
# The default phi of MCConfig, so that the MC and operator cases see the same flux.
PHI_GV = 0.35


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*arguments):
    """Return the output of a git command in this repository, or None if it fails."""
    try:
        result = subprocess.run(
            ["git", *arguments], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _measure(function, repeats):
    """Run ``function`` ``repeats`` times; return CPU and wall seconds of each run."""
    cpu_s, wall_s = [], []
    for _ in range(repeats):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        function()
        cpu_s.append(time.process_time() - cpu_start)
        wall_s.append(time.perf_counter() - wall_start)
    return cpu_s, wall_s


def _summary(cpu_s, wall_s, detector_hours):
    best = min(cpu_s)
    return {
        "detector_hours": detector_hours,
        "cpu_s": [round(value, 4) for value in cpu_s],
        "wall_s": [round(value, 4) for value in wall_s],
        "cpu_s_per_detector_hour_best": round(best / detector_hours, 5),
        "cpu_s_per_detector_hour_median": round(float(np.median(cpu_s)) / detector_hours, 5),
    }


def bench_mc(hours, n_detectors, repeats):
    """Time ``simulate_training_chunks`` for ``hours`` of timestream per detector."""
    from toast_crab.mc import MCConfig, simulate_training_chunks

    config = MCConfig()
    n_chunks = max(1, int(round(hours * 3600.0 * RATE_HZ / CHUNK_LENGTH)))

    def run():
        simulate_training_chunks(
            config, n_chunks, chunk_length=CHUNK_LENGTH, seed=1, n_detectors=n_detectors
        )

    cpu_s, wall_s = _measure(run, repeats)
    detector_hours = n_chunks * CHUNK_LENGTH / RATE_HZ / 3600.0 * n_detectors
    result = _summary(cpu_s, wall_s, detector_hours)
    result.update({"n_chunks": n_chunks, "chunk_length": CHUNK_LENGTH, "n_detectors": n_detectors})
    return result


def bench_operator(hours, repeats):
    """Time ``SimCosmicRayMC`` on one observation of ``hours`` with 14 detectors."""
    from astropy import units as u

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import create_comm, create_satellite_data
    from toast_crab.ops import SimCosmicRayMC

    data = create_satellite_data(create_comm(None), n_pix=7, n_obs=1, obs_minutes=hours * 60.0)
    ob = data.obs[0]
    n_det = len(ob.local_detectors)
    detector_hours = n_det * ob.n_local_samples / RATE_HZ / 3600.0
    counter = iter(range(repeats))

    def run():
        SimCosmicRayMC(
            det_data=f"cr_{next(counter)}", det_data_units=u.W, phi=PHI_GV * u.GV
        ).apply(data)

    cpu_s, wall_s = _measure(run, repeats)
    data.clear()
    result = _summary(cpu_s, wall_s, detector_hours)
    result.update({"n_detectors": n_det, "n_samples": ob.n_local_samples, "phi_gv": PHI_GV})
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0,
                        help="timestream length per detector in each case, hours")
    parser.add_argument("--group-size", type=int, default=12,
                        help="detectors per chunk in the mc_group case")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--out", type=Path, default=None,
                        help="output JSON (default benchmarks/results/bench_mc_<UTC date>.json)")
    args = parser.parse_args(argv)
    if args.hours <= 0 or args.repeats < 1 or args.group_size < 2:
        parser.error("--hours must be > 0, --repeats >= 1 and --group-size >= 2")

    import toast

    from toast_crab import _version

    load_before = os.getloadavg()
    results = {
        "mc_single": bench_mc(args.hours, 1, args.repeats),
        "mc_group": bench_mc(args.hours, args.group_size, args.repeats),
        "operator": bench_operator(args.hours, args.repeats),
    }
    now = datetime.datetime.now(datetime.timezone.utc)
    record = {
        "benchmark": "bench_mc",
        "command": shlex.join(["python", "benchmarks/bench_mc.py", *(argv or sys.argv[1:])]),
        "date_utc": now.isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_tree_modified": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "toast_crab_version": _version.__version__,
        "toast_version": toast.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": {
            "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_before": [round(value, 2) for value in load_before],
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        },
        "settings": {"hours": args.hours, "repeats": args.repeats, "sample_rate_hz": RATE_HZ,
                     "config": "MCConfig() defaults"},
        "results": results,
    }
    out = args.out
    if out is None:
        out = Path(__file__).resolve().parent / "results" / f"bench_mc_{now:%Y%m%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for name, result in results.items():
        print(
            f"{name:10s} {result['cpu_s_per_detector_hour_best']:.4f} CPU s per detector-hour "
            f"(best of {args.repeats}, {result['detector_hours']:.2f} detector-hours per run)"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
