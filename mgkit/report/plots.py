"""Pareto plots in the paper's style (Figs. 5, 6): metric vs F1, one front per loss, baseline cross,
the regions that dominate (green) or are dominated by (grey) the baseline shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mgkit.artifacts import save_figure  # noqa: E402
from mgkit.pipeline.experiments import BY_NAME, EXPERIMENTS  # noqa: E402
from mgkit.report.tables import interval_of  # noqa: E402
from mgkit.report.analysis import (LAYER_ORDER, Analysis, condition_sort,  # noqa: E402
                                   config_sort, front, group_rows, loss_sort, metric_name)

STYLE: dict[str, dict[str, Any]] = {
    "energy": dict(color="#d62728", marker="o", label="Energy"),
    "l1": dict(color="#2ca02c", marker="^", label="L1"),
    "ppce": dict(color="#e6b800", marker="p", label="PPCE"),
    "rrr": dict(color="#1f77b4", marker="D", label="RRR*"),
    "energy-size": dict(color="#9467bd", marker="s", label="Energy-size"),
}
BASELINE_GID = "baseline"


def _style(loss: str | None) -> dict[str, Any]:
    return STYLE.get(str(loss), dict(color="#7f7f7f", marker="v", label=str(loss)))


def series_keys(groups: dict[tuple, list], experiment: str) -> set[tuple]:
    """(loss, condition) per plotted curve; the main comparison merges everything per loss."""
    if BY_NAME[experiment].merged:
        return {(l, None) for l, _ in groups}
    return set(groups)


def series_styles(configs: dict, experiment: str) -> dict[tuple, dict[str, Any]]:
    """Colour and marker per curve: the paper's per-loss style, or for a condition sweep (boxes, dilation,
    depth) the loss's marker with one colour per condition."""
    keys = {k for groups in configs.values() for k in series_keys(groups, experiment)}
    if BY_NAME[experiment].merged:
        return {k: _style(k[0]) for k in keys}
    conds = sorted({k[1] for k in keys}, key=lambda c: condition_sort(experiment, c))
    cmap = matplotlib.colormaps["viridis"]
    e = BY_NAME[experiment]
    out = {}
    for k in keys:
        i = conds.index(k[1])
        text = f"{100 * k[1]:g}{e.unit}" if e.percent else f"guided at {k[1]}"
        out[k] = dict(color=cmap(0.85 * i / max(len(conds) - 1, 1)), marker=_style(k[0])["marker"],
                      label=f"{_style(k[0])['label']}, {text}")
    return out


def _draw_series(ax: Any, groups: dict, experiment: str, styles: dict, mkey: str, seen: list[tuple]
                 ) -> tuple[list[float], list[float]]:
    """Each loss (and condition) of one panel: its candidates faintly, its front as the connected curve
    with error bars. Adds the drawn series to `seen`; returns every drawn x and y (in %), for the limits."""
    xs: list[float] = []
    ys: list[float] = []
    for key in sorted(series_keys(groups, experiment), key=lambda k: (loss_sort(k[0]), str(k[1]))):
        loss, cond = key
        pts = [p for (l, c), ps in groups.items() if l == loss and (cond is None or c == cond) for p in ps]
        st = styles[key]
        allxy = [(p.m("f1"), p.m(mkey)) for p in pts]
        allxy = [(100 * f, 100 * v) for f, v in allxy if f is not None and v is not None]
        if not allxy:
            continue
        xs += [x for x, _ in allxy]
        ys += [y for _, y in allxy]
        tag = loss if cond is None else f"{loss}:{cond}"
        # All candidates faintly, the front as the connected curve.
        ax.scatter(*zip(*allxy), s=12, marker=st["marker"], color=st["color"], alpha=0.25,
                   linewidths=0, gid=f"candidates:{tag}")
        fr = [(100 * f, 100 * v) for f, v in front(pts, mkey)]
        ax.plot(*zip(*fr), marker=st["marker"], color=st["color"], markersize=6, linewidth=1.5,
                markeredgecolor="black", markeredgewidth=0.5, label=st["label"], gid=f"front:{tag}",
                zorder=5)
        ex, ey = _error_bars(ax, _front_pts(pts, mkey), mkey, st["color"], f"errorbars:{tag}")
        xs += ex  # the axes show the whole of every interval
        ys += ey
        if key not in seen:
            seen.append(key)
    return xs, ys


def _draw_baseline(ax: Any, an: Analysis, groups: dict, metric: str, xs: list[float], ys: list[float]) -> None:
    """The panel's limits (every point and interval, padded), and the baseline with its interval and the
    regions it dominates and is dominated by."""
    base = an.baseline(next(iter(groups.values()))[0])
    bx = by = None
    if base and base.get("f1") is not None and base.get(metric) is not None:
        bx, by = 100 * base["f1"], 100 * base[metric]
        bpts = an.baseline_points(next(iter(groups.values()))[0])
        (xl, xh, _), (yl, yh, _) = interval_of(bpts, "f1"), interval_of(bpts, an.metric_key(metric))
        xs = xs + [bx, *(100 * v for v in (xl, xh) if v is not None)]
        ys = ys + [by, *(100 * v for v in (yl, yh) if v is not None)]
    if not xs:
        return
    padx = max(1.0, 0.08 * (max(xs) - min(xs)))
    pady = max(1.0, 0.08 * (max(ys) - min(ys)))
    x0, x1, y0, y1 = min(xs) - padx, max(xs) + padx, min(ys) - pady, max(ys) + pady
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    if bx is not None:
        ax.add_patch(Rectangle((bx, by), x1 - bx, y1 - by, color="#2ca02c", alpha=0.12, zorder=0,
                               linewidth=0, gid="dominating"))
        ax.add_patch(Rectangle((x0, y0), bx - x0, by - y0, color="#7f7f7f", alpha=0.18, zorder=0,
                               linewidth=0, gid="dominated"))
        if yl is not None or xl is not None:
            ax.errorbar([bx], [by], xerr=None if xl is None else [[bx - 100 * xl], [100 * xh - bx]],
                        yerr=None if yl is None else [[by - 100 * yl], [100 * yh - by]], fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2, zorder=4, label="_errorbars:baseline")
        ax.scatter([bx], [by], marker="X", s=140, facecolor="white", edgecolor="black", linewidths=1.2,
                   zorder=4, label="baseline", gid=BASELINE_GID)


def _legend_and_title(fig: Figure, styles: dict, seen: list[tuple], ncols: int, title: str) -> None:
    """One legend entry per drawn series and the baseline, below the axes, and the title above them."""
    handles = [plt.Line2D([], [], color=styles[k]["color"], marker=styles[k]["marker"], markeredgecolor="black",
                          markeredgewidth=0.5, label=styles[k]["label"]) for k in sorted(seen, key=lambda k: (
                              loss_sort(k[0]), str(k[1])))]
    handles.append(plt.Line2D([], [], linestyle="none", marker="X", markersize=10, markerfacecolor="white",
                              markeredgecolor="black", label="baseline"))
    # Room below the axes for the legend, so it never runs off a narrow (one-column) figure.
    ncol = min(len(handles), 2 if ncols == 1 else 3 * ncols)
    legend_in = 0.32 * -(-len(handles) // ncol) + 0.2
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + legend_in + 0.5)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, legend_in / (height + legend_in + 0.5), 1, 1 - 0.55 / (height + legend_in + 0.5)))


def pareto_figure(an: Analysis, experiment: str, dataset: str, metric: str) -> Figure | None:
    """Rows = evaluation layer, columns = model/attribution; None when the experiment has no such data."""
    configs = group_rows(an, experiment).get(dataset)
    if not configs:
        return None
    keys = sorted(configs, key=config_sort)
    cols = list(dict.fromkeys((k[1], k[3]) for k in keys))
    rows = sorted({k[4] for k in keys}, key=lambda l: LAYER_ORDER.index(l) if l in LAYER_ORDER else 99)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(max(4.6 * len(cols), 6.0), 3.6 * len(rows)), squeeze=False)
    mkey = an.metric_key(metric)
    seen: list[tuple] = []
    styles = series_styles(configs, experiment)
    for r, layer in enumerate(rows):
        for c, (model, attr) in enumerate(cols):
            ax = axes[r][c]
            ck = next((k for k in keys if (k[1], k[3], k[4]) == (model, attr, layer)), None)
            ax.set_title(f"{model} · {attr} · {layer}", fontsize=10)
            ax.set_xlabel("F1 (%)")
            ax.set_ylabel(f"{metric_name(metric)} (%)")
            ax.grid(True, alpha=0.3, linewidth=0.5)
            if ck is None:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            groups = configs[ck]
            xs, ys = _draw_series(ax, groups, experiment, styles, mkey, seen)
            _draw_baseline(ax, an, groups, metric, xs, ys)
    _legend_and_title(fig, styles, seen, len(cols), f"{metric_name(metric)} vs F1 — {dataset}\n({experiment}, "
                      f"split {an.split})")
    return fig


def _front_pts(points: list, key: str) -> list:
    """The points on the (F1, key) front, in the front's order."""
    by = {(p.m("f1"), p.m(key)): p for p in reversed(points) if p.m("f1") is not None and p.m(key) is not None}
    return [by[t] for t in front(points, key)]


def _error_bars(ax, points: list, key: str, color: str, gid: str) -> tuple[list[float], list[float]]:
    """95 % intervals of F1 (horizontal) and `key` (vertical) for points whose records carry them;
    returns the bars' x and y ends (in %), for the axis limits."""
    rows = []
    for p in points:
        x, y = p.m("f1"), p.m(key)
        xl, xh, yl, yh = p.m("f1_lo"), p.m("f1_hi"), p.m(f"{key}_lo"), p.m(f"{key}_hi")
        if None in (x, y) or (yl is None and xl is None):
            continue
        rows.append((x, y, x - (xl if xl is not None else x), (xh if xh is not None else x) - x,
                     y - (yl if yl is not None else y), (yh if yh is not None else y) - y))
    if not rows:
        return [], []
    a = 100 * np.asarray(rows)
    ax.errorbar(a[:, 0], a[:, 1], xerr=a[:, 2:4].T, yerr=a[:, 4:6].T, fmt="none", ecolor=color, elinewidth=0.8,
                capsize=2, alpha=0.7, zorder=4, label=f"_{gid}")
    return [*(a[:, 0] - a[:, 2]), *(a[:, 0] + a[:, 3])], [*(a[:, 1] - a[:, 4]), *(a[:, 1] + a[:, 5])]


def save_plot(fig: Figure, stem: Path) -> list[Path]:
    """Write stem.png (150 dpi) and stem.pdf, each atomically; close the figure."""
    try:
        return [save_figure(fig, stem.with_suffix(".png"), dpi=150), save_figure(fig, stem.with_suffix(".pdf"))]
    finally:
        plt.close(fig)


PLOTTED = {e.name: e.plotted for e in EXPERIMENTS if e.plotted}


def all_plots(an: Analysis, out_dir: Path) -> list[Path]:
    """Per experiment and data set: metric vs F1 (EPG and IoU; on-object energy for segmentation)."""
    written: list[Path] = []
    for experiment, metrics in PLOTTED.items():
        for dataset in sorted(group_rows(an, experiment)):
            for metric in metrics:
                fig = pareto_figure(an, experiment, dataset, metric)
                if fig is not None:
                    written += save_plot(fig, out_dir / f"{BY_NAME[experiment].plot_stem}-{metric}-{dataset}")
    return written
