"""Terminal tables for evaluation, pareto and shift records (rich; plain text when not a terminal)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from mgkit.results import HEADLINE_KEYS



def _num(v: Any, signed: bool = False) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:+.4f}" if signed else f"{v:.4f}"
    return str(v)


def _setting(rec: dict[str, Any]) -> str:
    ev = rec.get("evaluation") or {}
    ident = rec.get("identity") or {}
    chosen = ev.get("chosen_threshold")
    thr = f", chosen IoU threshold {chosen:g} on {ev.get('threshold_split')}" if chosen is not None else ""
    return (f"{ident.get('model')} {ident.get('stage')}"
            f"{' ' + str(ident.get('loss')) + '@' + str(ident.get('layer')) if ident.get('loss') else ''}"
            f" — {ev.get('split')} split, maps {ev.get('attribution')} at {ev.get('layer')} ({ev.get('maps')}){thr}")


def show_evaluation(rec: dict[str, Any], console: Console | None = None) -> None:
    """Headline metrics (with baseline and delta when present), then per class."""
    console = console or Console()
    base = rec.get("baseline")
    t = Table(title=_setting(rec), title_justify="left")
    t.add_column("metric")
    t.add_column("model", justify="right")
    if base:
        t.add_column("baseline", justify="right")
        t.add_column("Δ", justify="right")
    m = rec["metrics"]
    for k in HEADLINE_KEYS:
        if m.get(k) is None and (not base or base["metrics"].get(k) is None):
            continue
        row = [k, _num(m.get(k))]
        if base:
            row += [_num(base["metrics"].get(k)), _num(rec["delta"].get(k), signed=True)]
        t.add_row(*row)
    t.add_row("pairs", _num(m.get("pairs")), *([_num(base["metrics"].get("pairs")), ""] if base else []))
    console.print(t)
    pc = Table(title="per class", title_justify="left")
    for col in ("class", "support", "f1", "ap", "epg", "iou", "pairs"):
        pc.add_column(col, justify="left" if col == "class" else "right")
    for name, c in rec.get("per_class", {}).items():
        pc.add_row(name, *(_num(c.get(k)) for k in ("support", "f1", "ap", "epg", "iou", "pairs")))
    console.print(pc)
    if rec.get("groups"):
        show_groups(rec, console)


def show_groups(rec: dict[str, Any], console: Console) -> None:
    base = rec.get("baseline")
    t = Table(title="accuracy per group (test)", title_justify="left")
    t.add_column("group")
    t.add_column("n", justify="right")
    t.add_column("model", justify="right")
    if base:
        t.add_column("baseline", justify="right")
        t.add_column("Δ", justify="right")
    for name, g in rec["groups"].items():
        row = [name, _num(g.get("count")), _num(g.get("accuracy"))]
        if base:
            b = base["groups"][name]["accuracy"]
            row += [_num(b), _num(None if b is None or g["accuracy"] is None else g["accuracy"] - b, signed=True)]
        t.add_row(*row)
    for k in ("worst_group", "mean_group", "overall"):
        row = [f"[bold]{k}[/bold]", "", _num(rec["metrics"].get(k))]
        if base:
            row += [_num(base["metrics"].get(k)), _num(rec["delta"].get(k), signed=True)]
        t.add_row(*row)
    console.print(t)


def show_shift(rec: dict[str, Any], console: Console | None = None) -> None:
    """Groups (worst vs mean) and/or test vs test_shifted with the drop, with the baseline's when given."""
    console = console or Console()
    console.print(_setting(rec))
    base = rec.get("baseline")
    if rec.get("groups"):
        show_groups(rec, console)
        gap = rec.get("group_gap")
        if gap is not None:
            line = f"worst group lies {gap:.3f} below the mean over groups"
            if base and base.get("group_gap") is not None:
                line += f" (baseline {base['group_gap']:.3f})"
            console.print(line)
    if rec.get("drop"):
        t = Table(title="test vs test_shifted (spurious cues inverted)", title_justify="left")
        for col in ("metric", "test", "test_shifted", "drop", *(("baseline drop",) if base else ())):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for k, d in rec["drop"].items():
            s = rec["splits"]
            if s["test"].get(k) is None:
                continue
            row = [k, _num(s["test"].get(k)), _num(s["test_shifted"].get(k)), _num(d)]
            if base:
                row.append(_num(base["drop"].get(k)))
            t.add_row(*row)
        console.print(t)


def show_pareto(rec: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    sel = rec.get("selection") or {}
    t = Table(title=f"Pareto checkpoints selected on {sel.get('split', '?')} ({sel.get('selected', '?')} of "
                    f"{sel.get('pool', '?')}), scored on {rec['evaluation']['split']}", title_justify="left")
    for col in ("checkpoint", "f1", "epg", "iou", "iou_chosen"):
        t.add_column(col, justify="left" if col == "checkpoint" else "right")
    for e in rec["entries"]:
        m = e["metrics"]
        t.add_row(str(e["identity"]["checkpoint"]),
                  *(_num(m.get(k)) for k in ("f1", "epg", "iou", "iou_chosen")))
    console.print(t)
