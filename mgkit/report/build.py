"""`mgkit tables`: result records -> tables (md, tex, csv), Pareto plots (png, pdf) and the claims report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from mgkit.artifacts import check_output, write_text_atomic
from mgkit.errors import UsageError
from mgkit.pipeline import calibration
from mgkit.pipeline.experiments import BY_NAME, EXPERIMENTS
from mgkit.progress import log
from mgkit.report.analysis import Analysis, metric_name
from mgkit.report.claims import PAPER_EFFECTS, Claim, Judge, all_claims, resolution, timings_from
from mgkit.report.paper_numbers import paper_tables
from mgkit.report.records import load, to_points
from mgkit.report.tables import Table, all_tables, pct_keys_for, to_csv, to_latex, to_markdown

# The experiments' sections (titles from their records), then the paper's numbers beside ours.
EXPERIMENT_TITLES = {**{e.name: e.title for e in EXPERIMENTS},
                     "paper": "7. The paper's stated numbers beside ours (§7.1-7.6)"}


def _plot_prefix(experiment: str) -> str:
    e = BY_NAME.get(experiment)
    return e.plot_stem if e else experiment  # "paper" has no experiment record


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _claim_plots(c: Claim, plots: list[Path]) -> list[Path]:
    """The PNGs that show claim `c`'s deciding numbers (its experiment, its metric where plotted by metric)."""
    prefix = f"{_plot_prefix(c.experiment)}-"
    mine = [p for p in plots if p.suffix == ".png" and p.name.startswith(prefix)]
    if c.metric is not None:
        mine = [p for p in mine if p.name.startswith(f"{prefix}{c.metric}-")] or mine
    return mine


def selection_note(an: Analysis) -> list[str]:
    """Which split chose the Pareto sets the tables and curves show (the paper: validation)."""
    chosen = sorted({str(p.selected_on) for p in an.points if p.selected_on is not None})
    if not chosen:
        return []
    line = (f"Pareto sets selected on split {', '.join(f'`{s}`' for s in chosen)}: per configuration and loss, the "
            "checkpoints of all λ runs merged into one (F1, EPG, IoU) front with 0.005 bins; the tables and "
            f"curves show their `{an.split}` values, and each curve joins the points of its set that no other "
            "point of the set beats in both plotted metrics.")
    if any(s == an.split for s in chosen):
        line += f" Sets selected on `{an.split}` itself were chosen on the values shown (not the paper's protocol)."
    return [line, ""]


def report_markdown(tables: dict[str, list[Table]], plots: list[Path], claims: list[Claim], report: Path,
                    an: Analysis, n_records: int, skipped: dict[str, int], judge: Judge | None = None) -> str:
    here = report.parent
    lines = ["# Paper tables and claims", "",
             f"Computed by `mgkit tables` from {n_records} result record(s) on split `{an.split}`; never edited by "
             "hand. Metrics in %; [lo, hi] is a 95 % interval (bootstrap over test images, and over training "
             "seeds where there are several).", ""]
    if skipped:
        lines += ["Records not used (run summaries; epoch lines without validation, or a guided run's epoch 0, "
                  "which is its parent): " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())), ""]
    if an.ignored_split:
        lines += [f"{an.ignored_split} point(s) on other splits than `{an.split}` were ignored.", ""]
    if judge is not None:
        lines += ["**What this run can resolve.** The smallest difference the run could tell from zero is about "
                  "the half-width of a difference's interval; the paper's effects are listed beside it.", "",
                  "| metric | median half-width, one record | median half-width, differences the claims made "
                  "| differences without an interval | the paper's effects |", "|---|---|---|---|---|"]
        for m, single, diff, none in resolution(judge):
            f = lambda v: "—" if v is None else f"{100 * v:.1f} points"  # noqa: E731
            lines.append(f"| {metric_name(m, short=True)} | {f(single)} | {f(diff)} | {none} | {PAPER_EFFECTS[m]} |")
        lines.append("")
    lines += selection_note(an)
    lines += ["## Claims (paper spec §8)", "",
              "Verdicts: **supported** (every check holds: its difference's 95 % interval lies wholly on the "
              "claim's side of the margin), **contradicted** (some check fails: its interval lies wholly on the "
              "other side), **inconclusive** (no check fails but some interval straddles the margin or is missing: "
              "the evidence does not separate the claim from its negation), **not measured** (no check possible "
              "from these records). Rules and margins are fixed in `mgkit/report/claims.py`, not tuned to results. "
              "Differences of two models are paired bootstraps over the same test images when both records carry "
              "per-image sums, otherwise the two intervals combined as independent. 'Best M at ≤d points' is the "
              "highest M among candidates (all λ, epochs, seeds) whose F1 is at most d points below the unguided "
              "baseline's: a maximum over many test-set candidates, biased upwards.", "",
              "| # | claim | verdict |", "|---|---|---|"]
    lines += [f"| {c.number} | {c.text} | **{c.status}** |" for c in claims]
    lines.append("")
    for c in claims:
        lines += [f"### Claim {c.number}: {c.status}", "", f"> {c.text}", "", f"Rule: {c.rule}.", "",
                  f"Margin: {c.margin}.", ""]
        lines += [f"- {v}: {d}" for v, d in c.units]
        if c.reason:
            lines += ["", f"Note: {c.reason}."]
        if c.units:  # the plot that shows the checks' numbers
            lines += [""] + [f"![{p.name}]({_rel(p, here)})" for p in _claim_plots(c, plots)]
        lines.append("")
    lines += ["## Experiments", ""]
    for exp, title in EXPERIMENT_TITLES.items():
        lines += [f"### {title}", ""]
        ts = tables.get(exp, [])
        if not ts:
            lines += ["Shown for real-data records only (VOC, COCO, Waterbirds)." if exp == "paper" else
                      "Not measured: no records for this experiment.", ""]
            continue
        for t in ts:
            lines.append(f"- {t.title}: " + ", ".join(f"[{ext}]({{dir}}/{t.name}.{ext})" for ext in ("md", "tex", "csv")))
        prefix = f"{_plot_prefix(exp)}-"
        mine = [p for p in plots if p.name.startswith(prefix)]
        lines += [f"- plot: [{p.name}]({_rel(p, here)}) ([pdf]({_rel(p.with_suffix('.pdf'), here)}))"
                  for p in mine if p.suffix == ".png"]
        lines.append("")
        for t in ts:
            lines += [to_markdown(t).replace("### ", "#### ", 1), ""]
    return "\n".join(lines).rstrip() + "\n"


def to_html(markdown_text: str, title: str) -> str:
    """The report as one HTML page (tables and figures inline; links stay relative, so it opens in place)."""
    import markdown  # light, pure Python; only needed here

    body = markdown.markdown(markdown_text, extensions=["tables"])
    style = ("body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:90%;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}blockquote{color:#444;border-left:3px solid #ccc;"
             "margin-left:0;padding-left:1em}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{style}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


def _timing_lines(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """JSON lines of `benchmarks/bench_train.py --one ... --json` (claim 9's speed, timed alone)."""
    out = []
    for p in map(Path, paths):
        if not p.is_file():
            raise UsageError(f"--timings {p}: no such file")
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise UsageError(f"--timings {p}: line {i} is not JSON (expected bench_train.py --json lines)"
                                 ) from None
            if not isinstance(rec, dict) or "config" not in rec or "step_s" not in rec:
                raise UsageError(f"--timings {p}: line {i} has no config/step_s fields")
            out.append(rec)
    return out


def build(paths: Iterable[str | Path], out: str | Path, report: str | Path | None = None, split: str = "test",
          quiet: bool = False, plots: bool = True, timings: Iterable[str | Path] = (),
          lambdas: str | Path | None = None) -> dict[str, Any]:
    """Read records, write every table / plot / the report; return a summary for --json."""
    paths = list(paths)
    if not paths:
        raise UsageError("give at least one result file or directory")
    out = Path(out)
    report = Path(report) if report is not None else out.parent / "paper-tables.md"
    timings = list(timings)
    check_output(out, inputs=paths, folder=True)
    for path in (report, report.with_suffix(".html")):
        check_output(path, flag="--report", inputs=[*paths, *timings, *([lambdas] if lambdas is not None else [])])
    timing = timings_from(_timing_lines(timings))  # bad input refused before anything is written
    grids = calibration.load(lambdas, "--lambdas") if lambdas is not None else None
    sources = load(paths)
    points, skipped = to_points(sources)
    log(f"read {len(sources)} record(s) from {len(paths)} path(s): {len(points)} measured point(s)", quiet=quiet)
    an = Analysis(points, split=split)
    tables = all_tables(an)
    tables["paper"] = paper_tables(an)
    written: list[Path] = []
    for exp, ts in tables.items():
        for t in ts:
            for ext, text in (("md", to_markdown(t)), ("tex", to_latex(t)), ("csv", to_csv(t, pct_keys_for(t)))):
                path = out / f"{t.name}.{ext}"
                write_text_atomic(path, text)
                written.append(path)
        log(f"{exp}: {len(ts)} table(s)" if ts else f"{exp}: not measured", quiet=quiet)
    plot_files: list[Path] = []
    if plots:
        from mgkit.report.plots import all_plots  # matplotlib is slow to import; only when plotting

        plot_files = all_plots(an, out)
        written += plot_files
        log(f"plots: {len(plot_files)} file(s)", quiet=quiet)
    claims, judge = all_claims(an, timing)
    text = report_markdown(tables, plot_files, claims, report, an, len(sources), skipped, judge)
    if grids is not None:  # the λ values the guided runs used, each with its source
        text = text.rstrip() + "\n\n" + "\n".join(calibration.markdown(grids))
    text = text.replace("{dir}", _rel(out, report.parent))
    write_text_atomic(report, text)
    html = report.with_suffix(".html")
    write_text_atomic(html, to_html(text, "Paper tables and claims"))
    written += [report, html]
    log(f"wrote {report}", quiet=quiet)
    for t in tables["paper"]:  # the paper's stated numbers beside ours, also on the terminal
        log(f"{t.title}:", quiet=quiet)
        for r in t.rows:
            ours = f"ours {r['ours_text']} ({r['diff_text']})" if r["ours_text"] else "ours not measured"
            log(f"  {r['quantity']}: paper {r['paper_text']}, {ours}", quiet=quiet)
    return {
        "report": str(report), "out": str(out), "files": [str(p) for p in written], "records": len(sources),
        "points": len(points), "split": split, "iou_metric": an.iou_key,
        "experiments": {e: [t.name for t in ts] for e, ts in tables.items()},
        "claims": [c.as_dict() for c in claims],
        "paper": [{k: r[k] for k in ("dataset", "key", "paper", "ours", "diff", "n", "source")}
                  for t in tables["paper"] for r in t.rows],
    }
