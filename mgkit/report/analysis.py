"""Grouping points into configurations, finding their baselines, and the numbers the tables print.

Definitions (stated again in the report):
* configuration: (data set, model, evaluation attribution, evaluation layer);
* baseline: the stage-"train" points of the same data set, classes, model, evaluation attribution and
  layer: per baseline run (identity.run, seed) the best-F1 point, averaged over runs (seeds);
* candidates of a loss: every guided point of that configuration (all λ, epochs, seeds, pareto entries);
* best M at d points: max M over candidates with F1 >= baseline F1 - d (d = 0.01 or 0.05).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any, Callable, Iterable

from mgkit.errors import FormatError
from mgkit.pipeline.experiments import BY_NAME, EXPERIMENTS
from mgkit.registry import FAMILIES, LAYERS, LOSSES
from mgkit.report.pareto2d import front_2d
from mgkit.report.records import Point

LOSS_ORDER = LOSSES
LAYER_ORDER = LAYERS
FAMILY_ORDER = tuple(FAMILIES)
DROPS = (0.01, 0.05)
SETTINGS = {("landbird", "waterbird"): "conventional", ("land", "water"): "reversed"}
# How the report names a metric: (full: figure axes and titles, short: table headers and claims)
METRIC_NAMES = {"f1": ("F1", "F1"), "epg": ("EPG", "EPG"), "iou": ("IoU", "IoU"),
                "on_object": ("on-object energy", "on-object"), "worst": ("worst-group", "worst-group"),
                "overall": ("overall", "overall")}


def metric_name(metric: str, short: bool = False) -> str:
    """The display name of a metric key (the key itself when it has none)."""
    names = METRIC_NAMES.get(metric)
    return metric if names is None else names[1 if short else 0]

ConfigKey = tuple[str, str, str, str | None, str | None]  # dataset, model, family, eattr, elayer


def config_key(p: Point) -> ConfigKey:
    return (p.dataset, p.model, p.family, p.eattr, p.elayer)


def _order(seq: tuple[str, ...], v: Any) -> tuple[int, str]:
    return (seq.index(v) if v in seq else len(seq), str(v))


def config_sort(k: ConfigKey) -> tuple:
    return (k[0], _order(FAMILY_ORDER, k[2]), k[1], str(k[3]), _order(LAYER_ORDER, k[4]))


def loss_sort(loss: str | None) -> tuple[int, str]:
    return _order(LOSS_ORDER, loss)


def mean_or_none(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.fmean(v) if v else None


def std_or_none(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return statistics.stdev(v) if len(v) > 1 else None  # undefined for one record


def best_point(points: list[Point], metric: str, base_f1: float | None, drop: float) -> Point | None:
    """The point with the best metric (ties: higher F1) among those with F1 >= base_f1 - drop."""
    if base_f1 is None:
        return None
    ok = [p for p in points if p.m(metric) is not None and p.m("f1") is not None
          and p.m("f1") >= base_f1 - drop - 1e-12]
    return max(ok, key=lambda p: (p.m(metric), p.m("f1")), default=None)


def best_at(points: list[Point], metric: str, base_f1: float | None, drop: float) -> tuple[float, float] | None:
    """(best metric, its F1) over points with F1 >= base_f1 - drop; None when none qualifies."""
    p = best_point(points, metric, base_f1, drop)
    return None if p is None else (p.m(metric), p.m("f1"))


def front(points: list[Point], metric: str) -> list[tuple[float, float]]:
    """The (F1, metric) Pareto front of the points."""
    xy = [(p.m("f1"), p.m(metric)) for p in points]
    xy = [(f, v) for f, v in xy if f is not None and v is not None]
    idx = front_2d([f for f, _ in xy], [v for _, v in xy])
    return [xy[i] for i in idx]


def setting_of(p: Point) -> str:
    return SETTINGS.get(tuple(sorted(p.classes)), "/".join(p.classes) or "task")


class Analysis:
    """All points of one `mgkit tables` run, with baseline lookup and per-experiment grouping."""

    def __init__(self, points: list[Point], split: str = "test"):
        self.split = split
        self.shift_points = [p for p in points if p.experiment == "shift"]
        rest = [p for p in points if p.experiment != "shift"]
        self.points = [p for p in rest if p.split in (split, None)]
        self.ignored_split = len(rest) - len(self.points)
        with_iou = [p for p in self.points if p.m("iou") is not None or p.m("iou_chosen") is not None]
        # The paper's IoU uses a threshold chosen on held-out data; use it only when every record has one.
        self.iou_key = "iou_chosen" if with_iou and all(p.m("iou_chosen") is not None for p in with_iou) else "iou"
        self._baselines: dict[tuple, list[Point]] = defaultdict(list)
        for p in self.points:
            if p.is_baseline:
                self._baselines[self._bkey(p)].append(p)

    @staticmethod
    def _bkey(p: Point) -> tuple:
        return (p.dataset, p.classes, p.model, p.eattr, p.elayer)

    def metric_key(self, metric: str) -> str:
        return self.iou_key if metric == "iou" else metric

    def value(self, p: Point, metric: str) -> float | None:
        return p.m(self.metric_key(metric))

    def baseline(self, p: Point) -> dict[str, Any] | None:
        """Mean baseline metrics for the configuration of `p` (None when no baseline was evaluated)."""
        pts = self.baseline_points(p)
        if not pts:
            return None
        keys = ("f1", "epg", "iou", "on_object")
        out: dict[str, Any] = {k: mean_or_none(self.value(b, k) for b in pts) for k in keys}
        out["n"] = len(pts)
        return out

    def baseline_points(self, p: Point) -> list[Point]:
        """The baseline points averaged for the configuration of `p`: per run (seed) its best-F1 ones."""
        pts = self._baselines.get(self._bkey(p))
        if not pts:
            return []
        # Several points of one baseline run (epochs): its best-F1 ones, the checkpoint guidance starts from
        # (several records of that checkpoint, e.g. with and without segmentation masks, share its F1).
        runs: dict[tuple, list[Point]] = defaultdict(list)
        for b in pts:
            runs[(b.run, b.seed) if b.run is not None else (id(b),)].append(b)
        pts = []
        for group in runs.values():
            top = max((b.m("f1") for b in group if b.m("f1") is not None), default=None)
            pts += [b for b in group if b.m("f1") == top]
        return pts

    def guided(self, experiment: str) -> list[Point]:
        """Guided points of an experiment, plus the main-comparison points that are its reference condition
        (100 % boxes, undilated boxes, input-layer guidance) for the (configuration, loss) pairs it has."""
        e = BY_NAME[experiment]
        pts = [p for p in self.points if p.experiment == experiment and not p.is_baseline]
        if e.main_metric:
            pts += [p for p in self.points if p.experiment == "main" and not p.is_baseline
                    and p.m(e.main_metric) is not None]
        if e.main_reference:
            have = {(config_key(p), p.loss) for p in pts}
            pts += [p for p in self.points if p.experiment == "main" and not p.is_baseline
                    and (config_key(p), p.loss) in have and e.main_reference(p)]
        return pts

    def check_one_dataset(self, pts: list[Point], experiment: str, strict_hash: bool) -> None:
        """Refuse a table that mixes data sets (different classes, or different data files)."""
        first: Point | None = None
        for p in pts:
            if first is None:
                first = p
                continue
            if p.classes != first.classes or (strict_hash and p.data_hash and first.data_hash
                                              and p.data_hash != first.data_hash):
                what = (f"classes {list(p.classes)} vs {list(first.classes)}" if p.classes != first.classes
                        else f"data_hash {p.data_hash} vs {first.data_hash}")
                raise FormatError(f"records of different data sets in one {experiment} table for {p.dataset}: "
                                  f"{p.source} and {first.source} ({what})")


def _condition(field: str | None) -> Callable[[Point], Any]:
    return (lambda p: getattr(p, field)) if field else (lambda p: None)


CONDITIONS: dict[str, Callable[[Point], Any]] = {e.name: _condition(e.condition_field) for e in EXPERIMENTS}


def condition_sort(experiment: str, c: Any) -> tuple:
    if BY_NAME[experiment].condition_field == "glayer":
        return _order(LAYER_ORDER, c)
    if isinstance(c, str):  # a named condition (claim 11's targets: random, all)
        return (1, c)
    return (0, "") if c is None else (float(c), "")


def group_rows(an: Analysis, experiment: str) -> dict[str, dict[ConfigKey, dict[tuple, list[Point]]]]:
    """dataset -> configuration -> (loss, condition) -> candidate points."""
    cond = CONDITIONS[experiment]
    out: dict[str, dict[ConfigKey, dict[tuple, list[Point]]]] = {}
    for p in an.guided(experiment):
        out.setdefault(p.dataset, {}).setdefault(config_key(p), {}).setdefault((p.loss, cond(p)), []).append(p)
    for dataset, configs in out.items():
        pts = [p for c in configs.values() for ps in c.values() for p in ps]
        pts += [b for p in pts for b in an._baselines.get(an._bkey(p), [])]
        an.check_one_dataset(pts, experiment, strict_hash=BY_NAME[experiment].strict_hash)
    return out
