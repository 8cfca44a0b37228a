#!/usr/bin/env python3
"""Measure how the CRAB BCE generator improves with the size of its training set.

The script trains the ``crab_bce`` recipe (a TOML config plus overrides: the same
seed and number of steps for every size) on nested subsets of a training pool,
drawn by MC run. The runs of the pool are shuffled once, and each size takes the
first runs of that order until it contains at least the requested number of chunks.
Every exported generator is scored against one fixed held-out MC set with the same
figures: ``compare_chunks``, the checkpoint score and collapse verdict of
:mod:`toast_crab.training.diagnostics`, and optionally the classifier two-sample
test (C2ST). The same figures for pool chunks vs the held-out set give the MC-vs-MC
floor, the value a perfect generator would reach.

    python benchmarks/bench_learning_curve.py --sizes 1000,3000,10000,30000 --steps 1000

Each size's trainer splits off ``validation_fraction`` of its runs for checkpoint
selection, so it trains on fewer chunks than the size. Results go to a JSON file
and a PNG plot (scores vs training-set size, log x).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "crab_bce.toml"),
                        help="crab_bce training config (default: configs/crab_bce.toml)")
    parser.add_argument("--pool", default=os.path.join(REPO, "data", "mc_lc_30k.h5"),
                        help="Training pool, a training-set HDF5 file (default: data/mc_lc_30k.h5)")
    parser.add_argument("--heldout", default=os.path.join(REPO, "data", "mc_heldout.h5"),
                        help="Held-out MC set used to score every size (default: data/mc_heldout.h5)")
    parser.add_argument("--sizes", default="1000,3000,10000,30000",
                        help="Comma-separated training-set sizes in chunks (default: 1000,3000,10000,30000)")
    parser.add_argument("--steps", type=int, default=1000,
                        help="Adversarial steps per size (default: 1000)")
    parser.add_argument("--n-eval", type=int, default=2000,
                        help="Held-out and generated chunks per score (default: 2000)")
    parser.add_argument("--seed", type=int, default=20241204,
                        help="Seed of the run order, the latents and the C2ST (default: 20241204)")
    parser.add_argument("--no-c2st", action="store_true", help="Skip the classifier two-sample test")
    parser.add_argument("--work-dir", default=os.path.join(REPO, "out", "learning_curve"),
                        help="Folder for the training runs (default: out/learning_curve)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "learning_curve.json"),
                        help="JSON result file; the PNG goes beside it (default: benchmarks/results/learning_curve.json)")
    return parser


def nested_run_subsets(run_ids, sizes, seed):
    """Return nested chunk selections by MC run, one per size.

    Args:
        run_ids (array): (n_chunks,) MC run of each chunk of the pool.
        sizes (list): Requested sizes in chunks, increasing.
        seed (int): Seed of the run order.

    Returns:
        (list): Per size, the sorted (n_selected,) int64 row indices. A size takes
        whole runs, so it may contain up to one run of chunks more than requested.

    Raises:
        ValueError: If the sizes are not increasing or the largest exceeds the pool.
    """
    run_ids = np.asarray(run_ids)
    sizes = [int(size) for size in sizes]
    if not sizes or any(size <= 0 for size in sizes) or sizes != sorted(set(sizes)):
        raise ValueError(f"sizes must be positive and strictly increasing. Got {sizes}.")
    if sizes[-1] > run_ids.size:
        raise ValueError(
            f"The largest size ({sizes[-1]} chunks) exceeds the pool ({run_ids.size} chunks). "
            "Lower --sizes or use a larger pool."
        )
    runs, counts = np.unique(run_ids, return_counts=True)
    order = np.random.default_rng(np.random.SeedSequence([seed, 0])).permutation(runs.size)
    cumulative = np.cumsum(counts[order])
    subsets = []
    for size in sizes:
        n_runs = int(np.searchsorted(cumulative, size) + 1)
        subsets.append(np.flatnonzero(np.isin(run_ids, runs[order[:n_runs]])))
    return subsets


def score_chunks(heldout_w, heldout_runs, chunks_w, chunk_groups, reference, scale_w,
                 sample_rate_hz, seed, c2st):
    """Score a set of chunks against the held-out MC with every figure of the benchmark.

    Args:
        heldout_w (array): (n_eval, chunk_length) float64, W.
        heldout_runs (array): (n_eval,) MC run of each held-out chunk.
        chunks_w (array): (n_eval, chunk_length) float64, W, generated or MC.
        chunk_groups (array): (n_eval,) stream or run of each chunk, or None.
        reference (DiagnosticReference): Of ``heldout_w``.
        scale_w (float): Asinh scale of the C2ST, W.
        sample_rate_hz (float): Sample rate.
        seed (int): Seed of the diagnosis and the C2ST.
        c2st (bool): Run the classifier two-sample test.

    Returns:
        (dict): ``figures`` (compare_chunks), ``diagnostics`` (JSON diagnosis),
        ``score``, ``collapsed``, ``c2st`` (dict or None) and ``c2st_s``.
    """
    from toast_crab.training import compare_chunks, diagnostics

    diagnosis = diagnostics.diagnose(heldout_w, chunks_w, reference=reference, seed=seed)
    result = {
        "figures": compare_chunks(heldout_w, chunks_w, sample_rate_hz),
        "diagnostics": diagnostics.diagnosis_to_json(diagnosis),
        "score": diagnosis["score"],
        "collapsed": diagnosis["collapsed"],
        "c2st": None,
        "c2st_s": None,
    }
    if c2st:
        from toast_crab.validation.classifier import classifier_two_sample_test

        start = time.perf_counter()
        test = classifier_two_sample_test(
            heldout_w, chunks_w, scale_w, groups_a=heldout_runs, groups_b=chunk_groups, seed=seed
        )
        result["c2st"] = test.to_dict()
        result["c2st_s"] = time.perf_counter() - start
    return result


def _train_size(config, pool, rows, size, work_dir, progress):
    """Write one subset, train on it and return (bundle path, card, wall seconds)."""
    from toast_crab.datasets import write_training_set
    from toast_crab.training import train_crab_bce

    size_dir = os.path.join(work_dir, f"size_{size:06d}")
    os.makedirs(size_dir, exist_ok=True)
    subset_path = os.path.join(size_dir, "training_set.h5")
    labels = {name: values[rows] for name, values in pool.labels.items()}
    provenance = dict(pool.provenance, learning_curve_subset={"size": size, "n_chunks": int(rows.size)})
    write_training_set(subset_path, pool.chunks[rows], labels, pool.sample_rate_hz, provenance)
    size_config = dataclasses.replace(
        config,
        data_path=subset_path,
        out_dir=os.path.join(size_dir, "run"),
        bundle_path=os.path.join(size_dir, "run", "bundle", "model.keras"),
    )
    start = time.perf_counter()
    try:
        result = train_crab_bce(size_config, progress=progress)
    finally:
        # The subset is a copy of pool rows; the card records its hash and provenance.
        os.remove(subset_path)
    return result["bundle"], result["card"], time.perf_counter() - start


def _generate(bundle_path, n_chunks, seed):
    from toast_crab.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    latents = rng.standard_normal((n_chunks, *bundle.latent_shape)).astype(np.float32)
    outputs = [
        np.asarray(bundle.generator.predict_on_batch(latents[start : start + 512]), dtype=np.float64)
        for start in range(0, n_chunks, 512)
    ]
    chunks_y = np.concatenate(outputs).reshape(n_chunks, -1)
    return bundle.transform.inverse(chunks_y)


def run_learning_curve(config, pool_path, heldout_path, sizes, n_eval=2000, seed=0, c2st=True,
                       work_dir="out/learning_curve", progress=True):
    """Train on nested by-run subsets of a pool and score every generator.

    Args:
        config (CrabBCEConfig): Training settings used for every size; its data,
            output and bundle paths are replaced per size.
        pool_path (str): Training pool (training-set HDF5).
        heldout_path (str): Held-out MC set.
        sizes (list): Increasing training-set sizes in chunks.
        n_eval (int): Held-out and generated chunks per score.
        seed (int): Seed of the run order, latents, pool sample and C2ST.
        c2st (bool): Run the classifier two-sample test.
        work_dir (str): Folder of the training runs.
        progress (bool): Show progress bars.

    Returns:
        (dict): ``sizes`` (one entry per size: chunks, runs, scores, timing),
        ``mc_vs_mc`` (the floor: pool chunks vs held-out), ``n_eval``, ``seed``.
    """
    from tqdm.auto import tqdm

    from toast_crab.datasets import read_training_set
    from toast_crab.training import diagnostics

    pool = read_training_set(pool_path)
    heldout = read_training_set(heldout_path)
    if heldout.sample_rate_hz != pool.sample_rate_hz or heldout.chunk_length != pool.chunk_length:
        raise ValueError(
            f"The held-out set ({heldout.sample_rate_hz} Hz, {heldout.chunk_length} samples) and "
            f"the pool ({pool.sample_rate_hz} Hz, {pool.chunk_length} samples) differ; use sets "
            "made with one MC configuration."
        )
    n_eval = min(int(n_eval), heldout.n_chunks)
    subsets = nested_run_subsets(pool.labels["run_id"], sizes, seed)

    # The held-out chunks are a random sample of the held-out set, fixed for every size.
    sample_rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    heldout_rows = np.sort(sample_rng.choice(heldout.n_chunks, size=n_eval, replace=False))
    heldout_w = heldout.chunks[heldout_rows]
    heldout_runs = heldout.labels["run_id"][heldout_rows]
    reference = diagnostics.make_reference(heldout_w, seed=seed)
    scale_w = reference.scale_w
    score_args = dict(reference=reference, scale_w=scale_w, sample_rate_hz=pool.sample_rate_hz,
                      seed=seed, c2st=c2st)

    pool_rows = np.sort(sample_rng.choice(pool.n_chunks, size=n_eval, replace=False))
    floor = score_chunks(heldout_w, heldout_runs, pool.chunks[pool_rows],
                         pool.labels["run_id"][pool_rows], **score_args)
    floor["method"] = f"{n_eval} random pool chunks vs the {n_eval} held-out chunks"

    entries = []
    for size, rows in tqdm(list(zip(sizes, subsets)), desc="learning curve", unit="size",
                           disable=not progress):
        bundle_path, card, train_s = _train_size(config, pool, rows, int(size), work_dir, progress)
        generated_w = _generate(bundle_path, n_eval, seed)
        entry = score_chunks(heldout_w, heldout_runs, generated_w, None, **score_args)
        training = card["training"]
        entry.update({
            "size_requested": int(size),
            "n_chunks": int(rows.size),
            "n_runs": int(np.unique(pool.labels["run_id"][rows]).size),
            "n_chunks_train": int(card["training_data"]["n_chunks_train"]),
            "bundle": bundle_path,
            "exported_generator": training["exported_generator"],
            "exported_step": training["exported_step"],
            "train_wall_s": train_s,
            "adversarial_step_ms_median": training["adversarial_step_ms_median"],
        })
        entries.append(entry)
    return {"sizes": entries, "mc_vs_mc": floor, "n_eval": n_eval, "seed": int(seed)}


def _plot_curve(results, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = results["sizes"]
    floor = results["mc_vs_mc"]
    sizes = [entry["n_chunks"] for entry in entries]
    panels = [
        ("checkpoint score (diagnostics)", lambda e: e["score"], True),
        ("KS statistic, all samples", lambda e: e["figures"]["ks_samples"], False),
        ("KS statistic, chunk maxima", lambda e: e["figures"]["ks_chunk_max"], False),
        ("C2ST accuracy", lambda e: e["c2st"]["accuracy"] if e["c2st"] else np.nan, False),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for axis, (label, value, log_y) in zip(axes.ravel(), panels):
        axis.plot(sizes, [value(entry) for entry in entries], "o-", label="generator vs held-out MC")
        axis.axhline(value(floor), color="0.4", ls="--", label="MC vs MC (floor)")
        if label.startswith("C2ST"):
            for entry, size in zip(entries, sizes):
                if entry["c2st"]:
                    axis.plot([size, size], [entry["c2st"]["ci_low"], entry["c2st"]["ci_high"]], color="C0")
            axis.axhline(0.5, color="0.7", lw=0.8)
        axis.set_xscale("log")
        if log_y:
            axis.set_yscale("log")
        axis.set_xlabel("training-set size (chunks, before the validation split)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _git_commit():
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def main(argv=None):
    args = build_parser().parse_args(argv)
    from toast_crab.training.cli import load_config

    sizes = [int(value) for value in args.sizes.split(",") if value.strip()]
    if args.steps <= 0:
        raise SystemExit(f"--steps must be positive. Got {args.steps}.")
    family, config = load_config(args.config, data=args.pool, steps=args.steps)
    if family != "crab_bce":
        raise SystemExit(f"--config must be a crab_bce config. Got family {family!r}.")
    # Four evaluations per run select the exported snapshot; one checkpoint at the end.
    config = dataclasses.replace(
        config, eval_interval=max(1, args.steps // 4), checkpoint_interval=args.steps
    )

    wall_start = time.perf_counter()
    results = run_learning_curve(
        config, args.pool, args.heldout, sizes, n_eval=args.n_eval, seed=args.seed,
        c2st=not args.no_c2st, work_dir=args.work_dir,
    )
    results.update({
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "config": config.to_toml_dict(),
        "wall_s": time.perf_counter() - wall_start,
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()})",
        "git_commit": _git_commit(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, default=float)
    plot_path = os.path.splitext(args.out)[0] + ".png"
    _plot_curve(results, plot_path, f"CRAB BCE learning curve, {args.steps} steps per size")
    print(f"wrote {args.out} and {plot_path} in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
