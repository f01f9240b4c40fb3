"""The numbers the paper states (its Table 1 and the numbers in its text), and ours beside them.

Each number carries where the paper states it ([P §x], the ICCV 2023 text) and where the project's
digest quotes it (paper spec §7-8). The paper's curves are images and its supplement could not be read,
so only these numbers exist to compare with (paper spec §0). `paper_tables` prints them next to a
real-data run's values (VOC, COCO, Waterbirds; synthetic runs are not comparable) with the difference;
`cite(claim)` gives the claims report the numbers behind one claim of paper spec §8.

How "ours" is read for each kind of number (`PaperNumber.kind`):
* best: the highest metric over the guided checkpoints of the configuration (main experiment; of the
  stated loss, or of any loss where the paper names none), with its F1 ("best EPG ... 71.7 @ F1 79.4");
* gain_both: the largest metric gain over the baseline among guided checkpoints that also raise F1,
  with that F1 gain (R6: "a guided model beating the baseline in both metrics");
* gain: the largest metric gain over the baseline in the limited-annotations experiment at the stated
  fraction, with the F1 change at it (R7: "up to +23.0 p.p. EPG at -0.3 p.p. F1");
* speedup: mean seconds per epoch guided at the input over guided at the stated layer, same loss (R9);
* table1: Waterbirds-100 accuracy, mean (std) over seeds, per setting and loss (Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from mgkit.registry import FAMILIES
from mgkit.report.analysis import Analysis, mean_or_none, setting_of, std_or_none
from mgkit.report.records import Point
from mgkit.report.tables import Column, Table

__all__ = ["NUMBERS", "PaperNumber", "cite", "describe", "paper_dataset", "paper_tables"]

VOC_CLASSES, COCO_CLASSES = 20, 80


@dataclass(frozen=True)
class PaperNumber:
    """One number the paper states. Fractions (0.717 for 71.7 %), ratios for speed-ups."""

    key: str
    dataset: str  # voc | waterbirds
    kind: str  # best | gain_both | gain | speedup | table1 (see the module docstring)
    text: str  # what it is, in words
    value: float
    at: float | None = None  # the paired F1 (best) or F1 change (gain, gain_both)
    std: float | None = None  # Table 1's "±"
    family: str | None = None
    layer: str | None = None  # guidance (and evaluation) layer
    loss: str | None = None  # None: any loss (gain_both) or the baseline (table1)
    metric: str = "epg"
    bbox_frac: float | None = None
    setting: str | None = None  # table1: conventional | reversed
    claim: int | None = None  # paper spec §8 claim it supports
    source: str = ""

    @property
    def unit(self) -> str:
        return "ratio" if self.kind == "speedup" else "fraction"


def _n(key: str, kind: str, text: str, value: float, source: str, **kw: Any) -> PaperNumber:
    return PaperNumber(key=key, dataset=kw.pop("dataset", "voc"), kind=kind, text=text, value=value,
                       source=source, **kw)


_T1 = "[P §5.5, Table 1]; paper spec §7.6"
NUMBERS: tuple[PaperNumber, ...] = (
    _n("r4.bcos.input.energy.best_epg", "best", "best EPG, B-cos, input, Energy", 0.717, "[P §5.2]; paper spec §7.1",
       at=0.794, family="bcos", layer="input", loss="energy", claim=4),
    _n("r4.vanilla.input.best_epg", "best", "best EPG, Vanilla (IxG), input", 0.558, "[P §5.2]; paper spec §7.1",
       at=0.690, family="vanilla", layer="input", claim=4),
    _n("r4.xdnn.input.best_epg", "best", "best EPG, X-DNN (IntGrad), input", 0.623, "[P §5.2]; paper spec §7.1",
       at=0.689, family="xdnn", layer="input", claim=4),
    _n("r6.xdnn.input.epg_gain", "gain_both", "X-DNN input: EPG gain of a model also raising F1", 0.072,
       "[P §5.3]; paper spec §7.1", at=0.014, family="xdnn", layer="input", claim=5),
    _n("r6.xdnn.final.iou_gain", "gain_both", "X-DNN final: IoU gain of a model also raising F1", 0.119,
       "[P §5.3]; paper spec §7.1", at=0.014, family="xdnn", layer="final", metric="iou", claim=5),
    _n("r7.bcos.input.energy.1pct.epg_gain", "gain", "1 % boxes (25 VOC images): largest EPG gain, B-cos input, Energy",
       0.230, "[P §5.4]; paper spec §7.2", at=-0.003, family="bcos", layer="input", loss="energy", bbox_frac=0.01,
       claim=6),
    _n("r7.bcos.input.1pct.iou_gain", "gain", "1 % boxes: largest IoU gain, B-cos input", 0.014,
       "[P §5.4]; paper spec §7.2", at=-0.025, family="bcos", layer="input", metric="iou", bbox_frac=0.01, claim=6),
    _n("r9.bcos.mid2.speedup", "speedup", "training speed-up, B-cos guided at mid2 vs input", 1.7,
       "[P §5.4]; paper spec §7.5", family="bcos", layer="mid2", loss="energy", claim=9),
    *(_n(f"table1.{setting}.{loss or 'baseline'}.{metric}", "table1",
         f"Waterbirds-100 {setting}, {loss or 'baseline'}: {'worst-group' if metric == 'worst_group' else 'overall'} "
         "accuracy", value, _T1, std=std, dataset="waterbirds", family="bcos", loss=loss, metric=metric,
         setting=setting, claim=10)
      for setting, loss, metric, value, std in (
          ("conventional", None, "worst_group", 0.434, 0.024), ("conventional", None, "overall", 0.687, 0.002),
          ("reversed", None, "worst_group", 0.566, 0.024), ("reversed", None, "overall", 0.801, 0.002),
          ("conventional", "energy", "worst_group", 0.561, 0.040), ("conventional", "energy", "overall", 0.712, 0.001),
          ("reversed", "energy", "worst_group", 0.628, 0.021), ("reversed", "energy", "overall", 0.836, 0.011),
          ("conventional", "l1", "worst_group", 0.511, 0.019), ("conventional", "l1", "overall", 0.695, 0.002),
          ("reversed", "l1", "worst_group", 0.588, 0.050), ("reversed", "l1", "overall", 0.822, 0.009))),
)
"""Every number the paper's text and Table 1 state (paper spec §7.1-7.6). The paper states no COCO number
in its text (Fig. 5b only, §7.7)."""


def cite(claim: int) -> list[PaperNumber]:
    """The paper's numbers behind claim `claim` of paper spec §8 (empty when it states none)."""
    return [n for n in NUMBERS if n.claim == claim]


def paper_dataset(p: Point) -> str | None:
    """voc / coco / waterbirds for a real-data point, None otherwise. Data from the reference's
    preprocessed files (source "reference") is told apart by its number of classes."""
    if p.dataset in ("voc", "coco", "waterbirds"):
        return p.dataset
    if p.dataset == "reference":
        return {VOC_CLASSES: "voc", COCO_CLASSES: "coco"}.get(len(p.classes))
    return None


# ----------------------------------------------------------------------------------------------- ours
def _main(an: Analysis, dataset: str, n: PaperNumber) -> list[Point]:
    # the paper pairs each family with its default attribution (§4): vanilla IxG, X-DNN IntGrad, B-cos
    return [p for p in an.points if p.experiment == "main" and not p.is_baseline and paper_dataset(p) == dataset
            and p.family == n.family and p.eattr == FAMILIES[n.family].default_attribution and p.elayer == n.layer
            and p.glayer == n.layer and (n.loss is None or p.loss == n.loss)]


def _best(an: Analysis, pts: list[Point], metric: str) -> tuple[float | None, float | None, int]:
    vals = [(an.value(p, metric), p.m("f1")) for p in pts]
    vals = [(v, f) for v, f in vals if v is not None and f is not None]
    if not vals:
        return None, None, 0
    v, f = max(vals)
    return v, f, len(vals)


def _gains(an: Analysis, pts: list[Point], metric: str) -> list[tuple[float, float]]:
    out = []
    for p in pts:
        base = an.baseline(p)
        v, f = an.value(p, metric), p.m("f1")
        if base and base.get(metric) is not None and base.get("f1") is not None and v is not None and f is not None:
            out.append((v - base[metric], f - base["f1"]))
    return out


def _ours(an: Analysis, dataset: str, n: PaperNumber) -> tuple[float | None, float | None, float | None, int]:
    """(value, paired value, spread, count) of our records for paper number `n`."""
    if n.kind == "best":
        v, f, k = _best(an, _main(an, dataset, n), n.metric)
        return v, f, None, k
    if n.kind == "gain_both":
        g = [(dm, df) for dm, df in _gains(an, _main(an, dataset, n), n.metric) if dm > 0 and df > 0]
        return (*max(g), None, len(g)) if g else (None, None, None, 0)
    if n.kind == "gain":
        pts = [p for p in an.points if p.experiment == "annotations" and not p.is_baseline
               and paper_dataset(p) == dataset and p.family == n.family and p.glayer == n.layer
               and p.elayer == n.layer and abs(p.bbox_frac - (n.bbox_frac or 1.0)) < 1e-9
               and (n.loss is None or p.loss == n.loss)]
        g = _gains(an, pts, n.metric)
        return (*max(g), None, len(g)) if g else (None, None, None, 0)
    if n.kind == "speedup":
        pts = [p for p in an.points if p.experiment in ("depth", "main") and not p.is_baseline
               and paper_dataset(p) == dataset and p.family == n.family and p.loss == n.loss
               and p.seconds_per_epoch]
        at_input = mean_or_none(p.seconds_per_epoch for p in pts if p.glayer == "input")
        at_layer = mean_or_none(p.seconds_per_epoch for p in pts if p.glayer == n.layer)
        if not at_input or not at_layer:
            return None, None, None, 0
        return at_input / at_layer, None, None, len(pts)
    if n.kind == "table1":
        from mgkit.report.tables import shift_values

        pts = [p for p in an.shift_points if paper_dataset(p) == dataset and p.family == n.family
               and p.split == "test" and setting_of(p) == n.setting
               and (p.is_baseline if n.loss is None else (not p.is_baseline and p.loss == n.loss))]
        # one value per seed: an embedded baseline repeats in every guided record of the same seed
        per_seed: dict[Any, float] = {}
        for p in pts:
            worst, overall = shift_values(p)
            v = worst if n.metric == "worst_group" else overall
            if v is not None:
                per_seed.setdefault((p.seed, p.model, p.glayer), v)
        vals = list(per_seed.values())
        return mean_or_none(vals), None, std_or_none(vals), len(vals)
    raise ValueError(f"unknown paper number kind {n.kind!r}")


# --------------------------------------------------------------------------------------------- tables
def _fmt(value: float | None, unit: str, signed: bool = False) -> str | None:
    if value is None:
        return None
    if unit == "ratio":
        return f"{value:.2f}×"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _side(n: PaperNumber, value: float | None, at: float | None, std: float | None) -> str | None:
    """'71.7 (F1 79.4)', '+7.2 (ΔF1 +1.4)', '56.1 (±4.0)' or '1.70×'."""
    signed = n.kind in ("gain", "gain_both")
    text = _fmt(value, n.unit, signed)
    if text is None:
        return None
    if at is not None:
        text += f" (ΔF1 {100 * at:+.1f})" if signed else f" (F1 {100 * at:.1f})"
    if std is not None:
        text += f" (±{100 * std:.1f})"
    return text


def rows_for(an: Analysis, dataset: str) -> list[dict[str, Any]]:
    """One row per paper number of `dataset`: the paper's value, ours, and ours minus the paper's."""
    rows = []
    for n in NUMBERS:
        if n.dataset != dataset:
            continue
        v, at, std, count = _ours(an, dataset, n)
        diff = None if v is None else v - n.value
        rows.append({"dataset": dataset, "key": n.key, "quantity": n.text, "unit": n.unit, "source": n.source,
                     "claim": n.claim, "paper": n.value, "paper_at": n.at, "paper_spread": n.std,
                     "ours": v, "ours_at": at, "ours_spread": std, "diff": diff, "n": count,
                     "paper_text": _side(n, n.value, n.at, n.std), "ours_text": _side(n, v, at, std),
                     "diff_text": _fmt(diff, n.unit, signed=True) if n.unit == "fraction" else
                     (None if diff is None else f"{diff:+.2f}×")})
    return rows


def paper_tables(an: Analysis) -> list[Table]:
    """A table per real data set in the records (VOC, COCO, Waterbirds): the paper's numbers beside ours.
    Nothing for synthetic data, whose numbers are not comparable."""
    present = {paper_dataset(p) for p in [*an.points, *an.shift_points]} - {None}
    cols = [Column("quantity", ("quantity",), "text"), Column("paper", ("paper_text",), "text"),
            Column("ours", ("ours_text",), "text"), Column("ours − paper (p.p.)", ("diff_text",), "text"),
            Column("n", ("n",), "text"), Column("source", ("source",), "text")]
    keys = ["dataset", "key", "quantity", "unit", "paper", "paper_at", "paper_spread", "ours", "ours_at", "ours_spread",
            "diff", "n", "claim", "source"]
    notes = ["Values in % (fractions in the CSV); speed-ups as ratios. n: our checkpoints (or seeds) the value "
             "is taken from; — where our records hold no such measurement. How each of ours is read: "
             "mgkit/report/paper_numbers.py."]
    tables = []
    for dataset in sorted(present):
        rows = rows_for(an, dataset)
        extra = ([] if rows else [f"The paper states no {dataset.upper()} numbers in its text "
                                  "(only Fig. 5b's curves; paper spec §7.7)."])
        tables.append(Table(f"paper-{dataset}", f"The paper's numbers beside ours — {dataset}", cols, rows, keys,
                            notes + extra))
    return tables


def describe(numbers: Iterable[PaperNumber]) -> str:
    """'71.7 (F1 79.4) [P §5.2]; ...': the paper's numbers as the claims report cites them."""
    return "; ".join(f"{n.text}: {_side(n, n.value, n.at, n.std)} {n.source.split(';')[0]}" for n in numbers)
