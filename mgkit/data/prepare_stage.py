"""The `mgkit prepare` stage around `run_prepare`: checks before any work, the run, warnings, the summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from mgkit.artifacts import check_output, remove_stale_tmp
from mgkit.data import prepare
from mgkit.data.prepare import MAX_SIZE, SourcePlan
from mgkit.errors import MgkitError, UsageError
from mgkit.progress import log


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def check_request(out: Path, *, force: bool, size: int | None = None, inputs: tuple[Path | None, ...] = ()) -> None:
    """What can be refused before the source is read: the size, and an --out that cannot become the file."""
    if size is not None and size > MAX_SIZE:
        raise UsageError(f"--size {size} is too large (at most {MAX_SIZE} pixels; the paper uses 224)")
    check_output(out, inputs=inputs, force=force)
    remove_stale_tmp(out)  # leftovers of a killed earlier run


def prepare_stage(plan_fn: Callable[[], SourcePlan], out: Path, *, size: int, bbox_frac: float, seed: int,
                  workers: int, force: bool, skip_bad: bool, quiet: bool, options: dict[str, Any],
                  inputs: tuple[Path | None, ...] = (), bbox_count: int | None = None) -> dict[str, Any]:
    """Check, plan (`plan_fn` reads the source), write the file, report notes and warnings; the summary.

    `inputs` are the source paths the command reads (an --out among them is refused).
    """
    check_request(out, size=size, force=force, inputs=inputs)
    plan = plan_fn()
    for note in plan.notes:
        log(f"note: {note}", quiet=quiet)
    # Warnings show even with --quiet (the file may not be what was meant); the source's before the
    # long run, those found while writing (empty splits) after it.
    for warning in plan.warnings:
        _warn(warning)
    opts = {**options, "size": size, "bbox_frac": bbox_frac, "seed": seed, "skip_bad": skip_bad}
    if bbox_count is not None:
        opts["bbox_count"] = bbox_count
    try:
        summary = prepare.run_prepare(plan, out, size=size, bbox_frac=bbox_frac, seed=seed, workers=workers,
                                      force=force, skip_bad=skip_bad, options=opts, quiet=quiet,
                                      bbox_count=bbox_count)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the temporary file is already gone
        reason = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MgkitError(f"{e.filename or out}: writing the data set failed ({reason}); nothing was written") from None
    for warning in summary["warnings"][len(plan.warnings):]:
        _warn(warning)
    return summary


def render_summary(s: dict[str, Any]) -> None:
    """The summary of a prepared file, for people."""
    print(f"wrote {s['out']} ({s['source']})")
    for split, c in s["splits"].items():
        extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in c.items()
                        if k not in ("images", "boxes", "annotated", "skipped_files") and v)
        print(f"  {split}: {c['images']} images, {c['boxes']} boxes, {c['annotated']} annotated{extra}")
    for key, value in s["source_stats"].items():
        if value:
            print(f"  source: {key.replace('_', ' ')} {value}")
    if s["warnings"]:
        print(f"  {len(s['warnings'])} warning(s), see above")


def recorded(options: dict[str, Any]) -> dict[str, Any]:
    """Options as the data file records them: paths as text, lists of paths as lists of text."""
    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v

    return {k: plain(v) for k, v in options.items()}
