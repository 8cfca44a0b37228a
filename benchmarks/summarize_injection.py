#!/usr/bin/env python3
"""Tabulate and plot bench_injection.py results.

Reads the JSON files given on the command line (default: the newest file for each
process count in benchmarks/results/) and prints a Markdown table. With --plot it
also writes a PNG of the rate per core of every operator, from wall time and from
CPU time.

    python benchmarks/summarize_injection.py --plot docs/img/bench_injection.png
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

LABELS = {
    "inject_crab": "InjectCRAB",
    "sim_noise": "SimNoise",
    "inject_cosmic_rays": "InjectCosmicRays",
    "sim_cosmic_ray_mc": "SimCosmicRayMC",
}


def newest_per_layout(folder):
    """Return the newest injection_*.json of each process count in ``folder``."""
    newest = {}
    for path in sorted(glob.glob(os.path.join(folder, "injection_*ranks_*.json"))):
        with open(path) as handle:
            record = json.load(handle)
        newest[record["n_procs"]] = path
    return [newest[n] for n in sorted(newest)]


def table(records):
    """Return Markdown table lines for the records."""
    lines = [
        "| processes | operator | det-samples | wall s (median; min-max) | samples/s | "
        "samples/s per core | wall / SimNoise | CPU / SimNoise | peak extra RSS MiB | "
        "tracemalloc peak MiB | mission core-hours (wall; CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        ratios = record["ratios_to_sim_noise"]
        for name, result in record["results"].items():
            walls = result["wall_s"]
            peaks = [p for p in result["peak_extra_rss_mib_max_over_procs"] if p is not None]
            traced = result.get("tracemalloc_peak_mib") or []
            ratio = ratios.get(name, {})
            lines.append(
                f"| {record['n_procs']} | {LABELS.get(name, name)} | {result['det_samples']:.3g} | "
                f"{result['wall_s_median']:.2f}; {min(walls):.2f}-{max(walls):.2f} | "
                f"{result['samples_per_s']:.3g} | {result['samples_per_s_per_core_wall']:.3g} | "
                f"{ratio.get('wall_ratio_per_sample_median', float('nan')):.2f} | "
                f"{ratio.get('cpu_ratio_per_sample_median', float('nan')):.2f} | "
                f"{(np.median(peaks) if peaks else float('nan')):.0f} | "
                f"{(max(traced) if traced else float('nan')):.1f} | "
                f"{result['mission_core_hours_from_wall']:.3g}; "
                f"{result['mission_core_hours_from_cpu']:.3g} |"
            )
    return lines


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in LABELS if any(name in r["results"] for r in records)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(1, len(records))
    for panel, (key, title) in zip(
        axes,
        [("samples_per_s_per_core_wall", "wall time (shared machine)"),
         ("samples_per_s_per_cpu_second", "CPU time")],
    ):
        for slot, record in enumerate(records):
            values = [record["results"].get(name, {}).get(key, np.nan) or np.nan
                      for name in names]
            positions = np.arange(len(names)) + (slot - (len(records) - 1) / 2) * width
            panel.bar(positions, values, width, label=f"{record['n_procs']} MPI process(es)")
        panel.set_xticks(np.arange(len(names)))
        panel.set_xticklabels([LABELS[name] for name in names], rotation=15)
        panel.set_yscale("log")
        panel.set_title(f"det-samples/s per core, {title}")
        panel.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("detector samples / s / core")
    axes[0].legend()
    first = records[0]
    fig.suptitle(
        f"{first['data']['n_detectors']} detectors x {first['data']['hours_per_observation']:g} h "
        f"at 19.1 Hz, {first['machine']['cpu_count']}-core {first['machine']['cpu_model']}",
        fontsize=10,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="bench_injection.py JSON files")
    parser.add_argument("--plot", default=None, help="Write a PNG plot to this path")
    args = parser.parse_args(argv)
    files = args.files
    if not files:
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        files = newest_per_layout(folder)
    if not files:
        raise SystemExit("No bench_injection.py results found; run the benchmark first.")
    records = []
    for path in files:
        with open(path) as handle:
            records.append(json.load(handle))
    for path, record in zip(files, records):
        print(f"{path}: {record['command']} ({record['date_utc']}, load average "
              f"{record['load_average_start'][0]:.1f} -> {record['load_average_end'][0]:.1f})")
    print()
    print("\n".join(table(records)))
    if args.plot:
        plot(records, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
