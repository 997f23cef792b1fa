"""Figures for reports, as PNG bytes (matplotlib, headless). Each takes plain dicts from the evaluators.

png = heatmap(matrix, rows, cols, "perplexity change")     # matrix[row][col] -> value
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping


def _figure(width: float, height: float, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(ncols=ncols, figsize=(width, height), dpi=110)


def _png(plt, fig) -> bytes:
    from matplotlib.text import Text

    for text in fig.findobj(Text):  # labels from corpora ("$x$") are text, not mathtext that may fail to parse
        if "$" in text.get_text() and not text.get_text().startswith(r"$\mathdefault"):  # log-axis ticks stay math
            text.set_parse_math(False)
    buf = io.BytesIO()
    if not fig.get_constrained_layout():
        fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def heatmap(
    matrix: dict[str, dict[str, float]],
    rows: list[str],
    cols: list[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = "{:.2f}",
    cmap: str = "RdBu_r",
    center: float | None = 0.0,
) -> bytes:
    plt, (fig, ax) = _figure(1.2 + 0.55 * len(cols), 1.0 + 0.45 * len(rows))
    values = [[matrix.get(r, {}).get(c, math.nan) for c in cols] for r in rows]
    finite = [abs(v - (center or 0)) for row in values for v in row if not math.isnan(v)] or [1.0]
    if center is None:
        im = ax.imshow(values, cmap=cmap, aspect="auto")
    else:
        span = max(finite) or 1.0
        im = ax.imshow(values, cmap=cmap, vmin=center - span, vmax=center + span, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(plt, fig)


def neurons_per_layer(counts: dict[str, dict[int, int]], n_layers: int, title: str) -> bytes:
    """Stacked bars: for each layer, how many neurons each language has."""
    plt, (fig, ax) = _figure(6.5, 3.2)
    bottom = [0] * n_layers
    for lang, per_layer in counts.items():
        heights = [per_layer.get(layer, 0) for layer in range(n_layers)]
        ax.bar(range(n_layers), heights, bottom=bottom, label=lang)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_xlabel("layer")
    ax.set_ylabel("neurons")
    ax.set_xticks(range(n_layers))
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
    return _png(plt, fig)


def sweep(rows: list[dict], targets: list[str], title: str) -> bytes:
    """Mean off-diagonal LSS (left) and off-target perplexity change (right) against the factor."""
    plt, (fig, _) = _figure(9, 3.2)
    fig.clear()
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    factors = [r["factor"] for r in rows]
    for t in targets:
        left.plot(factors, [r["lss"][t] for r in rows], marker="o", label=t)
        right.plot(factors, [r["off_target_ppl_change"][t] for r in rows], marker="o", label=t)
    left.set(xlabel="factor", ylabel="mean off-diagonal LSS", title=title)
    right.set(xlabel="factor", ylabel="off-target perplexity change", yscale="symlog")
    right.legend(fontsize=7, ncol=2)
    return _png(plt, fig)


def lines(series: dict[str, list[float]], x: list, xlabel: str, ylabel: str, title: str, log_y: bool = False) -> bytes:
    """One line per series over x (logit-lens ranks per layer, accuracy under ablation per layer, ...)."""
    plt, (fig, ax) = _figure(6.5, 3.2)
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_xticks(range(len(x)) if isinstance(x[0], str) else x, [str(v) for v in x])
    if log_y:
        ax.set_yscale("symlog")
    if len(series) > 1:
        ax.legend(fontsize=7)
    return _png(plt, fig)


def panels(
    grids: dict[str, list[list[float]]],
    xlabels: list[str],
    ylabels: list[str],
    title: str,
    center: float | None = None,
    cmap: str = "RdBu_r",
) -> bytes:
    """Side-by-side heatmaps sharing axes and colour scale (learned scalars: one panel per component,
    layers down, positions across), centred on `center` when given."""
    plt, (fig, _) = _figure(1.5 + (0.3 * len(xlabels) + 0.8) * len(grids), 1.4 + 0.35 * len(ylabels))
    fig.clear()
    fig.set_layout_engine("constrained")
    values = [v for grid in grids.values() for row in grid for v in row if not math.isnan(v)] or [0.0]
    if center is None:
        lo, hi = min(values), max(values)
    else:
        span = max(abs(v - center) for v in values) or 1.0
        lo, hi = center - span, center + span
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        im = ax.imshow(grid, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("layer")
    fig.suptitle(title, fontsize=10)
    fig.colorbar(im, ax=list(axes), shrink=0.8)
    return _png(plt, fig)


# ---------------------------------------------------------------- figures of the analysis and learning commands


def lens_ranks(result: dict) -> bytes:
    """The target's rank after every layer, one line per prompt, from `logit_lens` with targets."""
    layers = list(result["layers"])
    series = {
        f"{p!r} -> {t!r}": [result["layers"][layer]["target_rank"][row] for layer in layers]
        for row, (p, t) in enumerate(zip(result["prompts"], result["targets"], strict=True))
    }
    return lines(series, layers, "layer", "target rank (0 = top-1)", "logit lens", log_y=True)


def ablation(scores: dict[int, dict]) -> bytes:
    """Accuracy and reciprocal rank against the first ablated layer, from `ablate_from`."""
    series = {k: [s[k] for s in scores.values()] for k in ("accuracy", "reciprocal_rank")}
    return lines(series, list(scores), "first ablated layer", "score", "FFN outputs ablated from l on")


def patching(plain: dict, patched: dict, label: str, context: str) -> bytes:
    """Plain against patched relation scores, from `score_relation` and `patch_o_vector`."""
    keys = ["accuracy", "exact", "reciprocal_rank"]
    series = {"plain": [plain[k] for k in keys], label: [patched[k] for k in keys]}
    return lines(series, keys, "score", "value", f"o-vector patched into '{context} X'")


def learned(learned) -> bytes:
    """Heatmap of a LearnedIntervention: alpha or |v| per layer and position, or b and |w| per layer."""
    grids, cols, rows, center = learned.grids()
    per_position = cols[0].startswith("-")  # columns -P..-1; dynscalar's are "<site> b", "<site> |w|"
    what = f"{learned.impl.value} per layer and position (from the end)" if per_position else "b and |w| per layer"
    return panels(grids, cols, rows, f"{learned.method}: {what}", center)


def accuracy_bars(results: dict[str, dict], title: str = "accuracy per language") -> bytes:
    """Grouped bars: per language (and the average), the accuracy of each labelled run ({label: results.json})."""
    langs = [*list(dict.fromkeys(lang for r in results.values() for lang in r["accuracy"])), "average"]
    plt, (fig, ax) = _figure(max(6.0, 0.6 * len(langs) * len(results) ** 0.5), 3.6)
    width = 0.8 / len(results)
    for j, (label, r) in enumerate(results.items()):
        values = [r["accuracy"].get(lang, float("nan")) for lang in langs[:-1]] + [r["average"]]
        ax.bar([i + j * width for i in range(len(langs))], values, width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(langs))], langs)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def layer_scores(selection) -> bytes:
    """Per language the value behind the score (activated neurons, or overlap) over layers, and the MSD per layer
    with the chosen layers marked."""
    plt, (fig, axes) = _figure(9.0, 3.4, ncols=2)
    n = len(selection.scores)
    for lang, values in selection.per_language.items():
        axes[0].plot(range(n), values, marker="o", ms=3, label=lang)
    what = (
        "overlap with " + selection.meta.get("reference", "?")
        if selection.meta.get("method") == "overlap"
        else "activated neurons"
    )
    axes[0].set_xlabel("layer")
    axes[0].set_ylabel(what)
    axes[0].legend(fontsize=7, ncol=2)
    colors = ["tab:red" if layer in selection.layers else "tab:gray" for layer in range(n)]
    axes[1].bar(range(n), selection.scores, color=colors)
    axes[1].set_xlabel("layer (red: chosen)")
    axes[1].set_ylabel("mean squared deviation over languages")
    for ax in axes:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    fig.suptitle(f"SLAM layer selection ({selection.meta.get('method')}, k={len(selection.layers)})")
    return _png(plt, fig)


def similarity(matrix, labels: list[str], title: str) -> bytes:
    """A concept-by-concept similarity matrix (no numbers in the cells: it is often large)."""
    size = min(12.0, 2.0 + 0.22 * len(labels))
    plt, (fig, ax) = _figure(size + 1.0, size)
    im = ax.imshow([[float(v) for v in row] for row in matrix], cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(plt, fig)


def dendrogram(tree: dict, labels: list[str], title: str) -> bytes:
    """The dendrogram of `alignment.concept_tree`."""
    from scipy.cluster.hierarchy import dendrogram as draw

    plt, (fig, ax) = _figure(min(14.0, 2.0 + 0.25 * len(labels)), 4.0)
    draw(tree["linkage"], labels=labels, ax=ax, leaf_rotation=90, leaf_font_size=7, color_threshold=0)
    ax.set_ylabel("1 - similarity")
    ax.set_title(title)
    return _png(plt, fig)


def intervals(results: dict[str, dict[str, tuple[float, list[float]]]], ylabel: str, title: str) -> bytes:
    """Estimates with their intervals, grouped: {group: {series: (value, [low, high])}} (Spearman of several
    similarities against several rating sets)."""
    groups = list(results)
    plt, (fig, ax) = _figure(6.5, 3.8)
    series = list(dict.fromkeys(s for g in results.values() for s in g))
    step = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * step for g, group in enumerate(groups) if name in results[group]]
        got = [results[group][name] for group in groups if name in results[group]]
        low = [v - lo for v, (lo, _) in got]
        high = [hi - v for v, (_, hi) in got]
        ax.errorbar(xs, [v for v, _ in got], yerr=[low, high], fmt="o", capsize=3, label=name)
    ax.axhline(0, color="grey", linewidth=0.5)
    ax.set_xticks(range(len(groups)), groups, fontsize=7, rotation=25, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _png(plt, fig)


def by_depth(series: dict[str, list[float]], ylabel: str, title: str) -> bytes:
    """One line per series over relative depth (layer / (layers - 1)), so models of different depths share an axis:
    {"gemma-3-270m capital": [value per layer], ...}."""
    plt, (fig, ax) = _figure(6.5, 3.4)
    for label, ys in series.items():
        xs = [i / max(len(ys) - 1, 1) for i in range(len(ys))]
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set(xlabel="relative depth (layer / last layer)", ylabel=ylabel, title=title)
    ax.legend(fontsize=7)
    return _png(plt, fig)


def _grouped(ax, values: Mapping[str, Mapping[str, float | None]], ylabel: str, title: str, log_y: bool) -> None:
    groups = list(values)
    series = list(dict.fromkeys(s for g in values.values() for s in g))
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [values[g].get(name) for g in groups]
        ax.bar(xs, [math.nan if y is None else y for y in ys], width, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel=ylabel, title=title)
    if log_y:
        ax.set_yscale("log")


def bars(values: Mapping[str, Mapping[str, float | None]], ylabel: str, title: str, log_y: bool = False) -> bytes:
    """Grouped bars: {group (a task or a claim): {series (model, method): value}} (None: no bar)."""
    plt, (fig, ax) = _figure(6.5, 3.2)
    _grouped(ax, values, ylabel, title, log_y)
    if len({s for g in values.values() for s in g}) > 1:
        ax.legend(fontsize=7)
    return _png(plt, fig)


def bar_panels(panels: Mapping[str, Mapping[str, Mapping[str, float | None]]], log_y: tuple[str, ...] = ()) -> bytes:
    """Grouped bars side by side, one panel per measure: {measure: {group: {series: value}}}; panels named in
    `log_y` on a log axis."""
    plt, (fig, axes) = _figure(4.0 * len(panels), 3.4, ncols=len(panels))
    axes = axes if len(panels) > 1 else [axes]
    for ax, (name, values) in zip(axes, panels.items(), strict=True):
        _grouped(ax, values, name, name, name in log_y)
    axes[0].legend(fontsize=6)
    return _png(plt, fig)


def scatter_panels(points: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str) -> bytes:
    """One scatter per panel, side by side: {panel title: (xs, ys)} (human ratings against a model's similarity)."""
    plt, (fig, axes) = _figure(max(3.6 * len(points), 4.0), 3.4, ncols=max(len(points), 1))
    axes = axes if len(points) > 1 else [axes]
    for ax, (title, (xs, ys)) in zip(axes, points.items(), strict=True):
        ax.scatter(xs, ys, s=9, alpha=0.6)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.title.set_fontsize(8)
    return _png(plt, fig)
