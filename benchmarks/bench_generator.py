#!/usr/bin/env python3
"""Measure generator inference throughput per device, precision and batch size.

For every device of this process (the CPU, and GPU 0 when TensorFlow finds one),
every precision (float32, and mixed_float16 on GPU) and every batch size, the
script times ``ChunkGenerator.generate_chunks`` (latents in, chunks in W out, so
host-device copies and the inverse amplitude transform count) and reports the
median chunks/s and samples/s over ``--repeats`` windows of at least
``--seconds`` each. It also compares each GPU configuration with the float32 CPU
output (:func:`toast_crab.devices.compare_devices`). Results go to JSON.

    python benchmarks/bench_generator.py --batch-sizes 256,1024,8192
"""

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


# The CRAB chunk model shipped beside the default (a sequence model).
CRAB_DEFAULT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "toast_crab", "data", "models", "crab_default.keras",
)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=CRAB_DEFAULT,
                        help="Chunk-model bundle (default: the CRAB model crab_default; "
                        "time sequence models with bench_injection.py)")
    parser.add_argument("--batch-sizes", default="64,256,1024,4096",
                        help="Comma-separated batch sizes (default: 64,256,1024,4096)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="Timed windows per configuration (default: 5)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="Minimum length of one timed window, s (default: 1)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                        help="'auto' times the CPU and any GPU, 'cpu' or 'gpu' only that")
    parser.add_argument("--out", default=None,
                        help="Output JSON (default: benchmarks/results/generator_<time>.json)")
    return parser


def time_configuration(bundle, device, mixed, batch_size, repeats, seconds):
    """Return the median chunks/s of generate_chunks, with the per-window rates."""
    from toast_crab.generation import ChunkGenerator, draw_latents, stream_keys

    generator = ChunkGenerator(bundle, batch_size=batch_size, device=device,
                               mixed_precision=mixed)
    n_chunks = 4 * batch_size
    keys = [stream_keys(0, 0, 0, stream) for stream in range(n_chunks)]
    latents = draw_latents(keys, [0] * n_chunks, generator.latent_dim)
    start = time.perf_counter()
    generator.generate_chunks(latents[:batch_size])
    first_call_s = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        while True:
            generator.generate_chunks(latents)
            done += n_chunks
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(done / elapsed)
    return float(np.median(rates)), rates, first_call_s


def main(argv=None):
    args = build_parser().parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    from tqdm import tqdm

    from toast_crab.bundle import load_bundle
    from toast_crab.devices import compare_devices, configure_devices

    plan = configure_devices("gpu" if args.device == "gpu" else "auto", "error")
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(("cpu", "/CPU:0", False))
    if plan.kind == "gpu" and args.device in ("auto", "gpu"):
        devices.append(("gpu", plan.device, False))
        devices.append(("gpu", plan.device, True))

    import tensorflow as tf

    bundle = load_bundle(args.model)
    if bundle.is_sequence:
        raise SystemExit(
            f"bench_generator: model {bundle.card['name']!r} ({args.model}) is a sequence "
            "model; this script times chunk generators. Time it inside a TOAST run with "
            f"python benchmarks/bench_injection.py --model {args.model}."
        )
    rows = []
    progress = tqdm(total=len(devices) * len(batch_sizes), desc="configurations")
    for kind, device, mixed in devices:
        for batch_size in batch_sizes:
            median, rates, first_s = time_configuration(
                bundle, device, mixed, batch_size, args.repeats, args.seconds
            )
            rows.append({
                "kind": kind,
                "device": device,
                "mixed_precision": mixed,
                "batch_size": batch_size,
                "chunks_per_s_median": median,
                "samples_per_s_median": median * bundle.chunk_length,
                "chunks_per_s": rates,
                "first_call_s": first_s,
            })
            progress.update(1)
    progress.close()

    comparisons = []
    for kind, device, mixed in devices:
        if kind != "gpu":
            continue
        result = compare_devices(bundle, device=device, mixed_precision=mixed)
        comparisons.append({**result.__dict__, "relative_diff": result.relative_diff})

    record = {
        "benchmark": "bench_generator",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "omp_num_threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "device_plan": plan.__dict__,
        "model_card_name": bundle.card["name"],
        "chunk_length": bundle.chunk_length,
        "rows": rows,
        "gpu_vs_cpu": comparisons,
    }
    out = args.out
    if out is None:
        folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        out = os.path.join(folder, f"generator_{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as handle:
        json.dump(record, handle, indent=1)

    print(f"{'device':8s} {'precision':14s} {'batch':>6s} {'chunks/s':>10s} {'samples/s':>11s}")
    for row in rows:
        precision = "mixed_float16" if row["mixed_precision"] else "float32"
        print(f"{row['device']:8s} {precision:14s} {row['batch_size']:6d} "
              f"{row['chunks_per_s_median']:10.0f} {row['samples_per_s_median']:11.3e}")
    for comparison in comparisons:
        verdict = "PASS" if comparison["passed"] else "FAIL"
        print(f"{comparison['device']} mixed={comparison['mixed_precision']}: max |diff| / "
              f"max |CPU| = {comparison['relative_diff']:.2e} (tolerance "
              f"{comparison['rtol']:.0e}) {verdict}")
    print(f"wrote {out}")
    return 0 if all(c["passed"] for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
