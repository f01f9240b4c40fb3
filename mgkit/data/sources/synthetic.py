"""Built-in procedural data: a usable data set with exact boxes and masks and a known shortcut, no download.

Every image is generated on its own from ``(seed, task, split, index)`` inside the top-level ``load``
(numpy only, no data files), so `mgkit prepare` can spread the work over worker processes and never
holds the data set in memory. Images are drawn at the requested size directly (hard edges, no
resampling), so boxes and masks are exact at every size from 16 px up.

Task ``multilabel`` (default): K object classes (2..12), one per shape
    disc, square, triangle, cross, ring, diamond, star, bar, tee, crescent, frame, hourglass
(the first K are used). Each image holds 1-3 objects (classes drawn uniformly with replacement, so an
image may show two instances of a class), each with a random colour (colour never identifies the
class), a side of 15-35 % of the image, a random rotation of +-15 degrees (small, so that square and
diamond stay different classes) and an aspect jitter of 0.8-1.25, on a textured low-saturation
background (grey tint + linear gradient + stripes + blotches + pixel noise).

    Occlusion: objects are painted in order and later ones hide earlier ones. A placement that would
    leave an earlier object with less than half of its pixels visible is re-drawn (30 tries, then the
    object is dropped), so every labelled object stays recognisable. The segmentation map holds the
    top-most object's class id + 1 at each pixel (0 background); each box is the tight, half-open
    bounding box of its object's *visible* pixels, so per class the union of box extents equals the
    extent of that class's mask pixels. Labels are exactly the classes with pixels in the mask.

    Spurious context cue: class k has a small checkerboard patch (class-specific saturated colour
    and black, about 7 % of the image side) at a class-specific slot in a border band that objects
    never enter, so cues never overlap boxes. A saturated colour at a fixed place is far simpler to
    detect than a shape in a random colour: an unguided classifier picks the cue up, and since it
    lies outside every box a localization loss can push attributions off it. Cue rates, with
    p = ``spurious`` (default 0.9), b = ``CUE_BASE_RATE`` (0.25), q = P(class k present) and
    m = q p + (1 - q)(1 - p) b the training marginal:

        train, val, test   P(cue k | k present) = p,  P(cue k | k absent) = (1 - p) b
        test_decorrelated  P(cue k) = m whether or not k is present (independent, same marginal)
        test_shifted       P(cue k | k present) = 0,  P(cue k | k absent) = min(1, m / (1 - q))

    ``test`` is drawn like the training data, as the paper's F1 is (its test sets follow the training
    distribution); robustness to the cue is the separate shift experiment (`mgkit shift`), on
    ``test_decorrelated`` and ``test_shifted``. Both show the very same scenes as ``test`` (objects,
    backgrounds and the per-class uniforms that decide the cues), only the cue rates differ, so the
    three splits form a paired comparison.

Task ``pretrain``: the multilabel shapes without any cue, in scenes of their own (another image stream
than ``multilabel``), splits train / val / test. A backbone trained on it once (`mgkit train`) can see
the shapes before fine-tuning, as the paper's ImageNet-pretrained backbones do (load it with
`mgkit train --weights`).

Task ``birds``: a Waterbirds-100 analogue (binary task, classes landbird / waterbird). A landbird
has legs, a short beak and a raised fan tail; a waterbird a longer neck, a long thin beak, a flat tail
and no legs (a subtle but learnable shape difference); colour, size (40-60 % of the side), facing and
a small rotation are random. The background is "land" (green/brown blotches) or "water" (blue
waves), the big easy shortcut: P(place = bird type) = ``spurious`` (default 1.0) in train, while val
and test are balanced over the four groups (group = y * 2 + place), as Waterbirds' val and test are
balanced over places within each bird type, so that choosing checkpoints on val does not reward the
shortcut. One box per image around the
bird; segmentation 1 = landbird, 2 = waterbird.

Task ``birds-place``: the reversed Waterbirds task on the very same images as ``birds`` (same seed, same
scenes): the label is the place (land / water), the box is still the bird's (its class column is the
place class) and the data file's mask mode is ``outside``, so guidance pushes attributions off the bird
onto the background; the bird is now the shortcut. Segmentation: place id + 1 on background pixels, 0
on the bird.

Sizes: the CLI defaults (1500 train / 300 val / 600 test, and 600 test_shifted, at 128 x 128) are
enough for a small ResNet to learn the shapes within about ten epochs, and small enough that
preparing takes seconds and training one model runs on a CPU. Every split stores segmentation.

Provenance records the generator name and version (``GENERATOR_VERSION``: bump it whenever the images
for a given seed change), every parameter, the cue of each class and the cue rates of each split.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mgkit.data.format import Sample
from mgkit.data.prepare import Record, SourcePlan
from mgkit.errors import UsageError
from mgkit.registry import SYNTHETIC_SPURIOUS, SYNTHETIC_TASKS

GENERATOR = "mgkit-synthetic"
GENERATOR_VERSION = "2.1"  # 2.0: multilabel test follows train; test_decorrelated; task pretrain. 2.1: birds val balanced
TASKS = SYNTHETIC_TASKS
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2, "test_shifted": 3, "test_decorrelated": 4}
SHIFTED_SPLITS = ("test_decorrelated", "test_shifted")  # multilabel: test's scenes with other cue rates
_TASK_IDS = {"multilabel": 0, "birds": 1, "birds-place": 1, "pretrain": 2}  # birds-place: the same images as birds
DEFAULT_SPURIOUS = SYNTHETIC_SPURIOUS

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "ring", "diamond",
                           "star", "bar", "tee", "crescent", "frame", "hourglass")
MAX_CLASSES = len(SHAPES)
MAX_OBJECTS = 3
MAX_IMAGES = 1_000_000  # per split; each planned image costs about 200 bytes before anything is generated
OBJECT_SIZE = (0.15, 0.35)  # object side as a fraction of the image side
MAX_ROTATION = 15.0  # degrees; larger would turn squares into diamonds
ASPECT = (0.8, 1.25)
MIN_VISIBLE = 0.5  # share of an object's pixels that must stay visible under later objects
PLACEMENT_TRIES = 30
CUE_BASE_RATE = 0.25

# Saturated cue colours; the first six are the most distinct, for the default K = 6.
CUE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
    (255, 128, 0), (128, 0, 255), (0, 255, 128), (255, 0, 128), (0, 128, 255), (128, 255, 0),
)
CUE_COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan",
                    "orange", "violet", "spring green", "rose", "azure", "chartreuse")
# Cue slots as (fx, fy) along the border band: corners, edge midpoints, then quarter points.
CUE_SLOTS: tuple[tuple[float, float], ...] = (
    (0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0), (0.5, 1),
    (0, 0.5), (1, 0.5), (0.75, 0), (0.25, 1), (0, 0.75), (1, 0.25),
)
CUE_SLOT_NAMES = ("top-left corner", "top-right corner", "bottom-right corner", "bottom-left corner",
                  "top edge middle", "bottom edge middle", "left edge middle", "right edge middle",
                  "top edge at 3/4", "bottom edge at 1/4", "left edge at 3/4", "right edge at 1/4")

BIRD_CLASSES = ["landbird", "waterbird"]
PLACES = ("land", "water")
BIRD_GROUPS = ["landbird_on_land", "landbird_on_water", "waterbird_on_land", "waterbird_on_water"]
BIRD_SIZE = (0.40, 0.60)
BIRD_ROTATION = 12.0


# ------------------------------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Params:
    """Everything `load` needs besides the split and index; shared by all records of a plan."""

    task: str
    seed: int
    num_classes: int
    spurious: float
    base_rate: float = CUE_BASE_RATE


@dataclass(frozen=True, slots=True)  # slots: plans hold one per image, keep them small
class Item:
    """Record payload: which image to generate (birds: its class and place, drawn per split)."""

    params: Params
    split: str
    index: int
    y: int = -1
    place: int = -1


@dataclass(frozen=True)
class Layout:
    """Where cues may go at a given image size: a border band of width `band` that objects never enter."""

    size: int
    cue: int  # side of a cue patch
    margin: int  # gap between the image edge, the cue and the object region
    band: int

    def slot(self, k: int) -> tuple[int, int, int, int]:
        """Half-open (x0, y0, x1, y1) of class k's cue patch."""
        fx, fy = CUE_SLOTS[k]
        span = self.size - 2 * self.margin - self.cue
        x0 = self.margin + int(round(fx * span))
        y0 = self.margin + int(round(fy * span))
        return x0, y0, x0 + self.cue, y0 + self.cue


def layout(size: int) -> Layout:
    """The cue/object layout at `size`; slots never overlap (adjacent slots are span / 4 apart)."""
    margin = max(1, round(0.015 * size))
    cue = min(max(3, round(0.07 * size)), (size - 2 * margin) // 5)
    return Layout(size, cue, margin, cue + 2 * margin)


def presence_rate(num_classes: int) -> float:
    """Nominal P(class k present): 1-3 objects (uniform), classes uniform with replacement."""
    return 1.0 - float(np.mean([(1.0 - 1.0 / num_classes) ** n for n in range(1, MAX_OBJECTS + 1)]))


def cue_rates(split: str, num_classes: int, spurious: float, base_rate: float = CUE_BASE_RATE) -> tuple[float, float]:
    """(P(cue k | k present), P(cue k | k absent)) in `split`; see the module docstring."""
    p, b = spurious, base_rate
    if split in ("train", "val", "test"):
        return p, (1.0 - p) * b
    q = presence_rate(num_classes)
    m = q * p + (1.0 - q) * (1.0 - p) * b
    if split == "test_decorrelated":
        return m, m
    if split == "test_shifted":
        return 0.0, min(1.0, m / (1.0 - q))
    raise ValueError(f"unknown split {split!r}")


# --------------------------------------------------------------------------------------------- shapes


def _in_polygon(u: np.ndarray, v: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test, vectorised over the points (u, v)."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > v) != (y2 > v)
        inside ^= crosses & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
    return inside


_STAR = [(math.cos(math.radians(-90 + 36 * i)) * (1.0 if i % 2 == 0 else 0.45),
          math.sin(math.radians(-90 + 36 * i)) * (1.0 if i % 2 == 0 else 0.45)) for i in range(10)]
_TRIANGLE = [(0.0, -0.95), (0.95, 0.75), (-0.95, 0.75)]


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of unit coordinates (u right, v down, shape inside [-1, 1]^2) in a named shape."""
    au, av = np.abs(u), np.abs(v)
    if name == "disc":
        return u * u + v * v <= 0.95
    if name == "square":
        return (au <= 0.8) & (av <= 0.8)
    if name == "triangle":
        return _in_polygon(u, v, _TRIANGLE)
    if name == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 0.95) & (r2 >= 0.3)
    if name == "diamond":
        return au + av <= 1.0
    if name == "star":
        return _in_polygon(u, v, _STAR)
    if name == "bar":
        return (au <= 0.95) & (av <= 0.3)
    if name == "tee":
        return ((au <= 0.9) & (v >= -0.9) & (v <= -0.45)) | ((au <= 0.22) & (av <= 0.9))
    if name == "crescent":
        return (u * u + v * v <= 0.95) & ((u - 0.45) ** 2 + v * v > 0.55)
    if name == "frame":
        r = np.maximum(au, av)
        return (r <= 0.85) & (r >= 0.5)
    if name == "hourglass":
        return (au <= av) & (av <= 0.9)
    raise ValueError(f"unknown shape {name!r}")


def _raster(test, rng: np.random.Generator, side: float, rotation: float, aspect: float,
            flip: bool = False) -> np.ndarray:
    """Rasterise a unit shape (callable u, v -> bool) at `side` pixels; returns the tight bool crop."""
    s = side / 2.0
    sx, sy = s * math.sqrt(aspect), s / math.sqrt(aspect)
    half = int(math.ceil(math.hypot(sx, sy))) + 1
    ox, oy = rng.random(2)  # sub-pixel position, so edges do not always fall on the same phase
    x = np.arange(-half, half, dtype=np.float64) + 0.5 - ox
    y = np.arange(-half, half, dtype=np.float64) + 0.5 - oy
    xx, yy = np.meshgrid(x, y)
    c, sn = math.cos(rotation), math.sin(rotation)
    u = (c * xx + sn * yy) / sx
    v = (-sn * xx + c * yy) / sy
    mask = test(-u if flip else u, v)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return np.zeros((0, 0), dtype=bool)
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]) -> np.ndarray:
    h, s, v = rng.random(), rng.uniform(*sat), rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32) * 255.0


def _paint(img: np.ndarray, mask: np.ndarray, y0: int, x0: int, colour: np.ndarray,
           rng: np.random.Generator) -> None:
    """Fill `mask` (placed at y0, x0) with a colour, a gentle shading ramp and a little noise."""
    h, w = mask.shape
    ramp = np.linspace(-1.0, 1.0, max(h, 2), dtype=np.float32)[:h, None] * rng.uniform(0.05, 0.15)
    shade = (1.0 + ramp) * np.ones((h, w), np.float32)
    patch = colour[None, None, :] * shade[..., None] + rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    region = img[y0:y0 + h, x0:x0 + w]
    region[mask] = patch[mask]


# ---------------------------------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid, bilinearly upsampled to size x size."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, endpoint=False, dtype=np.float32) + 0.5 * cells / size
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # [size, cells + 1]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(t, t)  # xx, yy in (0, 1)


def _texture_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation texture: tinted grey, gradient, stripes, blotches and pixel noise (float32 HxWx3)."""
    xx, yy = _grid(size)
    base = rng.uniform(70, 190) + rng.uniform(-18, 18, 3).astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    gradient = ((xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a)) * rng.uniform(20, 60)
    a2, freq = rng.uniform(0, math.pi), rng.uniform(3, 10)
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(a2) + yy * math.sin(a2)) + rng.uniform(0, 2 * math.pi))
    stripes *= rng.uniform(0, 14)
    blotches = _smooth_noise(rng, size, 4) * rng.uniform(5, 15)
    img = base[None, None, :] + (gradient + stripes + blotches)[..., None]
    img += rng.standard_normal((size, size, 3), dtype=np.float32) * rng.uniform(4, 10)
    return img.astype(np.float32)


def _land_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Green/brown blotches with grass-like vertical streaks."""
    green = np.array([70, 115, 50], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    brown = np.array([115, 88, 55], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    mix = np.clip(_smooth_noise(rng, size, 5) * 0.8 + 0.5, 0, 1)[..., None]
    img = green * mix + brown * (1 - mix)
    streaks = rng.standard_normal(size).astype(np.float32)[None, :] * 6.0  # column-wise: grass stalks
    img += (streaks + _smooth_noise(rng, size, 12) * 12.0)[..., None]
    img += rng.standard_normal((size, size, 3), dtype=np.float32) * 7.0
    return img


def _water_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blue water with horizontal wavy bands, lighter towards the top."""
    xx, yy = _grid(size)
    blue = np.array([40, 95, 165], np.float32) + rng.uniform(-15, 15, 3).astype(np.float32)
    f, g = rng.uniform(6, 14), rng.uniform(1, 4)
    waves = np.sin(2 * math.pi * (f * yy + 0.6 * np.sin(2 * math.pi * g * xx + rng.uniform(0, 2 * math.pi))))
    img = blue[None, None, :] + (waves * rng.uniform(10, 20) + (0.5 - yy) * 30.0)[..., None]
    img += rng.standard_normal((size, size, 3), dtype=np.float32) * 5.0
    return img


# ---------------------------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """One generated image with its ground truth; `load` keeps what the data file stores."""

    image: np.ndarray  # uint8 [H, W, 3]
    segmentation: np.ndarray  # uint8 [H, W]: 0 background, class id + 1
    instances: np.ndarray  # int16 [H, W]: 0 background, i + 1 for the i-th kept object (draw order)
    classes: list[int]  # class of each kept object
    full_pixels: list[int]  # pixels of each object when drawn, before later objects covered it
    boxes: np.ndarray  # float32 [m, 5], one row per kept object, tight on its visible pixels
    labels: np.ndarray  # uint8 [K]
    cues: np.ndarray | None  # bool [K] (multilabel)
    group: int | None  # birds


def _rng(item: Item, scene_split: str | None = None) -> np.random.Generator:
    p = item.params
    split = SPLIT_IDS[scene_split or item.split]
    return np.random.default_rng([p.seed, _TASK_IDS[p.task], split, item.index])


def _boxes(instances: np.ndarray, classes: list[int], windows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Tight half-open box of each instance's visible pixels, searched inside its drawing window."""
    rows = []
    for i, (cls, (y0, x0, h, w)) in enumerate(zip(classes, windows)):
        ys, xs = np.nonzero(instances[y0:y0 + h, x0:x0 + w] == i + 1)
        rows.append([cls, x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


def _random_object(rng: np.random.Generator, num_classes: int, size: int,
                   inner: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Class, colour and tight raster of one object whose extent fits an `inner`-pixel region."""
    cls = int(rng.integers(num_classes))
    colour = _random_colour(rng, (0.45, 0.9), (0.45, 1.0))
    # Cap the side so a rotated, stretched shape (extent <= 1.44 * side, + 1 px) always fits.
    side = min(max(3.0, rng.uniform(*OBJECT_SIZE) * size), (inner - 2) / 1.45)
    rotation = math.radians(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    aspect = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
    mask = _raster(lambda u, v: shape_mask(SHAPES[cls], u, v), rng, side, rotation, aspect)
    return cls, colour, mask


def _multilabel_scene(item: Item, size: int) -> Scene:
    p = item.params
    # The shifted splits re-use test's scenes (same stream), only the cue decisions differ.
    rng = _rng(item, "test" if item.split in SHIFTED_SPLITS else None)
    lay = layout(size)
    inner = size - 2 * lay.band
    img = _texture_background(rng, size)
    inst = np.zeros((size, size), np.int16)
    classes: list[int] = []
    full: list[int] = []
    visible: list[int] = []
    windows: list[tuple[int, int, int, int]] = []
    for j in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        # A thin shape may cover no pixel centre at a tiny size: redraw it (the first object must exist).
        for _ in range(100 if j == 0 else 1):
            cls, colour, mask = _random_object(rng, p.num_classes, size, inner)
            if mask.size:
                break
        if not mask.size:
            continue
        h, w = mask.shape
        npix = int(mask.sum())
        for _ in range(PLACEMENT_TRIES if classes else 1):  # the first object always fits
            y0 = int(rng.integers(lay.band, size - lay.band - h + 1))
            x0 = int(rng.integers(lay.band, size - lay.band - w + 1))
            covered = np.bincount(inst[y0:y0 + h, x0:x0 + w][mask], minlength=len(classes) + 1)[1:]
            if all(visible[i] - covered[i] >= MIN_VISIBLE * full[i] for i in range(len(classes))):
                break
        else:
            continue  # no placement keeps earlier objects visible enough: drop this one
        for i in range(len(classes)):
            visible[i] -= int(covered[i])
        inst[y0:y0 + h, x0:x0 + w][mask] = len(classes) + 1
        _paint(img, mask, y0, x0, colour, rng)
        classes.append(cls)
        full.append(npix)
        visible.append(npix)
        windows.append((y0, x0, h, w))
    if not classes:  # only possible at sizes where no shape covers a pixel centre
        raise ValueError(f"image size {size} is too small to draw objects")

    labels = np.zeros(p.num_classes, np.uint8)
    labels[classes] = 1
    # Cue decisions: one uniform per class, drawn after the scene, so test and test_shifted share them
    # and a change of `spurious` changes only the cues, never the scene.
    u = rng.random(p.num_classes)
    present_rate, absent_rate = ((0.0, 0.0) if p.task == "pretrain"
                                 else cue_rates(item.split, p.num_classes, p.spurious, p.base_rate))
    cues = u < np.where(labels.astype(bool), present_rate, absent_rate)
    for k in np.flatnonzero(cues):
        x0, y0, x1, y1 = lay.slot(int(k))
        img[y0:y1, x0:x1] = cue_patch(int(k), lay.cue)

    seg_lut = np.array([0] + [c + 1 for c in classes], np.uint8)
    return Scene(image=np.clip(np.rint(img), 0, 255).astype(np.uint8), segmentation=seg_lut[inst],
                 instances=inst, classes=classes, full_pixels=full, boxes=_boxes(inst, classes, windows),
                 labels=labels, cues=cues, group=None)


def cue_patch(k: int, side: int) -> np.ndarray:
    """Class k's cue: a checkerboard of its saturated colour and black (float32 [side, side, 3])."""
    cell = max(1, round(side / 3))
    yy, xx = np.mgrid[0:side, 0:side]
    on = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    return np.where(on, np.array(CUE_COLOURS[k], np.float32), np.float32(0.0))


def _landbird(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    body = ((u - 0.05) / 0.5) ** 2 + ((v - 0.05) / 0.33) ** 2 <= 1
    head = (u + 0.45) ** 2 + (v + 0.32) ** 2 <= 0.24 ** 2
    beak = _in_polygon(u, v, [(-0.6, -0.41), (-0.85, -0.33), (-0.6, -0.25)])
    tail = _in_polygon(u, v, [(0.4, -0.05), (0.95, -0.5), (1.0, -0.28), (0.5, 0.15)])
    legs = (((u >= -0.1) & (u <= -0.03)) | ((u >= 0.1) & (u <= 0.17))) & (v >= 0.3) & (v <= 0.75)
    return body | head | beak | tail | legs


def _waterbird(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    body = ((u - 0.1) / 0.62) ** 2 + ((v - 0.25) / 0.27) ** 2 <= 1
    neck = _in_polygon(u, v, [(-0.5, -0.4), (-0.33, -0.4), (-0.2, 0.15), (-0.44, 0.15)])
    head = (u + 0.45) ** 2 + (v + 0.45) ** 2 <= 0.17 ** 2
    beak = _in_polygon(u, v, [(-0.57, -0.5), (-1.0, -0.44), (-0.57, -0.4)])
    tail = _in_polygon(u, v, [(0.6, 0.12), (1.0, 0.02), (0.68, 0.35)])
    return body | neck | head | beak | tail


def _birds_scene(item: Item, size: int) -> Scene:
    rng = _rng(item)
    y, place = item.y, item.place
    img = (_land_background if place == 0 else _water_background)(rng, size)
    colour = _random_colour(rng, (0.3, 0.9), (0.35, 0.95))
    side = min(rng.uniform(*BIRD_SIZE) * size, (size - 2) / 1.45)
    rotation = math.radians(rng.uniform(-BIRD_ROTATION, BIRD_ROTATION))
    aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    mask = _raster(_landbird if y == 0 else _waterbird, rng, side, rotation, aspect, flip=bool(rng.random() < 0.5))
    h, w = mask.shape
    y0 = int(rng.integers(0, size - h + 1))
    x0 = int(rng.integers(0, size - w + 1))
    inst = np.zeros((size, size), np.int16)
    inst[y0:y0 + h, x0:x0 + w][mask] = 1
    _paint(img, mask, y0, x0, colour, rng)
    # birds-place (reversed task): the label is the place, the evidence everything but the bird.
    target = place if item.params.task == "birds-place" else y
    seg = (inst == 0) * (place + 1) if item.params.task == "birds-place" else inst * (y + 1)
    labels = np.zeros(2, np.uint8)
    labels[target] = 1
    return Scene(image=np.clip(np.rint(img), 0, 255).astype(np.uint8), segmentation=seg.astype(np.uint8),
                 instances=inst, classes=[target], full_pixels=[int(mask.sum())],
                 boxes=_boxes(inst, [target], [(y0, x0, h, w)]), labels=labels, cues=None, group=2 * y + place)


def render(record: Record, size: int) -> Scene:
    """Generate one image with all its ground truth (tests and figures use this; `load` wraps it)."""
    item: Item = record.payload
    if item.params.task in ("birds", "birds-place"):
        return _birds_scene(item, size)
    return _multilabel_scene(item, size)


def load(record: Record, size: int) -> Sample:
    """Generate one image at size x size (top-level so that worker processes can call it)."""
    s = render(record, size)
    return Sample(id=record.id, image=s.image, labels=s.labels, boxes=s.boxes, segmentation=s.segmentation,
                  group=s.group)


# ------------------------------------------------------------------------------------------------ plan


def _bird_items(params: Params, split: str, n: int) -> list[tuple[int, int]]:
    """(y, place) per image: balanced classes; place = y with prob `spurious` in train, balanced groups in val
    and test (as Waterbirds, whose val and test put half of each bird type on each place)."""
    rng = np.random.default_rng([params.seed, _TASK_IDS["birds"], SPLIT_IDS[split], 2**32])  # not an image stream
    if split in ("val", "test"):
        groups = rng.permutation(np.arange(n) % 4)
        return [(int(g) // 2, int(g) % 2) for g in groups]
    ys = rng.permutation(np.arange(n) % 2)
    agree = rng.random(n) < params.spurious
    return [(int(y), int(y) if a else 1 - int(y)) for y, a in zip(ys, agree)]


def plan(*, task: str = "multilabel", num_classes: int = 6, spurious: float | None = None, n_train: int = 1500,
         n_val: int = 300, n_test: int = 600, seed: int = 0) -> SourcePlan:
    """Describe the synthetic data set; images are generated later, one per `load` call."""
    if task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if spurious is None:
        spurious = DEFAULT_SPURIOUS[task]
    if not 0.0 <= spurious <= 1.0:
        raise UsageError(f"--spurious must lie in [0, 1], got {spurious}")
    if seed < 0:
        raise UsageError(f"--seed must be non-negative for the synthetic generator, got {seed}")
    if min(n_train, n_val, n_test) < 0:
        raise UsageError("image counts must be non-negative")
    for flag, n in (("--train", n_train), ("--val", n_val), ("--test", n_test)):
        if n > MAX_IMAGES:  # the plan holds one small record per image in memory
            raise UsageError(f"{flag} {n} is too large (at most {MAX_IMAGES:,} images per split)")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    common: dict[str, Any] = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "task": task,
                              "seed": seed, "spurious": spurious, "counts": counts}
    if task in ("birds", "birds-place"):
        params = Params(task, seed, 2, spurious)
        splits = {s: [Record(f"{task}-{s}-{i:06d}", Item(params, s, i, y, place))
                      for i, (y, place) in enumerate(_bird_items(params, s, n))] for s, n in counts.items()}
        prov = {**common, "classes": {
            "landbird": "legs, short conical beak, raised fan tail",
            "waterbird": "long neck, long thin beak, flat pointed tail, no legs"},
            "places": {"land": "green/brown blotches with vertical streaks", "water": "blue horizontal waves"},
            "correlation": "P(place = class) = spurious in train; val and test balanced over the 4 groups",
            "bird_size_frac": list(BIRD_SIZE), "segmentation": "0 background, 1 landbird, 2 waterbird"}
        if task == "birds-place":
            prov.update(target="place (reversed task): the evidence lies outside the bird's box",
                        segmentation="0 on the bird, place id + 1 (1 land, 2 water) elsewhere")
        return SourcePlan(source="synthetic", task="binary",
                          classes=list(PLACES) if task == "birds-place" else list(BIRD_CLASSES), splits=splits,
                          load=load, provenance=prov, segmentation_splits=set(splits),
                          group_names=list(BIRD_GROUPS), mask_mode="outside" if task == "birds-place" else "inside")

    if not 2 <= num_classes <= MAX_CLASSES:
        raise UsageError(f"--classes must lie in 2..{MAX_CLASSES}, got {num_classes}")
    params = Params(task, seed, num_classes, spurious)
    if task == "multilabel":
        counts.update({s: n_test for s in SHIFTED_SPLITS})
    splits = {s: [Record(f"multilabel-{s}-{i:06d}", Item(params, s, i)) for i in range(n)]
              for s, n in counts.items()}
    cues = [{"class": SHAPES[k], "colour": CUE_COLOUR_NAMES[k], "rgb": list(CUE_COLOURS[k]),
             "position": CUE_SLOT_NAMES[k],
             "description": f"{CUE_COLOUR_NAMES[k]}/black checkerboard patch at the {CUE_SLOT_NAMES[k]}"}
            for k in range(num_classes)]
    rates = {s: dict(zip(("p_cue_given_present", "p_cue_given_absent"),
                         (0.0, 0.0) if task == "pretrain" else cue_rates(s, num_classes, spurious))) for s in splits}
    prov = {**common, "num_classes": num_classes, "cue_base_rate": CUE_BASE_RATE,
            "presence_rate": presence_rate(num_classes), "cues": cues, "cue_rates": rates,
            "objects_per_image": [1, MAX_OBJECTS], "object_size_frac": list(OBJECT_SIZE),
            "max_rotation_deg": MAX_ROTATION, "aspect": list(ASPECT), "min_visible_frac": MIN_VISIBLE,
            "occlusion": "later objects hide earlier ones; boxes are tight on each object's visible pixels",
            "segmentation": "0 background, class id + 1 on the top-most object's pixels",
            "test": "drawn like train and val (the cue correlation of training)"}
    if task == "multilabel":
        prov.update(test_decorrelated="same scenes as test, cues independent of the classes (same marginal)",
                    test_shifted="same scenes as test, cues re-drawn with the inverted correlation")
    else:
        prov.update(cues=[], pretrain="the multilabel shapes without any cue, scenes of their own; for a backbone "
                                      "trained once and loaded with --weights")
    return SourcePlan(source="synthetic", task="multilabel", classes=list(SHAPES[:num_classes]), splits=splits,
                      load=load, provenance=prov, segmentation_splits=set(splits))
