"""The `mgkit explain` figure: images with their boxes, and each model's map of each ground-truth class.

Two parts, so the drawing is testable without a network:
- `explanation_pairs(model, images, labels, boxes, method=..., layer=...)` computes what to draw for one
  model: the raw attribution map and EPG of every (image, ground-truth class) pair, and for B-cos models
  the colour contribution image of the B-cos papers (the `bcos` package's `gradient_to_image`);
- `render_explanations(images, boxes, class_names, pairs, models, out)` draws the grid from numpy arrays
  and writes PNG or PDF atomically.

Layout: one row per image. Column 1 is the image with every box (class-coloured, labelled). Then, per
model, one column per ground-truth class of the image (up to `max_classes`): the positive part of the
map, divided by its own maximum, as a heat map over the dimmed image, with that class's boxes outlined
and the title "model: class, EPG x.xx"; for models with colour images, the B-cos colour image of the same
pair follows on a black ground. A class legend sits on top, the heat-map colour bar at the bottom.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from mgkit import registry
from mgkit.artifacts import save_figure
from mgkit.errors import UsageError

__all__ = ["Pairs", "ModelMaps", "ground_truth_pairs", "check_method", "default_layer", "explanation_pairs",
           "render_explanations"]

HEAT_CMAP = "jet"
CELL_IN = 1.8  # inches per grid cell: at dpi 100 a 16-image figure stays legible and under ~4000 px high


@dataclass(frozen=True)
class Pairs:
    """The (image, class) pairs of a figure: pair p explains class `classes[p]` of image `image[p]`."""

    image: np.ndarray  # int [P], index into the figure's images
    classes: np.ndarray  # int [P]


@dataclass
class ModelMaps:
    """What one model contributes to the figure, aligned with the figure's `Pairs`."""

    label: str  # e.g. "baseline" or "guided (energy, input)"
    maps: np.ndarray  # float [P, H, W] raw attributions (positive part drawn)
    epg: np.ndarray | None = None  # float [P], shown in titles
    colour: np.ndarray | None = None  # float [P, H, W, 4] RGBA in [0, 1]: B-cos colour images


def ground_truth_pairs(labels: np.ndarray, max_classes: int | None = None) -> Pairs:
    """Every ground-truth class (label > 0) of every image, image-major; at most `max_classes` per image."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise UsageError(f"labels must have shape [N, K], got {list(labels.shape)}.")
    img, cls = np.nonzero(labels > 0)
    if max_classes is not None:
        rank = np.zeros_like(img)
        for i in np.unique(img):  # figure-sized N: a loop over images is fine here
            rank[img == i] = np.arange((img == i).sum())
        keep = rank < max_classes
        img, cls = img[keep], cls[keep]
    return Pairs(img.astype(np.int64), cls.astype(np.int64))


# --------------------------------------------------------------------------------------------------
# What to draw for one model
# --------------------------------------------------------------------------------------------------
def _pad_boxes(boxes: Sequence[np.ndarray]) -> torch.Tensor:
    """Per-image box arrays [m_i, 5] -> padded float tensor [N, M, 5] (padding rows have class -1)."""
    m = max([1] + [len(b) for b in boxes])
    out = torch.full((len(boxes), m, 5), -1.0)
    for i, b in enumerate(boxes):
        if len(b):
            out[i, :len(b)] = torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 5))
    return out


def _smooth_for(size: tuple[int, int]) -> int:
    """The B-cos package smooths alpha with a 15-pixel window at 224 px; scale it, keep it odd (0 = off)."""
    k = round(15 * min(size) / 224)
    k = k + 1 if k % 2 == 0 else k
    return 0 if k <= 1 else k


# --- the only calls into mgkit's model, attribution and metric internals (adapt here at merge) ---------
def _images_to_input(model: Any, images: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).float() / 255.0
    return model.prepare_input(x)


def _maps(model: Any, x: torch.Tensor, img: torch.Tensor, cls: torch.Tensor, method: str, layer: str,
          chunk: int, ig_steps: int) -> torch.Tensor:
    """Raw maps [P, H, W] of the pairs, at the input's size: mgkit's own methods or captum:NAME."""
    from mgkit.captum_methods import captum_pairs, is_captum

    size = tuple(x.shape[-2:])
    if is_captum(method):
        return captum_pairs(model, x, img, cls, method, layer, size, chunk=chunk, steps=ig_steps)
    from mgkit.attribution import PostProcess, attribute_pairs

    # one forward per image; `chunk` bounds only captum's batches
    return attribute_pairs(model, x, img, cls, method=method, layer=layer, post=PostProcess(), out_size=size,
                           ig_steps=ig_steps)


def check_method(model: Any, method: str, layer: str) -> None:
    """Refuse (UsageError, one line) an attribution or layer this model cannot explain with."""
    from mgkit.attribution import METHODS
    from mgkit.captum_methods import check_layer, is_captum, parse_method
    from mgkit.models import LAYERS

    if layer not in LAYERS:
        raise UsageError(f"unknown --layer {layer!r}; choose one of {', '.join(LAYERS)}.")
    if is_captum(method):
        check_layer(parse_method(method), layer)
    elif method not in METHODS:
        raise UsageError(f"unknown --attribution {method!r}; choose one of {', '.join(METHODS)} or captum:NAME.")
    elif method not in model.supported_attributions:
        raise UsageError(f"--attribution {method} is not available for {model.name}; it supports "
                         f"{', '.join(model.supported_attributions)}.")


def default_layer(method: str) -> str:
    """The layer an explicitly chosen attribution is drawn at when --layer is not given."""
    from mgkit.captum_methods import is_captum, parse_method

    if method == "gradcam" or (is_captum(method) and parse_method(method).needs_layer):
        return "final"
    return "input"


def _epg(maps: torch.Tensor, boxes: torch.Tensor, cls: torch.Tensor, outside: bool) -> torch.Tensor:
    """EPG of each pair; NaN (drawn without a value, null in JSON) for a class without a box inside-mode."""
    from mgkit.masks import box_masks
    from mgkit.metrics import epg

    values = epg(maps, box_masks(boxes, cls, tuple(maps.shape[-2:]), outside=outside))
    if outside:
        return values
    has_box = (boxes[..., 0] == cls[:, None].to(boxes.dtype)).any(dim=1)
    return torch.where(has_box, values, torch.full_like(values, float("nan")))


def _colour_by_default(model: Any) -> bool:
    """Whether the model's family draws its explanations in colour (the registry says; B-cos does)."""
    family = getattr(model, "family", None)
    facts = getattr(family, "facts", None) or registry.FAMILIES.get(family)  # a Family record or a name
    return bool(facts and facts.colour_explanations)


def _dynamic_weights(model: Any, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """B-cos dynamic linear weights W(x) [P, 6, H, W] of class cls[p] (input gradient in explanation mode)."""
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        logits = model(xr)
        with model.explanation_mode():
            (w,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), xr)
    return w
# ------------------------------------------------------------------------------------------------------


def bcos_colour_images(model: Any, x: torch.Tensor, cls: torch.Tensor, chunk: int = 32) -> np.ndarray:
    """RGBA [P, H, W, 4] colour contribution images of B-cos pairs (x: the pairs' 6-channel inputs).

    Drawn by the `bcos` package's `gradient_to_image` (per pixel: colour = the rgb weights normalised
    against their inverse channels, alpha = the weight norm where the contribution is positive, smoothed
    and divided by its 99.5th percentile), with its smoothing window scaled to the image size.
    """
    from bcos.common import gradient_to_image

    smooth = _smooth_for(tuple(x.shape[-2:]))
    out = []
    for i in range(0, x.shape[0], chunk):
        w = _dynamic_weights(model, x[i:i + chunk], cls[i:i + chunk])
        out += [gradient_to_image(xi.detach().cpu(), wi.cpu(), smooth=smooth) for xi, wi in zip(x[i:i + chunk], w)]
    return np.stack(out) if out else np.zeros((0, *x.shape[-2:], 4), np.float32)


def explanation_pairs(model: Any, images: np.ndarray, labels: np.ndarray, boxes: Sequence[np.ndarray], *,
                      method: str, layer: str, label: str | None = None, pairs: Pairs | None = None,
                      max_classes: int | None = 4, colour: bool | None = None, outside: bool = False,
                      device: torch.device | str = "cpu", chunk: int = 32,
                      ig_steps: int = 16) -> tuple[Pairs, ModelMaps]:
    """What one model contributes to the figure.

    images uint8 [N, H, W, 3]; labels [N, K] (> 0 = present); boxes: per image float [m, 5] rows
    (class, x0, y0, x1, y1). method / layer: an mgkit attribution (ixg, bcos, gradcam, intgrad) or
    captum:NAME, as in evaluation; the maps are raw (no clamp or normalisation), EPG as in evaluation.
    pairs: default every ground-truth class of every image (at most max_classes each); pass the first
    model's pairs to a second model so both explain the same pairs. colour: add B-cos colour images
    (default: for B-cos models; always the B-cos explanation W(x), whatever `method` is). The model must
    already be on `device`; it is put in eval mode. Pairs go through the network `chunk` at a time.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise UsageError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}.")
    if len(boxes) != len(images) or len(labels) != len(images):
        raise UsageError(f"{len(images)} images but {len(labels)} label rows and {len(boxes)} box lists.")
    pairs = pairs if pairs is not None else ground_truth_pairs(labels, max_classes)
    device = torch.device(device)
    model.eval()
    x = _images_to_input(model, images, device)
    img = torch.as_tensor(pairs.image, device=device)
    cls = torch.as_tensor(pairs.classes, device=device)
    maps = _maps(model, x, img, cls, method, layer, chunk, ig_steps).float()
    epg = _epg(maps, _pad_boxes(boxes).to(device)[img], cls, outside)
    want_colour = _colour_by_default(model) if colour is None else colour
    colours = bcos_colour_images(model, x[img], cls, chunk) if want_colour else None
    return pairs, ModelMaps(label or getattr(model, "name", "model"), maps.cpu().numpy(), epg.cpu().numpy(), colours)


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------
def class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per class (tab10, then tab20 for more classes)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(num_classes)]


def _draw_boxes(ax: Any, boxes: np.ndarray, colours: Sequence[Any], names: Sequence[str] | None,
                only: int | None = None, width: float = 1.5) -> None:
    for row in np.asarray(boxes, dtype=np.float64).reshape(-1, 5):
        c = int(row[0])
        if c < 0 or (only is not None and c != only):
            continue
        x0, y0, x1, y1 = row[1:]
        # boxes are half-open pixel ranges; pixel edges sit at -0.5 in imshow coordinates
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colours[c],
                               linewidth=width))
        if names is not None:
            ax.text(x0 - 0.5, y0 - 0.5, names[c], color="white", fontsize=6, va="bottom", ha="left",
                    bbox=dict(facecolor=colours[c], edgecolor="none", pad=0.8, alpha=0.85), clip_on=True)


def _positive_normalised(m: np.ndarray) -> np.ndarray:
    pos = np.clip(np.asarray(m, dtype=np.float64), 0, None)
    peak = pos.max() if pos.size else 0.0
    return pos / peak if peak > 0 else pos


def _check_inputs(images: np.ndarray, boxes: Sequence[np.ndarray], pairs: Pairs, models: Sequence[ModelMaps],
                  ids: Sequence[str] | None) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"images must be [N, H, W, 3], got {list(images.shape)}.")
    if len(boxes) != len(images):
        raise UsageError(f"{len(images)} images but {len(boxes)} box lists.")
    if ids is not None and len(ids) != len(images):
        raise UsageError(f"{len(images)} images but {len(ids)} ids.")
    if pairs.image.shape != pairs.classes.shape:
        raise UsageError("pairs.image and pairs.classes must have the same length.")
    if len(pairs.image) and (pairs.image.min() < 0 or pairs.image.max() >= len(images)):
        raise UsageError("pairs.image holds an index outside the images.")
    for m in models:
        if m.maps.shape[0] != len(pairs.image) or m.maps.shape[1:] != images.shape[1:3]:
            raise UsageError(f"model {m.label!r}: maps have shape {list(m.maps.shape)}, expected "
                             f"[{len(pairs.image)}, {images.shape[1]}, {images.shape[2]}].")
        if m.colour is not None and m.colour.shape != (len(pairs.image), *images.shape[1:3], 4):
            raise UsageError(f"model {m.label!r}: colour images have shape {list(m.colour.shape)}, expected "
                             f"[{len(pairs.image)}, {images.shape[1]}, {images.shape[2]}, 4].")


def _image_panel(ax: Any, image: np.ndarray, boxes: np.ndarray, colours: Sequence[Any], class_names: Sequence[str],
                 name: str, first: bool) -> None:
    """The first column: the image with every box, named by its id."""
    ax.imshow(image, interpolation="nearest")
    _draw_boxes(ax, boxes, colours, class_names)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(name, fontsize=7)
    if first:
        ax.set_title("image, boxes", fontsize=7)


def _map_panels(fig: Figure, grid: Any, i: int, col: int, m: ModelMaps, p: int, c: int, gray: np.ndarray,
                boxes: np.ndarray, colours: Sequence[Any], class_names: Sequence[str], heat: ScalarMappable,
                cell: float) -> None:
    """Pair p (image row i, class c) of model m: its heat map over the dimmed image, and the B-cos colour
    image beside it when the model has one."""
    epg = "" if m.epg is None or not np.isfinite(m.epg[p]) else f", EPG {float(m.epg[p]):.2f}"
    ax = fig.add_subplot(grid[i, col], label=f"map:{m.label}:{i}:{c}")
    # dimmed grey image under the heat map keeps the scene readable
    ax.imshow(gray, cmap="gray", vmin=-0.6, vmax=1.4, interpolation="nearest")
    v = _positive_normalised(m.maps[p])
    # opacity grows with the value, so zero attribution leaves the image visible
    ax.imshow(v, cmap=HEAT_CMAP, norm=heat.norm, alpha=np.clip(1.2 * v, 0, 0.85), interpolation="nearest")
    _draw_boxes(ax, boxes, colours, None, only=c, width=1.2)
    head = f"{m.label}: {class_names[c]}{epg}"
    if len(head) > cell * 72 / (7 * 0.55):  # wider than its panel: label on a line of its own
        head = f"{m.label}\n{class_names[c]}{epg}"
    ax.set_title(head, fontsize=7, color=colours[c][:3], linespacing=1.1)
    ax.set_axis_off()
    if m.colour is not None:
        ax = fig.add_subplot(grid[i, col + 1], label=f"colour:{m.label}:{i}:{c}")
        ax.set_facecolor("black")
        ax.imshow(np.clip(m.colour[p], 0, 1), interpolation="bilinear")
        ax.set_title(f"{class_names[c]}: B-cos W(x)", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])


def _separators(fig: Figure, grid: Any, widths: Sequence[int], slots: int, bottom: float, top: float) -> None:
    """A thin rule between the image column and each model's block tells the blocks apart at a glance."""
    start = 1
    for w in widths:
        left = grid[0, start - 1].get_position(fig).x1
        right = grid[0, start].get_position(fig).x0
        fig.add_artist(Line2D([(left + right) / 2] * 2, [bottom, top], color="0.6", linewidth=0.8, label="separator"))
        start += slots * w


def _legend_title_colourbar(fig: Figure, heat: ScalarMappable, colours: Sequence[Any], class_names: Sequence[str],
                            title: str | None, legend_cols: int, legend_top: float, width_in: float) -> None:
    """The class legend and title above the grid, the colour bar below it."""
    height = fig.get_figheight()
    legend = [Patch(facecolor=colours[k], label=name) for k, name in enumerate(class_names)]
    fig.legend(handles=legend, loc="upper center", ncol=legend_cols, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - legend_top / height))
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / height, va="top", linespacing=1.3)
    bar = fig.add_axes((0.3, 0.5 / height, 0.4, 0.12 / height), label="colorbar")
    cb = fig.colorbar(heat, cax=bar, orientation="horizontal")
    cb.set_label(textwrap.fill("positive attribution / its maximum (per map); outlines: boxes of the explained class",
                               max(30, int(width_in * 72 / (7 * 0.55)))), fontsize=7)
    cb.ax.tick_params(labelsize=6)


def render_explanations(images: np.ndarray, boxes: Sequence[np.ndarray], class_names: Sequence[str],
                        pairs: Pairs, models: Sequence[ModelMaps], out: str | Path | None = None, *,
                        ids: Sequence[str] | None = None, title: str | None = None, dpi: int = 100,
                        cell: float = CELL_IN) -> Figure:
    """Draw the explanation grid; write it to `out` (.png or .pdf, atomically) when given.

    Returns the Figure. Axes carry labels for inspection: "image:ROW", "map:MODEL:ROW:CLASS",
    "colour:MODEL:ROW:CLASS", "colorbar"; unused grid cells are hidden axes labelled "empty".
    """
    images = np.asarray(images)
    _check_inputs(images, boxes, pairs, models, ids)
    n = len(images)
    colours = class_colours(len(class_names))
    per_image = [np.flatnonzero(pairs.image == i) for i in range(n)]
    slots = max([1] + [len(p) for p in per_image])  # class columns per model
    widths = [1 + (m.colour is not None) for m in models]  # cells per class: heat map (+ colour image)
    ncols = 1 + slots * sum(widths)
    # a narrow figure (one model, one class per image) wraps its title lines and legend to its width
    width_in = ncols * cell
    if title:
        chars = max(20, int(width_in * 72 / (9 * 0.55)))  # 9 pt text, ~0.55 em per character
        title = "\n".join(textwrap.fill(line, chars) for line in title.splitlines())
    title_lines = len(title.splitlines()) if title else 0
    legend_cols = max(1, min(len(class_names), 10, int(width_in / 1.2)))
    legend_rows = -(-len(class_names) // legend_cols)
    # inches: title lines, legend rows; the colour bar
    legend_top = 0.1 + 0.18 * title_lines
    header, footer = legend_top + 0.3 + 0.2 * legend_rows, 0.9
    fig = Figure(figsize=(width_in, n * cell + header + footer), dpi=dpi)
    FigureCanvasAgg(fig)
    height = fig.get_figheight()
    grid = fig.add_gridspec(n, ncols, left=0.03, right=0.99, top=1 - header / height, bottom=footer / height,
                            wspace=0.06, hspace=0.28)
    heat = ScalarMappable(norm=Normalize(0, 1), cmap=HEAT_CMAP)
    for i in range(n):
        _image_panel(fig.add_subplot(grid[i, 0], label=f"image:{i}"), images[i], boxes[i], colours, class_names,
                     ids[i] if ids is not None else f"#{i}", first=i == 0)
        gray = images[i].astype(np.float64).mean(-1) / 255.0
        col = 1
        for m, w in zip(models, widths):
            for s in range(slots):
                p = per_image[i][s] if s < len(per_image[i]) else None
                if p is None:
                    for k in range(w):
                        fig.add_subplot(grid[i, col + k], label="empty").set_axis_off()
                else:
                    _map_panels(fig, grid, i, col, m, p, int(pairs.classes[p]), gray, boxes[i], colours, class_names,
                                heat, cell)
                col += w
    _separators(fig, grid, widths, slots, footer / height, 1 - header / height)
    _legend_title_colourbar(fig, heat, colours, class_names, title, legend_cols, legend_top, width_in)
    if out is not None:
        save_figure(fig, out)
    return fig
