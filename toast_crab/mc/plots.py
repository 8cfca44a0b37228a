"""Plots of MC timestreams for quick inspection and documentation."""

import numpy as np

__all__ = ["plot_chunks", "plot_solar_cycle"]


def plot_chunks(chunks, sample_rate_hz, path, labels=None, n_stretch_chunks=3, title=None):
    """Plot a stretch of consecutive chunks and the histogram of all samples to a PNG.

    For groups of detectors the stretch shows up to four detectors and a third panel
    shows the correlation matrix of the detectors over all chunks.

    Args:
        chunks (ndarray): (n_chunks, chunk_length) float64, W, or (n_chunks, n_det,
            chunk_length) for a group of detectors. Consecutive rows of one run are drawn
            end to end in the top panel.
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
    if chunks.ndim not in (2, 3):
        raise ValueError(
            "chunks must be 2-D (n_chunks, chunk_length) or 3-D (n_chunks, n_det, "
            f"chunk_length), got shape {chunks.shape}"
        )
    group = chunks if chunks.ndim == 3 else chunks[:, np.newaxis, :]
    n_chunks, n_det, chunk_length = group.shape
    n_stretch = min(n_stretch_chunks, n_chunks)
    if labels is not None and "run_id" in labels:
        same_run = np.asarray(labels["run_id"])[:n_stretch] == labels["run_id"][0]
        n_stretch = int(np.argmin(same_run)) if not same_run.all() else n_stretch
    time_s = np.arange(n_stretch * chunk_length) / sample_rate_hz

    if n_det == 1:
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
        matrix_axis = None
    else:
        figure = plt.figure(figsize=(12, 7), constrained_layout=True)
        grid = figure.add_gridspec(2, 2, width_ratios=(2.2, 1))
        top = figure.add_subplot(grid[0, 0])
        bottom = figure.add_subplot(grid[1, 0])
        matrix_axis = figure.add_subplot(grid[:, 1])

    legend = f"{n_stretch} consecutive chunks"
    if labels is not None and "n_direct_hits" in labels:
        n_direct = int(np.sum(labels["n_direct_hits"][:n_stretch]))
        legend += f", {n_direct} direct hit{'' if n_direct == 1 else 's'}"
    # Up to four detectors spread over the group, so that several pixels are shown.
    shown = np.unique(np.linspace(0, n_det - 1, min(n_det, 4)).round().astype(int))
    for detector in shown:
        stretch_fw = group[:n_stretch, detector, :].ravel() * 1.0e15
        label = legend if n_det == 1 else f"detector {detector}"
        top.plot(time_s, stretch_fw, lw=0.7, label=label)
    for boundary in range(1, n_stretch):
        top.axvline(boundary * chunk_length / sample_rate_hz, color="0.7", lw=0.8, ls="--")
    top.set_xlabel("time [s]")
    top.set_ylabel("power change [fW]")
    if n_det > 1:
        top.set_title(legend, fontsize=9)
    top.legend(loc="upper right")

    samples_fw = group.ravel() * 1.0e15
    bottom.hist(samples_fw, bins=200, histtype="step", log=True)
    bottom.set_xlabel("power change per sample [fW]")
    bottom.set_ylabel("samples")
    bottom.set_title(
        f"{n_chunks} chunks x {n_det} detector{'' if n_det == 1 else 's'} x {chunk_length} "
        f"samples at {sample_rate_hz:g} Hz: mean {samples_fw.mean():.3g} fW, "
        f"std {samples_fw.std():.3g} fW",
        fontsize=9,
    )

    if matrix_axis is not None:
        correlation = np.corrcoef(group.transpose(1, 0, 2).reshape(n_det, -1))
        image = matrix_axis.imshow(correlation, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
        matrix_axis.set_xlabel("detector")
        matrix_axis.set_ylabel("detector")
        matrix_axis.set_title("correlation of detectors", fontsize=9)
        figure.colorbar(image, ax=matrix_axis, shrink=0.6)

    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


def plot_solar_cycle(path, config=None, first_year=2008.0, last_year=2040.0, mark_year=2032.0,
                     mark_label="2032"):
    """Plot phi(t) of the solar-cycle model and the resulting flux at L2 to a PNG.

    Args:
        path (str or Path): Output PNG file.
        config (MCConfig, optional): Solar-cycle and environment parameters; defaults if None.
        first_year, last_year (float): Plotted range, decimal years.
        mark_year (float or None): Year to mark with a vertical line (e.g. a launch date).
        mark_label (str): Legend text of that line.

    Returns:
        str: The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from toast_crab.mc.config import MCConfig
    from toast_crab.mc.environment import omnidirectional_flux_cm2_s
    from toast_crab.mc.solar_cycle import phi_at_decimal_year

    config = MCConfig() if config is None else config
    years = np.linspace(first_year, last_year, 321)
    phi = phi_at_decimal_year(years, config.solar_cycle)
    flux = np.array(
        [sum(omnidirectional_flux_cm2_s(config.environment, value).values()) for value in phi]
    )

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, constrained_layout=True)
    top.plot(years, phi)
    top.set_ylabel("phi [GV]")
    top.set_title(
        f"force-field phi(t): {config.solar_cycle.phi_min_gv:g}-{config.solar_cycle.phi_max_gv:g} GV, "
        f"period {config.solar_cycle.period_years:g} yr",
        fontsize=9,
    )
    bottom.plot(years, flux)
    bottom.set_ylabel(
        f"flux above {config.environment.cutoff_energy_mev_per_nucleon:g} MeV/n [cm$^{{-2}}$ s$^{{-1}}$]"
    )
    bottom.set_xlabel("year")
    bottom.set_title(" + ".join(config.environment.species), fontsize=9)
    if mark_year is not None:
        for axis in (top, bottom):
            axis.axvline(mark_year, color="0.5", ls="--", lw=0.8, label=mark_label)
        top.legend(loc="upper right", fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)
