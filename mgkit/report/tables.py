"""The paper's tables, built from an `Analysis`, rendered as Markdown, LaTeX and CSV.

Metrics are fractions in records; tables print percentages with one decimal, like the paper.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from mgkit.report.analysis import (DROPS, Analysis, condition_sort, config_sort, group_rows, loss_sort,
                                   mean_or_none, metric_name, setting_of, std_or_none, best_at)

DASH = "—"


@dataclass
class Column:
    """A printed column: `keys` are row fields; kind pct (one value), pair ("value (F1)"), msd
    ("mean (±std)" from two keys), text, or num (two decimals)."""

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
        return DASH if vals[0] is None else f"{_pct(vals[0])} ({_pct(vals[1])})"
    if col.kind == "msd":
        if vals[0] is None:
            return DASH
        return _pct(vals[0]) if vals[1] is None else f"{_pct(vals[0])} (±{_pct(vals[1])})"
    return _pct(vals[0])


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


_LABELS = {"main": "Main comparison", "annotations": "Limited annotations", "dilation": "Dilated boxes",
           "depth": "Guidance depth", "segmentation": "On-object energy (segmentation masks)",
           "shift": "Distribution shift"}
_COND = {"annotations": "boxes (%)", "dilation": "dilation (%)", "depth": "guided at"}


def _cond_text(experiment: str, c: Any) -> Any:
    if experiment in ("annotations", "dilation"):
        return f"{100 * c:g}"
    return c


def comparison_tables(an: Analysis, experiment: str) -> list[Table]:
    """One table per data set: baseline and best metric at <= 1 / 5 points F1 below it, per loss."""
    metrics = ("on_object", "epg") if experiment == "segmentation" else ("epg", "iou")
    tables = []
    for dataset, configs in sorted(group_rows(an, experiment).items()):
        rows: list[dict[str, Any]] = []
        for ck in sorted(configs, key=config_sort):
            groups = configs[ck]
            some = next(iter(groups.values()))[0]
            base = an.baseline(some)
            common = {"dataset": dataset, "model": ck[1], "family": ck[2], "attribution": ck[3], "layer": ck[4]}
            rows.append({**common, "loss": "baseline", "condition": None, "n": base["n"] if base else 0,
                         **{f"base_{m}": base and base.get(m) for m in ("f1", "epg", "iou", "on_object")}})
            ref_speed: dict[Any, float | None] = {}
            for (loss, cond) in sorted(groups, key=lambda k: (loss_sort(k[0]), condition_sort(experiment, k[1]))):
                pts = groups[(loss, cond)]
                row: dict[str, Any] = {**common, "loss": loss, "condition": None if cond is None
                                       else _cond_text(experiment, cond), "n": len(pts)}
                bf1 = base["f1"] if base else None
                for m in metrics:
                    for d in DROPS:
                        b = best_at(pts, an.metric_key(m), bf1, d)
                        row[f"{m}_at_{int(d * 100)}"], row[f"f1_{m}_at_{int(d * 100)}"] = b if b else (None, None)
                if experiment == "depth":
                    spe = mean_or_none(p.seconds_per_epoch for p in pts)
                    row["seconds_per_epoch"] = spe
                    if cond == ck[4]:
                        ref_speed[loss] = spe
                rows.append(row)
            if experiment == "depth":
                for r in rows:
                    ref = ref_speed.get(r["loss"])
                    r["speedup"] = ref / r["seconds_per_epoch"] if ref and r.get("seconds_per_epoch") else None
        cols = [Column("model", ("model",), "text"), Column("attribution", ("attribution",), "text"),
                Column("layer", ("layer",), "text"), Column("loss", ("loss",), "text")]
        if experiment in _COND:
            cols.append(Column(_COND[experiment], ("condition",), "text"))
        cols.append(Column("n", ("n",), "text"))
        cols += [Column("baseline F1", ("base_f1",)), *[Column(f"baseline {_m(an, m)}", (f"base_{m}",)) for m in metrics]]
        for m in metrics:
            for d in DROPS:
                k = f"{m}_at_{int(d * 100)}"
                cols.append(Column(f"best {_m(an, m)} (F1) @ ≤{int(d * 100)}pt", (k, f"f1_{k}"), "pair"))
        if experiment == "depth":
            cols += [Column("s/epoch", ("seconds_per_epoch",), "num"), Column("speed-up", ("speedup",), "num")]
        csv_keys = ["dataset", "model", "family", "attribution", "layer", "loss", "condition", "n", "base_f1",
                    *[f"base_{m}" for m in metrics],
                    *[f"{pre}{m}_at_{int(d * 100)}" for m in metrics for d in DROPS for pre in ("", "f1_")]]
        if experiment == "depth":
            csv_keys += ["seconds_per_epoch", "speedup"]
        notes = [f"Split: {an.split}. Percentages. Baseline: unguided model (stage train), same model, evaluation "
                 f"attribution and layer; n = number of records (baseline) or candidates (loss). "
                 f"'best M (F1) @ ≤d pt': highest M among candidates whose F1 is at most d points below the "
                 f"baseline's, with that candidate's F1; — when none qualifies."]
        if "iou" in metrics:
            notes.append(f"IoU: metrics.{an.iou_key}"
                         + (" (threshold chosen on held-out data)." if an.iou_key == "iou_chosen"
                            else " (fixed threshold; not every record has a held-out-chosen threshold)."))
        tables.append(Table(f"{experiment}-{dataset}", f"{_LABELS[experiment]} — {dataset}", cols, rows,
                            csv_keys, notes))
    return tables


def _m(an: Analysis, m: str) -> str:
    return metric_name(m, header=True)


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
                row.update({f"{s}_worst_mean": mean_or_none(w), f"{s}_worst_std": std_or_none(w),
                            f"{s}_overall_mean": mean_or_none(o), f"{s}_overall_std": std_or_none(o),
                            f"{s}_n": len(pts)})
            rows.append(row)
        cols = [Column("model", ("model",), "text"), Column("loss", ("loss",), "text"),
                Column("layer", ("layer",), "text")]
        csv_keys = ["dataset", "split", "model", "loss", "layer"]
        for s in settings:
            ab = {"conventional": "Conv.", "reversed": "Rev."}.get(s, s)
            cols += [Column(f"{ab} worst", (f"{s}_worst_mean", f"{s}_worst_std"), "msd"),
                     Column(f"{ab} overall", (f"{s}_overall_mean", f"{s}_overall_std"), "msd"),
                     Column(f"{ab} n", (f"{s}_n",), "text")]
            csv_keys += [f"{s}_{m}_{a}" for m in ("worst", "overall") for a in ("mean", "std")] + [f"{s}_n"]
        notes = [f"Split: {split}. Accuracy in %, mean (±sample std, shown from 2 records) over the records (seeds); "
                 "n = records. "
                 "Worst = metrics.worst_group, overall = metrics.overall (else metrics.accuracy)."]
        tables.append(Table(f"shift-{dataset}-{split}", f"{_LABELS['shift']} — {dataset}, {split} (Table 1 layout)",
                            cols, rows, csv_keys, notes))
    return tables


def all_tables(an: Analysis) -> dict[str, list[Table]]:
    """experiment -> its tables (empty list: not measured)."""
    out = {e: comparison_tables(an, e) for e in ("main", "annotations", "dilation", "depth", "segmentation")}
    out["shift"] = shift_tables(an)
    return out


def pct_keys_for(t: Table) -> set[str]:
    """CSV fields printed as percentages (metrics are fractions in records); counts and seconds are not."""
    return {k for k in t.csv_keys if k.startswith("base_") or "_at_" in k or k.endswith(("_mean", "_std"))}
