"""Plots of a training run: losses, discriminator behaviour and generated samples."""

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_training_run", "read_log"]

# Steps averaged by the running mean drawn over the noisy per-step curves.
_SMOOTHING_STEPS = 50


def read_log(path):
    """Read a CSV log of a training run.

    Args:
        path (str): ``log.csv`` or ``eval.csv`` written by the trainer.

    Returns:
        (dict): column name -> (n_rows,) array; float64 where the column is numeric,
        else str.
    """
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = {}
    for key in rows[0] if rows else []:
        values = [row[key] for row in rows]
        try:
            columns[key] = np.array(values, dtype=np.float64)
        except ValueError:
            columns[key] = np.array(values)
    return columns


def _running_mean(values, width):
    width = max(1, min(width, values.size))
    kernel = np.ones(width) / width
    padded = np.concatenate([np.full(width - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _mark_pretraining(axis, log):
    is_pre = log["phase"] == "pretrain"
    if np.any(is_pre):
        axis.axvspan(0, log["step"][is_pre].max(), color="0.9", label="D pre-training")


def _plot_curves(log, keys, ylabel, title, path, ylim=None):
    fig, axis = plt.subplots(figsize=(8, 4))
    _mark_pretraining(axis, log)
    for key in keys:
        (line,) = axis.plot(log["step"], log[key], alpha=0.25, lw=0.6)
        axis.plot(
            log["step"],
            _running_mean(log[key], _SMOOTHING_STEPS),
            color=line.get_color(),
            label=f"{key} ({_SMOOTHING_STEPS}-step mean)",
        )
    axis.set_xlabel("step")
    axis.set_ylabel(ylabel)
    if ylim is not None:
        axis.set_ylim(*ylim)
    axis.set_title(title)
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_examples(validation_w, generated_w, sample_rate_hz, title, path, n_rows=4):
    n_rows = min(n_rows, validation_w.shape[0], generated_w.shape[0])
    time_s = np.arange(validation_w.shape[1]) / sample_rate_hz
    # Chunks with the largest peaks show the glitches; the rest show the continuum.
    picks = {
        "validation MC": _pick_examples(validation_w, n_rows),
        "generated": _pick_examples(generated_w, n_rows),
    }
    fig, axes = plt.subplots(n_rows, 2, figsize=(11, 1.9 * n_rows + 0.6), sharex=True)
    axes = np.atleast_2d(axes)
    for column, (label, chunks) in enumerate(picks.items()):
        for row in range(n_rows):
            axis = axes[row, column]
            axis.plot(time_s, chunks[row], lw=0.6, color="C0" if column == 0 else "C3")
            axis.grid(alpha=0.3)
            if row == 0:
                axis.set_title(label)
            if column == 0:
                axis.set_ylabel("power [W]")
    for axis in axes[-1]:
        axis.set_xlabel("time [s]")
    fig.suptitle(f"{title}: example chunks (rows 1-2 largest peak, others random)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pick_examples(chunks, n_rows):
    order = np.argsort(chunks.max(axis=1))[::-1]
    n_peaked = min(2, n_rows)
    chosen = list(order[:n_peaked])
    # Evenly spaced rest, deterministic so repeated runs plot the same chunks.
    rest = [i for i in np.linspace(0, chunks.shape[0] - 1, n_rows + 2).astype(int) if i not in chosen]
    chosen += rest[: n_rows - n_peaked]
    return chunks[chosen]


def _plot_histograms(validation_w, generated_w, scale_w, title, path):
    # The bins are even in asinh(x / scale_w), the network space, so that both the
    # continuum and the tail get resolution. Tick labels are in units of scale_w.
    y_val = np.arcsinh(validation_w.ravel() / scale_w)
    y_gen = np.arcsinh(generated_w.ravel() / scale_w)
    lo = min(y_val.min(), y_gen.min())
    hi = max(y_val.max(), y_gen.max())
    edges = np.linspace(lo, hi, 121)
    fig, axis = plt.subplots(figsize=(8, 4.5))
    for label, values, color in (("validation MC", y_val, "C0"), ("generated", y_gen, "C3")):
        density, _ = np.histogram(values, bins=edges, density=True)
        axis.stairs(np.where(density > 0, density, np.nan), edges, label=label, color=color)
    axis.set_yscale("log")
    ticks = np.array([-1000, -100, -10, -1, 0, 1, 10, 100, 1000, 10000])
    ticks_y = np.arcsinh(ticks)
    keep = (ticks_y >= lo) & (ticks_y <= hi)
    axis.set_xticks(ticks_y[keep])
    axis.set_xticklabels([f"{t:g}" for t in ticks[keep]])
    axis.set_xlabel(f"sample value / scale_w (scale_w = {scale_w:.3g} W), asinh axis")
    axis.set_ylabel("density per unit asinh")
    axis.set_title(f"{title}: sample distribution")
    axis.legend()
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_psd(validation_w, generated_w, sample_rate_hz, title, path):
    from scipy import signal

    nperseg = min(256, validation_w.shape[1])
    fig, axis = plt.subplots(figsize=(8, 4))
    for label, chunks, color in (("validation MC", validation_w, "C0"), ("generated", generated_w, "C3")):
        freq_hz, psd = signal.welch(chunks, fs=sample_rate_hz, nperseg=nperseg, axis=-1)
        axis.loglog(freq_hz[1:], psd.mean(axis=0)[1:], label=label, color=color)
    axis.set_xlabel("frequency [Hz]")
    axis.set_ylabel("mean PSD [W$^2$/Hz]")
    axis.set_title(f"{title}: mean Welch PSD ({nperseg}-sample segments)")
    axis.legend()
    axis.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_eval(eval_log, title, path):
    fig, (ks_axis, ratio_axis) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = {"raw": ("C0", "-"), "ema": ("C1", "--")}
    for label, (color, line) in styles.items():
        ks_axis.plot(
            eval_log["step"], eval_log[f"{label}_ks_samples"], "o" + line, color=color,
            label=f"{label}: samples",
        )
        ks_axis.plot(
            eval_log["step"], eval_log[f"{label}_ks_chunk_max"], "s" + line, color=color,
            alpha=0.5, label=f"{label}: chunk maxima",
        )
        ratio_axis.plot(
            eval_log["step"], eval_log[f"{label}_rms_ratio"], "^" + line, color=color,
            label=f"{label}: RMS",
        )
        ratio_axis.plot(
            eval_log["step"], eval_log[f"{label}_tail_fraction_ratio"], "v" + line, color=color,
            alpha=0.5, label=f"{label}: fraction beyond 5 sigma",
        )

    ks_axis.set_ylim(0, 1)
    ks_axis.set_ylabel("KS statistic (0 = same distribution)")
    ratio_axis.axhline(1.0, color="0.5", lw=0.8)
    ratio_axis.set_yscale("log")
    ratio_axis.set_ylabel("ratio generated / validation MC")

    for axis in (ks_axis, ratio_axis):
        axis.set_xlabel("adversarial step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")

    fig.suptitle(f"{title}: raw and EMA generator vs validation MC during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sample_comparison(validation_w, generated_w, sample_rate_hz, scale_w, title,
                           out_dir, suffix=""):
    """Write example timestreams, sample histograms and mean PSDs of MC and generator.

    Args:
        validation_w (array): (n_chunks, chunk_length) float64, W. Held-out MC.
        generated_w (array): (n_chunks, chunk_length) float64, W. Generator output.
        sample_rate_hz (float): Sample rate of the chunks.
        scale_w (float): Scale of the asinh amplitude transform, W.
        title (str): Prefix of the plot titles.
        out_dir (str): Folder of the PNG files.
        suffix (str): Appended to the file names ``examples``, ``histogram`` and ``psd``.

    Returns:
        (list): Paths of the three PNG files.
    """
    return [
        _plot_examples(
            validation_w, generated_w, sample_rate_hz, title,
            os.path.join(out_dir, f"examples{suffix}.png"),
        ),
        _plot_histograms(
            validation_w, generated_w, scale_w, title,
            os.path.join(out_dir, f"histogram{suffix}.png"),
        ),
        _plot_psd(
            validation_w, generated_w, sample_rate_hz, title,
            os.path.join(out_dir, f"psd{suffix}.png"),
        ),
    ]


def plot_training_run(
    log_csv, eval_csv, validation_w, generated_w, sample_rate_hz, scale_w, out_dir, title
):
    """Write the PNG plots of one training run.

    Args:
        log_csv (str): Per-step log written by the trainer.
        eval_csv (str): Periodic evaluation log written by the trainer.
        validation_w (array): (n_chunks, chunk_length) float64, W. Held-out MC.
        generated_w (array): (n_chunks, chunk_length) float64, W. Generator output.
        sample_rate_hz (float): Sample rate of the chunks.
        scale_w (float): Scale of the asinh amplitude transform, W.
        out_dir (str): Folder for the PNG files (created if missing).
        title (str): Prefix of the plot titles, usually the model name.

    Returns:
        (list): Paths of the PNG files written.
    """
    os.makedirs(out_dir, exist_ok=True)
    log = read_log(log_csv)
    paths = [
        _plot_curves(
            log, ["d_loss", "g_loss"], "binary cross-entropy", f"{title}: losses",
            os.path.join(out_dir, "losses.png"),
        ),
        _plot_curves(
            log, ["d_acc_real", "d_acc_fake"], "accuracy", f"{title}: discriminator accuracy",
            os.path.join(out_dir, "discriminator_accuracy.png"), ylim=(-0.02, 1.02),
        ),
        _plot_curves(
            log, ["d_real", "d_fake"], "mean sigmoid(D)",
            f"{title}: discriminator response on real and generated chunks",
            os.path.join(out_dir, "discriminator_response.png"), ylim=(-0.02, 1.02),
        ),
    ]
    paths += plot_sample_comparison(
        validation_w, generated_w, sample_rate_hz, scale_w, title, out_dir
    )
    if os.path.isfile(eval_csv) and os.path.getsize(eval_csv) > 0:
        paths.append(_plot_eval(read_log(eval_csv), title, os.path.join(out_dir, "evaluation.png")))
    return paths
