"""The paper's tables, built from an `Analysis`, rendered as Markdown, LaTeX and CSV.

Metrics are fractions in records; tables print percentages with one decimal, like the paper.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from mgkit.bootstrap import combine_seeds
from mgkit.pipeline.experiments import BY_NAME, EXPERIMENTS
from mgkit.report.analysis import (DROPS, Analysis, best_point, condition_sort, config_sort, group_rows, loss_sort,
                                   mean_or_none, metric_name, setting_of, std_or_none)

DASH = "—"


@dataclass
class Column:
    """A printed column: `keys` are row fields; kind pct (one value), ci ("value [lo, hi]", or "mean ±std [lo, hi]"
    with a fourth key), pair ("value [lo, hi] (F1)" from value, F1, lo, hi), msd ("mean (±std)" from two keys,
    "[lo, hi]" appended from two more), text, or num (two decimals)."""

    header: str
    keys: tuple[str, ...]
    kind: str = "pct"


@dataclass
class Table:
    name: str  # file stem, e.g. "main-synthetic"
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    csv_keys: list[str]
    notes: list[str] = field(default_factory=list)


def _pct(v: Any) -> str:
    return DASH if v is None else f"{100 * v:.1f}"


def _cell(row: dict[str, Any], col: Column) -> str:
    vals = [row.get(k) for k in col.keys]
    if col.kind == "text":
        return DASH if vals[0] is None else str(vals[0])
    if col.kind == "num":
        return DASH if vals[0] is None else f"{vals[0]:.2f}"
    if col.kind == "pair":
        sd = f" ±{_pct(vals[4])}" if len(vals) > 4 and vals[4] is not None else ""
        return DASH if vals[0] is None else f"{_pct(vals[0])}{sd}{_iv(vals[2:4])} ({_pct(vals[1])})"
    if col.kind == "ci":
        if vals[0] is None:
            return DASH
        sd = f" ±{_pct(vals[3])}" if len(vals) > 3 and vals[3] is not None else ""
        return f"{_pct(vals[0])}{sd}{_iv(vals[1:3])}"
    if col.kind == "msd":
        if vals[0] is None:
            return DASH
        return (_pct(vals[0]) if vals[1] is None else f"{_pct(vals[0])} (±{_pct(vals[1])})") + _iv(vals[2:4])
    return _pct(vals[0])


def _iv(lohi: list[Any]) -> str:
    """" [lo, hi]" when both ends are known, else nothing."""
    if len(lohi) < 2 or lohi[0] is None or lohi[1] is None:
        return ""
    return f" [{_pct(lohi[0])}, {_pct(lohi[1])}]"


def interval_of(points: list, key: str) -> tuple[float | None, float | None, float | None]:
    """(lo, hi, std over seeds) of `key` for one point (its bootstrap interval) or several (seeds: the mean's
    interval from `mgkit.bootstrap.combine_seeds` when every point has one; else the spread's t interval)."""
    vals = [p.m(key) for p in points if p.m(key) is not None]
    if not vals:
        return None, None, None
    _, sd, lo, hi = over_seeds(vals, [p.m(f"{key}_lo") for p in points if p.m(key) is not None],
                               [p.m(f"{key}_hi") for p in points if p.m(key) is not None])
    return lo, hi, sd


def over_seeds(vals: list[float], los: list[float | None], his: list[float | None]
               ) -> tuple[float, float | None, float | None, float | None]:
    """(mean, std, lo, hi) over seeds: one value keeps its own interval; several combine their test-set
    intervals with the spread (`combine_seeds`) when each has one, else the spread's t interval."""
    if len(vals) == 1:
        return vals[0], None, los[0], his[0]
    if all(lo is not None and hi is not None for lo, hi in zip(los, his)):
        mean, sd, iv = combine_seeds(vals, los, his)
        return mean, sd, iv.lo, iv.hi
    lo, hi = t_interval(vals)
    return sum(vals) / len(vals), std_or_none(vals), lo, hi


def best_over_seeds(points: list, key: str, base_f1: float | None, drop: float
                    ) -> tuple[float | None, float | None, float | None, float | None, float | None]:
    """(best value, its F1, lo, hi, std over seeds) among candidates at most `drop` F1 below the baseline.
    With several training seeds each seed's best is taken and they are averaged (`over_seeds`), so a
    lucky seed does not stand for the configuration; one seed: its best point and that point's interval."""
    seeds = sorted({p.seed for p in points}, key=str)
    best = [b for b in (best_point([p for p in points if p.seed == s], key, base_f1, drop) for s in seeds)
            if b is not None]
    if not best:
        return None, None, None, None, None
    mean, sd, lo, hi = over_seeds([b.m(key) for b in best], [b.m(f"{key}_lo") for b in best],
                                  [b.m(f"{key}_hi") for b in best])
    return mean, sum(b.m("f1") for b in best) / len(best), lo, hi, sd


def t_interval(vals: list[float]) -> tuple[float | None, float | None]:
    """95 % Student t interval of the mean of `vals` (None with fewer than two)."""
    if len(vals) < 2:
        return None, None
    m, sd = sum(vals) / len(vals), std_or_none(vals)
    h = T975.get(len(vals) - 1, 1.96) * sd / len(vals) ** 0.5
    return m - h, m + h


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _csv_value(key: str, v: Any, pct_keys: set[str]) -> str:
    if v is None:
        return ""
    if key in pct_keys and isinstance(v, (int, float)):
        return f"{100 * v:.1f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def to_markdown(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(c.header for c in t.columns) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in t.columns) + " |" for r in t.rows]
    lines += [""] + [f"{n}" for n in t.notes]
    return "\n".join(lines).rstrip() + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("≤", r"$\leq$"), ("—", "--"), ("λ", r"$\lambda$"), ("×", r"$\times$"), ("−", "-")):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    head = " & ".join(_tex(c.header) for c in t.columns) + r" \\"
    body = [" & ".join(_tex(_cell(r, c)) for c in t.columns) + r" \\" for r in t.rows]
    return "\n".join([
        r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_tex(t.title)}}}",
        r"\begin{tabular}{" + "l" * len(t.columns) + "}", r"\toprule", head, r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def to_csv(t: Table, pct_keys: set[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.csv_keys)
    for r in t.rows:
        w.writerow([_csv_value(k, r.get(k), pct_keys) for k in t.csv_keys])
    return buf.getvalue()


_LABELS = {e.name: e.label for e in EXPERIMENTS}
_COND = {e.name: e.condition for e in EXPERIMENTS if e.condition}


def _cond_text(experiment: str, c: Any) -> Any:
    if BY_NAME[experiment].percent:
        return f"{100 * c:g}"
    return c


def comparison_tables(an: Analysis, experiment: str) -> list[Table]:
    """One table per data set: baseline and best metric at <= 1 / 5 points F1 below it, per loss."""
    e = BY_NAME[experiment]
    metrics = e.metrics
    tables = []
    for dataset, configs in sorted(group_rows(an, experiment).items()):
        rows: list[dict[str, Any]] = []
        for ck in sorted(configs, key=config_sort):
            groups = configs[ck]
            some = next(iter(groups.values()))[0]
            base = an.baseline(some)
            common = {"dataset": dataset, "model": ck[1], "family": ck[2], "attribution": ck[3], "layer": ck[4]}
            brow = {**common, "loss": "baseline", "condition": None, "n": base["n"] if base else 0,
                    **{f"base_{m}": base and base.get(m) for m in ("f1", "epg", "iou", "on_object")}}
            bpts = an.baseline_points(some)
            for m in ("f1", *metrics):
                brow[f"base_{m}_lo"], brow[f"base_{m}_hi"], brow[f"base_{m}_std"] = interval_of(bpts, an.metric_key(m))
            rows.append(brow)
            ref_speed: dict[Any, float | None] = {}
            for (loss, cond) in sorted(groups, key=lambda k: (loss_sort(k[0]), condition_sort(experiment, k[1]))):
                pts = groups[(loss, cond)]
                row: dict[str, Any] = {**common, "loss": loss, "condition": None if cond is None
                                       else _cond_text(experiment, cond), "n": len(pts)}
                bf1 = base["f1"] if base else None
                for m in metrics:
                    for d in DROPS:
                        key, k = an.metric_key(m), f"{m}_at_{int(d * 100)}"
                        best = best_over_seeds(pts, key, bf1, d)
                        row[k], row[f"f1_{k}"], row[f"{k}_lo"], row[f"{k}_hi"], row[f"{k}_std"] = best
                if e.timed:
                    spe = mean_or_none(p.seconds_per_epoch for p in pts)
                    row["seconds_per_epoch"] = spe
                    if cond == ck[4]:
                        ref_speed[loss] = spe
                rows.append(row)
            if e.timed:
                for r in rows:
                    ref = ref_speed.get(r["loss"])
                    r["speedup"] = ref / r["seconds_per_epoch"] if ref and r.get("seconds_per_epoch") else None
        cols = [Column("model", ("model",), "text"), Column("attribution", ("attribution",), "text"),
                Column("layer", ("layer",), "text"), Column("loss", ("loss",), "text")]
        if experiment in _COND:
            cols.append(Column(_COND[experiment], ("condition",), "text"))
        cols.append(Column("n", ("n",), "text"))
        cols += [Column(f"baseline {_m(an, m)}", (f"base_{m}", f"base_{m}_lo", f"base_{m}_hi", f"base_{m}_std"), "ci")
                 for m in ("f1", *metrics)]
        for m in metrics:
            for d in DROPS:
                k = f"{m}_at_{int(d * 100)}"
                cols.append(Column(f"best {_m(an, m)} (F1) @ ≤{int(d * 100)}pt",
                                   (k, f"f1_{k}", f"{k}_lo", f"{k}_hi", f"{k}_std"), "pair"))
        if e.timed:
            cols += [Column("s/epoch", ("seconds_per_epoch",), "num"), Column("speed-up", ("speedup",), "num")]
        csv_keys = ["dataset", "model", "family", "attribution", "layer", "loss", "condition", "n",
                    *[f"base_{m}{x}" for m in ("f1", *metrics) for x in ("", "_lo", "_hi", "_std")],
                    *[f"{m}_at_{int(d * 100)}{x}" for m in metrics for d in DROPS for x in ("", "_lo", "_hi", "_std")],
                    *[f"f1_{m}_at_{int(d * 100)}" for m in metrics for d in DROPS]]
        if e.timed:
            csv_keys += ["seconds_per_epoch", "speedup"]
        notes = [f"Split: {an.split}. Percentages. Baseline: unguided model (stage train), same model, evaluation "
                 f"attribution and layer; n = number of records (baseline) or candidates (loss). "
                 f"'best M (F1) @ ≤d pt': highest M among candidates whose F1 is at most d points below the "
                 f"baseline's, with that candidate's F1; — when none qualifies. [lo, hi]: 95 % bootstrap interval "
                 f"over test images (absent for records without one); with several training seeds, the baseline "
                 f"and each seed's best candidate are averaged: mean ±std over seeds and an interval combining "
                 f"both sources."]
        if "iou" in metrics:
            notes.append(f"IoU: metrics.{an.iou_key}"
                         + (" (threshold chosen on held-out data)." if an.iou_key == "iou_chosen"
                            else " (fixed threshold; not every record has a held-out-chosen threshold)."))
        tables.append(Table(f"{experiment}-{dataset}", f"{_LABELS[experiment]} — {dataset}", cols, rows,
                            csv_keys, notes))
    return tables


def _m(an: Analysis, m: str) -> str:
    return metric_name(m, short=True)


def shift_values(p) -> tuple[float | None, float | None]:
    """(worst-group, overall) accuracy of a shift point."""
    overall = p.m("overall")
    return p.m("worst_group"), overall if overall is not None else p.m("accuracy")


def shift_groups(an: Analysis) -> dict[tuple[str, str], dict[tuple, dict[str, list]]]:
    """(dataset, split) -> (model, loss, guidance layer) -> setting -> points, baselines deduplicated."""
    out: dict = {}
    seen = set()
    for p in an.shift_points:
        if p.is_baseline:
            key = (p.seed, p.split, p.classes, p.model, tuple(sorted((k, v) for k, v in p.metrics.items() if isinstance(v, (int, float)))))
            if key in seen:
                continue
            seen.add(key)
        row = (p.model, "baseline" if p.is_baseline else p.loss, None if p.is_baseline else p.glayer)
        out.setdefault((p.dataset, p.split), {}).setdefault(row, {}).setdefault(setting_of(p), []).append(p)
    return out


def shift_tables(an: Analysis) -> list[Table]:
    """Table 1's layout: worst-group and overall accuracy per setting, mean (±std) over seeds."""
    tables = []
    for (dataset, split), rows_in in sorted(shift_groups(an).items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        settings = sorted({s for v in rows_in.values() for s in v},
                          key=lambda s: ({"conventional": 0, "reversed": 1}.get(s, 2), s))
        rows = []
        for (model, loss, layer) in sorted(rows_in, key=lambda r: (r[0], r[1] != "baseline", loss_sort(r[1]), str(r[2]))):
            row: dict[str, Any] = {"dataset": dataset, "split": split, "model": model, "loss": loss, "layer": layer}
            for s in settings:
                pts = rows_in[(model, loss, layer)].get(s, [])
                w = [shift_values(p)[0] for p in pts]
                o = [shift_values(p)[1] for p in pts]
                w, o = [x for x in w if x is not None], [x for x in o if x is not None]
                row.update({f"{s}_worst_mean": mean_or_none(w), f"{s}_worst_std": std_or_none(w),
                            f"{s}_overall_mean": mean_or_none(o), f"{s}_overall_std": std_or_none(o),
                            f"{s}_n": len(pts)})
                okey = "overall" if all(p.m("overall") is not None for p in pts) else "accuracy"
                (row[f"{s}_worst_lo"], row[f"{s}_worst_hi"]), (row[f"{s}_overall_lo"], row[f"{s}_overall_hi"]) = (
                    interval_of(pts, "worst_group")[:2], interval_of(pts, okey)[:2])
            rows.append(row)
        cols = [Column("model", ("model",), "text"), Column("loss", ("loss",), "text"),
                Column("layer", ("layer",), "text")]
        csv_keys = ["dataset", "split", "model", "loss", "layer"]
        for s in settings:
            ab = {"conventional": "Conv.", "reversed": "Rev."}.get(s, s)
            cols += [Column(f"{ab} worst", (f"{s}_worst_mean", f"{s}_worst_std", f"{s}_worst_lo", f"{s}_worst_hi"),
                            "msd"),
                     Column(f"{ab} overall", (f"{s}_overall_mean", f"{s}_overall_std", f"{s}_overall_lo",
                                              f"{s}_overall_hi"), "msd"),
                     Column(f"{ab} n", (f"{s}_n",), "text")]
            csv_keys += [f"{s}_{m}_{a}" for m in ("worst", "overall") for a in ("mean", "std", "lo", "hi")] + [f"{s}_n"]
        notes = [f"Split: {split}. Accuracy in %, mean (±sample std, shown from 2 records) over the records (seeds) "
                 "and a 95 % interval [lo, hi]: one record's bootstrap interval over test images, over several "
                 "seeds both sources combined (or the t interval of the spread when records have none); "
                 "n = records. "
                 "Worst = metrics.worst_group, overall = metrics.overall (else metrics.accuracy)."]
        tables.append(Table(f"shift-{dataset}-{split}", f"{_LABELS['shift']} — {dataset}, {split} (Table 1 layout)",
                            cols, rows, csv_keys, notes))
    return tables


def all_tables(an: Analysis) -> dict[str, list[Table]]:
    """experiment -> its tables (empty list: not measured)."""
    return {e.name: shift_tables(an) if e.table == "shift" else comparison_tables(an, e.name) for e in EXPERIMENTS}


def pct_keys_for(t: Table) -> set[str]:
    """CSV fields printed as percentages (metrics are fractions in records); counts and seconds are not."""
    return {k for k in t.csv_keys
            if k.startswith("base_") or "_at_" in k or k.endswith(("_mean", "_std", "_lo", "_hi"))}
