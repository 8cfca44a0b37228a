"""Validation reports: ``metrics.json``, PNG plots and ``report.md``.

The report puts every candidate (generator bundle) beside the held-out MC and the
calibration MC sets, so each number is read against the MC's own scatter.
"""

import json
import os
import subprocess

import numpy as np

__all__ = ["git_commit", "plot_groups", "plot_panel", "write_json", "write_markdown"]

_MC_COLOR = "black"
_MC_BAND_COLOR = "0.75"
_CANDIDATE_COLORS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")

# Quantity plotted in fW, the natural scale of the cosmic-ray continuum.
_FW_PER_W = 1.0e15


def git_commit():
    """Return the git commit of the toast_crab checkout, or None outside a repository."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", package_dir, "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path, document):
    """Write a JSON document; NumPy scalars and arrays are converted, NaN becomes null."""

    def scrub(value):
        if isinstance(value, float) and not np.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(key): scrub(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [scrub(item) for item in value]
        return value

    with open(path, "w", encoding="utf-8") as handle:
        json.dump(scrub(document), handle, indent=1, default=_json_default, allow_nan=False)
        handle.write("\n")
    return path


def _colors(labels):
    return {label: _CANDIDATE_COLORS[i % len(_CANDIDATE_COLORS)] for i, label in enumerate(labels)}


def _figure(n_rows, n_cols, width, height):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    return plt, fig, axes


def _save(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_timestreams(result, reference_label, candidate_labels, path):
    """Plot three consecutive chunks of each set: full range and a continuum zoom."""
    labels = [reference_label] + list(candidate_labels)
    colors = _colors(candidate_labels)
    colors[reference_label] = _MC_COLOR
    ref = result.summaries[reference_label].examples * _FW_PER_W
    zoom = np.percentile(ref, [0.5, 99.0])
    zoom = (zoom[0] - 0.3 * np.ptp(zoom), zoom[1] + 0.3 * np.ptp(zoom))
    plt, fig, axes = _figure(len(labels), 2, 12, 1.9 * len(labels) + 0.6)
    for row, label in enumerate(labels):
        chunks = result.summaries[label].examples * _FW_PER_W
        length = chunks.shape[1]
        rate_hz = result.sample_rate_hz
        time_s = np.arange(chunks.size) / rate_hz
        for col, limits in enumerate((None, zoom)):
            ax = axes[row, col]
            ax.plot(time_s, chunks.ravel(), lw=0.6, color=colors[label])
            for boundary in range(1, chunks.shape[0]):
                ax.axvline(boundary * length / rate_hz, color="0.6", ls="--", lw=0.8)
            if limits is not None:
                ax.set_ylim(*limits)
            ax.set_ylabel("power [fW]")
            title = label if col == 0 else f"{label}: continuum (MC scale)"
            ax.set_title(title, fontsize=10)
        if row == len(labels) - 1:
            axes[row, 0].set_xlabel("time [s] (dashed: chunk boundaries)")
            axes[row, 1].set_xlabel("time [s]")
    return _save(plt, fig, path)


def _histogram_band(values_list, edges):
    counts = np.array([np.histogram(v, bins=edges, density=True)[0] for v in values_list])
    return counts.min(axis=0), counts.max(axis=0)


def _ccdf(values):
    values = np.sort(np.asarray(values))[::-1]
    return values, np.arange(1, values.size + 1) / values.size


def plot_distributions(result, reference_label, calibration_labels, candidate_labels, path):
    """Plot sample values, event amplitudes, counts, widths and decay ratios."""
    summaries = result.summaries
    colors = _colors(candidate_labels)
    ref = summaries[reference_label]
    calibration = [summaries[label] for label in calibration_labels]
    plt, fig, axes = _figure(2, 3, 14, 7.5)

    ax = axes[0, 0]
    low, high = np.quantile(ref.scaled, [1e-5, 1 - 1e-6])
    edges = np.linspace(min(low, -2.0), high + 1.0, 120)
    band = _histogram_band([s.scaled for s in calibration], edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    ax.fill_between(centers, band[0], band[1], step="mid", color=_MC_BAND_COLOR, label="MC sets (range)")
    ax.stairs(np.histogram(ref.scaled, edges, density=True)[0], edges, color=_MC_COLOR, label=reference_label)
    for label in candidate_labels:
        clipped = np.clip(summaries[label].scaled, edges[0], edges[-1])
        ax.stairs(np.histogram(clipped, edges, density=True)[0], edges, color=colors[label], label=label)
    ax.set_yscale("log")
    ax.set_xlabel(f"asinh(x / sigma), sigma = {result.sigma_w * _FW_PER_W:.3g} fW (ends: clipped)")
    ax.set_ylabel("density")
    ax.set_title("all samples")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    for summary in calibration:
        values, ccdf = _ccdf(10 ** summary.log_amplitude * _FW_PER_W)
        ax.loglog(values, ccdf, color=_MC_BAND_COLOR, lw=2)
    for label, color in [(reference_label, _MC_COLOR)] + [(lbl, colors[lbl]) for lbl in candidate_labels]:
        if summaries[label].log_amplitude.size:
            values, ccdf = _ccdf(10 ** summaries[label].log_amplitude * _FW_PER_W)
            ax.loglog(values, ccdf, color=color, lw=1, label=label)
    ax.set_xlabel("event amplitude [fW]")
    ax.set_ylabel("fraction of events above")
    ax.set_title(f"event amplitudes (> {result.config.threshold_sigma:g} sigma)")
    ax.legend(fontsize=8)

    ax = axes[0, 2]
    top = int(max(np.max(s.events.counts) for s in summaries.values())) + 2
    edges = np.arange(-0.5, min(top, 200) + 0.5)
    band = _histogram_band([s.events.counts for s in calibration], edges)
    ax.fill_between(np.arange(edges.size - 1), band[0], band[1], step="mid", color=_MC_BAND_COLOR)
    ax.stairs(np.histogram(ref.events.counts, edges, density=True)[0], edges, color=_MC_COLOR)
    for label in candidate_labels:
        ax.stairs(np.histogram(summaries[label].events.counts, edges, density=True)[0], edges,
                  color=colors[label])
    ax.set_xlabel("events per chunk")
    ax.set_ylabel("fraction of chunks")
    ax.set_title("event counts")

    ax = axes[1, 0]
    edges = np.arange(0.5, 12.5)
    for label, color in [(reference_label, _MC_COLOR)] + [(lbl, colors[lbl]) for lbl in candidate_labels]:
        widths = np.clip(summaries[label].events.width_samples, 1, 11)
        if widths.size:
            ax.stairs(np.histogram(widths, edges, density=True)[0], edges, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("event width [samples] (last bin: >= 11)")
    ax.set_ylabel("fraction of events")
    ax.set_title("event widths")

    ax = axes[1, 1]
    edges = np.linspace(-1.0, 1.5, 60)
    for label, color in [(reference_label, _MC_COLOR)] + [(lbl, colors[lbl]) for lbl in candidate_labels]:
        decay = summaries[label].events.decay_ratio
        decay = np.clip(decay[np.isfinite(decay)], edges[0], edges[-1])
        if decay.size:
            ax.stairs(np.histogram(decay, edges, density=True)[0], edges, color=color, label=label)
    ax.set_xlabel("(x[peak + 1] - baseline) / (x[peak] - baseline)")
    ax.set_ylabel("density")
    ax.set_title("decay after the peak")

    ax = axes[1, 2]
    position = np.arange(ref.position_std.size)
    for summary in calibration:
        ax.plot(position, summary.position_std, color=_MC_BAND_COLOR, lw=1.5)
    ax.plot(position, ref.position_std, color=_MC_COLOR, lw=0.8, label=reference_label)
    for label in candidate_labels:
        ax.plot(position, summaries[label].position_std, color=colors[label], lw=0.8, label=label)
    ax.set_xlabel("sample position in chunk")
    ax.set_ylabel("std of asinh(x / sigma) over chunks")
    ax.set_title("position in chunk (edges show seams)")
    return _save(plt, fig, path)


def plot_spectra(result, reference_label, calibration_labels, candidate_labels, path):
    """Plot mean PSDs (W and scaled), the autocorrelation and the comb-line search."""
    summaries = result.summaries
    colors = _colors(candidate_labels)
    ref = summaries[reference_label]
    calibration = [summaries[label] for label in calibration_labels]
    plt, fig, axes = _figure(2, 2, 12, 8)
    freqs = ref.freqs_hz[1:]

    for ax, attribute, unit, title in (
        (axes[0, 0], "psd", "fW^2 / Hz", "mean PSD of x"),
        (axes[0, 1], "psd_scaled", "1 / Hz", "mean PSD of asinh(x / sigma)"),
    ):
        scale = _FW_PER_W**2 if attribute == "psd" else 1.0
        stack = np.array([getattr(s, attribute)[1:] for s in calibration]) * scale
        ax.fill_between(freqs, stack.min(axis=0), stack.max(axis=0), color=_MC_BAND_COLOR,
                        label="MC sets (range)")
        ax.loglog(freqs, getattr(ref, attribute)[1:] * scale, color=_MC_COLOR, label=reference_label)
        for label in candidate_labels:
            values = getattr(summaries[label], attribute)[1:] * scale
            ax.loglog(freqs, np.where(values > 0, values, np.nan), color=colors[label], label=label)
        ax.set_xlabel("frequency [Hz]")
        ax.set_ylabel(f"PSD [{unit}]")
        ax.set_title(title)
    axes[0, 0].legend(fontsize=8)

    ax = axes[1, 0]
    lags = np.arange(ref.acf.size)
    for summary in calibration:
        ax.plot(lags, summary.acf, color=_MC_BAND_COLOR, lw=3)
    ax.plot(lags, ref.acf, "o-", color=_MC_COLOR, ms=3, label=reference_label)
    for label in candidate_labels:
        ax.plot(lags, summaries[label].acf, "s-", color=colors[label], ms=3, label=label)
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel("lag [samples]")
    ax.set_ylabel("mean autocorrelation")
    ax.set_title("autocorrelation")

    ax = axes[1, 1]
    comb = ref.comb
    if comb["freqs_hz"] is not None:
        n_lines = 12
        line_freqs = comb["line_freqs_hz"][:n_lines]
        upper = line_freqs[-1] * 1.05
        for label, color in [(reference_label, _MC_COLOR)] + [(lbl, colors[lbl]) for lbl in candidate_labels]:
            this = summaries[label].comb
            if this["freqs_hz"] is None:
                continue
            keep = this["freqs_hz"] <= upper
            values = this["psd"][keep] * _FW_PER_W**2
            ax.semilogy(this["freqs_hz"][keep], np.where(values > 0, values, np.nan), color=color,
                        lw=0.8, label=f"{label}: excess {this['excess_dex']:.3f} dex")
        for frequency in line_freqs:
            ax.axvline(frequency, color="0.7", lw=0.6, ls=":")
        ax.set_xlabel("frequency [Hz] (dotted: k / chunk duration)")
        ax.set_ylabel("PSD [fW^2 / Hz]")
        ax.set_title("long timelines: lines at the chunk period")
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_scores(result, candidate_labels, path):
    """Plot the C2ST accuracies and every metric's value over its threshold."""
    colors = _colors(candidate_labels)
    plt, fig, axes = _figure(1, 2, 14, 0.3 * len(result.metrics) + 1.5)

    ax = axes[0, 0]
    c2st = next((m for m in result.metrics if m.name == "c2st_accuracy"), None)
    if c2st is not None:
        rows = [(d, f"held-out vs {d.get('label', 'MC')}", _MC_COLOR) for d in c2st.mc_details]
        rows += [(c2st.details[label], label, colors[label]) for label in candidate_labels
                 if label in c2st.details]
        for y, (detail, name, color) in enumerate(rows):
            low = detail["accuracy"] - detail["ci_low"]
            high = detail["ci_high"] - detail["accuracy"]
            ax.errorbar(detail["accuracy"], y, xerr=[[low], [high]], fmt="o", color=color, capsize=3)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([name for _, name, _ in rows])
        ax.axvline(0.5, color="0.5", lw=0.8)
        ax.axvline(c2st.threshold, color="tab:red", ls="--", label=f"threshold {c2st.threshold:.3f}")
        ax.set_xlim(0.4, 1.02)
        ax.set_xlabel("held-out accuracy (95 % Clopper-Pearson)")
        ax.set_title("classifier two-sample test")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.set_axis_off()

    ax = axes[0, 1]
    names = [m.name for m in result.metrics]
    floor = 1e-3
    for y, metric in enumerate(result.metrics):
        threshold = metric.threshold
        if not np.isfinite(threshold) or threshold <= 0:
            continue
        mc = np.array([v for v in metric.mc_values if np.isfinite(v)]) / threshold
        ax.plot(np.clip(mc, floor, None), np.full(mc.size, y), "|", color=_MC_COLOR, ms=10)
        for index, label in enumerate(candidate_labels):
            value = metric.values.get(label)
            if value is None:
                continue
            scaled_value = value / threshold if np.isfinite(value) else 1e3
            verdict = metric.passed.get(label)
            marker = {True: "o", False: "x", None: "s"}[verdict]
            ax.plot(np.clip(scaled_value, floor, 1e3), y + 0.15 * (index - 0.5 * (len(candidate_labels) - 1)),
                    marker, color=colors[label], ms=6)
    ax.axvline(1.0, color="tab:red", ls="--")
    ax.set_xscale("log")
    ax.set_xlim(floor * 0.8, 1.3e3)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("value / threshold (pass left of the dashed line; NaN plotted at 1000)")
    handles = [ax.plot([], [], "|", color=_MC_COLOR, ms=10, label="MC vs MC")[0]]
    handles += [ax.plot([], [], "o", color=colors[label], label=label)[0] for label in candidate_labels]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_title("all metrics (o pass, x fail, square: reported only)")
    return _save(plt, fig, path)


def plot_panel(result, reference_label, calibration_labels, candidate_labels, out_dir):
    """Write all timestream-level plots; return their file names."""
    files = {
        "timestreams": "timestreams.png",
        "distributions": "distributions.png",
        "spectra": "spectra.png",
        "scores": "scores.png",
    }
    plot_timestreams(result, reference_label, candidate_labels,
                     os.path.join(out_dir, files["timestreams"]))
    plot_distributions(result, reference_label, calibration_labels, candidate_labels,
                       os.path.join(out_dir, files["distributions"]))
    plot_spectra(result, reference_label, calibration_labels, candidate_labels,
                 os.path.join(out_dir, files["spectra"]))
    plot_scores(result, candidate_labels, os.path.join(out_dir, files["scores"]))
    return files


def plot_groups(result, candidate_labels, path):
    """Plot the detector correlation matrices of the MC and of every bundle and mode.

    Row 1 shows the matrices of asinh(x / sigma), row 2 those of x in W. Every panel
    shares one colour scale, from the smallest entry (at most 0) to 1.
    """
    columns = [(result.reference_label, result.reference_label)]
    for label in candidate_labels:
        for mode, sets in result.candidate_sets.items():
            if label in sets:
                columns.append((sets[label], f"{label}\n{mode} streams"))
    quantities = (("scaled", "asinh(x / sigma)"), ("w", "x in W"))
    values = [result.matrices[key][q] for key, _ in columns for q, _ in quantities]
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.zeros(1)])
    low = min(0.0, float(finite.min()))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(columns), figsize=(3.2 * len(columns) + 1.2, 6.4),
                             squeeze=False, layout="constrained")
    for col, (key, title) in enumerate(columns):
        for row, (quantity, quantity_text) in enumerate(quantities):
            ax = axes[row, col]
            matrix = result.matrices[key][quantity]
            image = ax.imshow(matrix, vmin=low, vmax=1.0, cmap="viridis")
            if matrix.shape[0] <= 8:
                for (i, j), entry in np.ndenumerate(matrix):
                    text = "nan" if not np.isfinite(entry) else f"{entry:.2f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=6,
                            color="white" if np.isfinite(entry) and entry < 0.5 * (low + 1) else "black")
            ax.set_title(f"{title}: {quantity_text}", fontsize=9)
            ax.set_xlabel("detector")
            ax.set_ylabel("detector")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="Pearson correlation")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _groups_markdown(groups, labels, panel):
    rows = {m["name"]: m for m in panel["metrics"] if m["group"] == "groups"}
    lines = ["## Detector groups", ""]
    lines.append(
        f"Detector-by-detector Pearson correlation matrices of {groups['chunks_per_set']} "
        f"groups of {groups['n_detectors']} detectors. The {groups['reference_label']} (runs "
        f"{groups['runs'][groups['reference_label']]}) is compared with "
        f"{len(groups['runs']) - 1} independent MC group sets of the same size from other "
        "runs. Each bundle's groups are drawn with InjectCRAB's stream keys in both stream "
        "modes: `detector` gives every detector its own stream, `wafer` one stream shared by "
        "the group. The `correlation_matrix_*` rows of the table above judge them."
    )
    lines.append("")

    matrices = groups["matrices"]
    reference = np.array(matrices[groups["reference_label"]]["scaled"], dtype=float)
    off = ~np.eye(reference.shape[0], dtype=bool)
    lines.append(
        f"* Mean off-diagonal correlation of asinh(x / sigma): held-out MC "
        f"{_format(float(np.mean(reference[off])))}."
    )
    for label in labels:
        parts = []
        for mode, sets in groups["candidate_sets"].items():
            matrix = np.array(matrices[sets[label]]["scaled"], dtype=float)
            parts.append(f"{mode} streams {_format(float(np.mean(matrix[off])))}")
        lines.append(f"* {label}: " + ", ".join(parts) + ".")

    for name in ("correlation_matrix_detector", "correlation_matrix_wafer"):
        if name in rows:
            lines.append(f"* `{name}` threshold {_format(rows[name]['threshold'])} "
                         f"(MC-vs-MC max {_format(rows[name]['mc_max'])}).")
    lines += ["", f"![detector correlation matrices]({groups['plot']})", ""]
    return lines


def _format(value):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1e3 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _cell(text):
    return str(text).replace("|", "\\|")


def _verdict(passed):
    return {True: "pass", False: "**FAIL**", None: "(info)"}[passed]


def write_markdown(path, document, plots, map_plot=None):
    """Write ``report.md``: verdict table, plots, notes and provenance."""
    panel = document["panel"]
    labels = [bundle["label"] for bundle in document["bundles"]]
    lines = ["# crab-validate report", ""]
    lines.append(
        f"Generated {document['created_utc']} by toast_crab {document['toast_crab_version']} "
        f"(git {document['git_commit'] or 'unknown'}), wall time {document['wall_time_s']:.0f} s."
    )
    lines += ["", "Command:", "", "```", document["command"], "```", ""]

    lines += ["## Verdict", ""]
    for bundle in document["bundles"]:
        verdict = panel["verdicts"].get(bundle["label"], [0, 0])
        lines.append(
            f"* **{bundle['label']}** ({bundle['path']}): passes {verdict[0]} of {verdict[1]} "
            "timestream metrics."
        )
    lines.append("")
    lines.append(
        f"Reference: {document['mc']['reference']['n_chunks']} held-out MC chunks "
        f"({document['mc']['reference']['description']}). Noise floor: "
        f"{len(document['mc']['calibration'])} independent MC sets of the same size. "
        f"Robust sigma of the reference: {panel['sigma_w']:.4g} W."
    )
    lines.append("")

    header = "| metric | what | rule | MC-vs-MC max | threshold | " + " | ".join(labels) + " |"
    lines += [header, "|" + "---|" * (5 + len(labels))]
    for metric in panel["metrics"]:
        cells = [
            f"`{metric['name']}`",
            metric["description"] + (f" [{metric['unit']}]" if metric["unit"] else ""),
            metric["rule"],
            _format(metric["mc_max"]),
            _format(metric["threshold"]),
        ]
        for label in labels:
            value = metric["values"].get(label)
            if label not in metric["values"]:
                cells.append("not run")
            else:
                cells.append(f"{_format(value)} {_verdict(metric['passed'].get(label))}")
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines.append("")

    if document.get("groups"):
        lines += _groups_markdown(document["groups"], labels, panel)

    if document.get("maps"):
        maps = document["maps"]
        lines += ["## Map level", ""]
        if maps.get("skipped"):
            lines += [f"Skipped: {maps['skipped']}", ""]
        else:
            lines.append(maps["description"])
            lines.append("")
            lines += ["| quantity | statistic | " + " | ".join(maps["candidates"]) + " |",
                      "|---|---|" + "---|" * len(maps["candidates"])]
            for row in maps["rows"]:
                cells = [row["quantity"], row["statistic"]]
                for label in maps["candidates"]:
                    entry = row["values"].get(label)
                    cells.append("n/a" if entry is None else
                                 f"{_format(entry['value'])} {_verdict(entry['passed'])}")
                lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
            lines.append("")
            if map_plot:
                lines += [f"![map-level comparison]({map_plot})", ""]

    lines += ["## Plots", ""]
    captions = {
        "scores": "C2ST accuracies and every metric over its threshold",
        "timestreams": "Three consecutive chunks of each set",
        "distributions": "Sample values, event amplitudes, counts, widths, decay, position in chunk",
        "spectra": "Mean spectra, autocorrelation and the chunk-period comb",
    }
    for key in ("scores", "timestreams", "distributions", "spectra"):
        lines += [f"### {captions[key]}", "", f"![{key}]({plots[key]})", ""]

    lines += ["## Data and settings", ""]
    for note in document["notes"]:
        lines.append(f"* {note}")
    lines.append("")
    mc = document["mc"]
    lines.append(f"* MC file: `{mc['path']}` (sha256 `{mc['sha256'][:16]}...`), "
                 f"{mc['n_chunks_in_file']} chunks of {mc['chunk_length']} samples at "
                 f"{mc['sample_rate_hz']:g} Hz, MC seed {mc['provenance'].get('seed')}.")
    lines.append(f"* Reference runs: {mc['reference']['runs']}")
    for entry in mc["calibration"]:
        lines.append(f"* {entry['label']}: {entry['description']}")
    if document.get("groups"):
        groups = document["groups"]
        lines.append(f"* Group MC file: `{groups['path']}` (sha256 `{groups['sha256'][:16]}...`), "
                     f"{groups['n_chunks_in_file']} groups of {groups['n_detectors']} detectors, "
                     f"MC seed {groups['provenance'].get('seed')}; runs per set {groups['runs']}.")
        lines.append(f"* Group stream keys: {groups['stream_keys']}.")
    lines.append(f"* Seeds: {document['seeds']}")
    lines.append(f"* Panel settings: `{json.dumps(panel['config'])}`")
    for bundle in document["bundles"]:
        card = bundle["card"]
        lines.append(
            f"* Bundle {bundle['label']}: family {card.get('family')}, latent "
            f"{card.get('latent_shape')}, transform {card.get('transform')}, training "
            f"steps {card.get('training', {}).get('adversarial_steps', card.get('training', {}).get('steps'))}."
        )
    lines += ["", "Every number, the full model cards and the MC provenance are in `metrics.json`.", ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path
