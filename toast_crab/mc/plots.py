"""Plots of MC timestreams for quick inspection and documentation."""

import numpy as np

__all__ = ["plot_chunks"]


def plot_chunks(chunks, sample_rate_hz, path, labels=None, n_stretch_chunks=3, title=None):
    """Plot a stretch of consecutive chunks and the histogram of all samples to a PNG.

    Args:
        chunks (ndarray): (n_chunks, chunk_length) float64, W. Consecutive rows of one run
            are drawn end to end in the top panel.
        sample_rate_hz (float): Sample rate, Hz.
        path (str or Path): Output PNG file.
        labels (dict, optional): Per-chunk labels; ``run_id`` limits the stretch to the first
            run and ``n_direct_hits`` is shown in the legend.
        n_stretch_chunks (int): Chunks in the top panel.
        title (str, optional): Figure title.

    Returns:
        str: The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    chunks = np.asarray(chunks, dtype=np.float64)
    if chunks.ndim != 2:
        raise ValueError(f"chunks must be 2-D (n_chunks, chunk_length), got shape {chunks.shape}")
    n_stretch = min(n_stretch_chunks, chunks.shape[0])
    if labels is not None and "run_id" in labels:
        same_run = np.asarray(labels["run_id"])[:n_stretch] == labels["run_id"][0]
        n_stretch = int(np.argmin(same_run)) if not same_run.all() else n_stretch
    stretch_fw = chunks[:n_stretch].ravel() * 1.0e15
    time_s = np.arange(stretch_fw.size) / sample_rate_hz

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    legend = f"{n_stretch} consecutive chunks"
    if labels is not None and "n_direct_hits" in labels:
        n_direct = int(np.sum(labels["n_direct_hits"][:n_stretch]))
        legend += f", {n_direct} direct hit{'' if n_direct == 1 else 's'}"
    top.plot(time_s, stretch_fw, lw=0.7, label=legend)
    for boundary in range(1, n_stretch):
        top.axvline(boundary * chunks.shape[1] / sample_rate_hz, color="0.7", lw=0.8, ls="--")
    top.set_xlabel("time [s]")
    top.set_ylabel("power change [fW]")
    top.legend(loc="upper right")

    samples_fw = chunks.ravel() * 1.0e15
    bottom.hist(samples_fw, bins=200, histtype="step", log=True)
    bottom.set_xlabel("power change per sample [fW]")
    bottom.set_ylabel("samples")
    bottom.set_title(
        f"{chunks.shape[0]} chunks x {chunks.shape[1]} samples at {sample_rate_hz:g} Hz: "
        f"mean {samples_fw.mean():.3g} fW, std {samples_fw.std():.3g} fW",
        fontsize=9,
    )
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)
