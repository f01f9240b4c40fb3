"""`mgkit shift`: how far a model leans on a spurious cue, as a result record of kind "shift".

- Data with groups (Waterbirds, the synthetic birds task): accuracy per group, worst-group accuracy,
  the mean over groups and overall accuracy on test (the paper's Table 1 columns).
- Data with shifted splits (synthetic multilabel: test_decorrelated, cues independent of the classes;
  test_shifted, cues inverted; both on test's scenes): F1, mAP, EPG, ... on test and on each, the drop
  test - test_shifted ("drop") and the drop to every shifted split ("drops").
With a baseline checkpoint, the baseline is scored the same way (same attribution and layer) and the
record holds it under "baseline" with "delta" = model - baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgkit import results
from mgkit.engine.evaluate_stage import Evaluator, checkpoint_identity, delta
from mgkit.errors import MgkitError

SHIFTED = "test_shifted"
SHIFTED_SPLITS = ("test_decorrelated", SHIFTED)
DROP_KEYS = ("f1", "precision", "recall", "accuracy", "mAP", "epg", "iou")


def shift_splits(evaluator: Evaluator) -> list[str]:
    """The splits a shift report reads; refuses data that can show no shift."""
    ctx = evaluator.ctx
    ctx.require("test")
    has_groups = bool(ctx.group_names.get("test"))
    if not has_groups and SHIFTED not in ctx.splits:
        raise MgkitError(f"{ctx.path} has no groups on its test split and no {SHIFTED} split; mgkit shift needs "
                         "one of them (Waterbirds or the synthetic birds task, or synthetic multilabel data)")
    return ["test"] + [s for s in SHIFTED_SPLITS if s in ctx.splits]


def _sections(evaluator: Evaluator, path: str | Path, attribution: str | None = None,
              layer: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    model, info = evaluator.load(path)
    per_split = {s: evaluator.sections(model, info, split=s, attribution=attribution, layer=layer)
                 for s in shift_splits(evaluator)}
    test = per_split["test"]
    out: dict[str, Any] = {"evaluation": test["evaluation"], "metrics": test["metrics"],
                           "per_class": test["per_class"],
                           "splits": {s: sec["metrics"] for s, sec in per_split.items()}}
    if "groups" in test:
        out["groups"] = test["groups"]
        m = test["metrics"]
        out["group_gap"] = None if m["worst_group"] is None else m["mean_group"] - m["worst_group"]
    drops = {s: _drop(test["metrics"], per_split[s]["metrics"]) for s in SHIFTED_SPLITS if s in per_split}
    if drops:
        out["drops"] = drops
    if SHIFTED in drops:
        out["drop"] = drops[SHIFTED]
    return out, checkpoint_identity(info)


def _drop(test: dict[str, Any], shifted: dict[str, Any]) -> dict[str, float | None]:
    return {k: None if test.get(k) is None or shifted.get(k) is None else test[k] - shifted[k] for k in DROP_KEYS}


def shift_record(evaluator: Evaluator, path: str | Path, baseline: str | Path | None = None) -> dict[str, Any]:
    """Kind "shift" for checkpoint `path` (and `baseline`, scored with the same attribution and layer)."""
    if baseline is not None:
        evaluator.check_baseline(path, baseline)
    sec, ident = _sections(evaluator, path)
    extra: dict[str, Any] = {}
    if baseline is not None:
        ev = sec["evaluation"]
        bsec, bident = _sections(evaluator, baseline, ev["attribution"], ev["layer"])
        extra["baseline"] = {"identity": bident, **bsec}
        extra["delta"] = delta(sec["metrics"], bsec["metrics"])
        if "drop" in sec:
            extra["delta_drop"] = {k: None if sec["drop"][k] is None or bsec["drop"][k] is None
                                   else sec["drop"][k] - bsec["drop"][k] for k in DROP_KEYS}
    return results.record("shift", ident, experiment=evaluator.opts.experiment, **sec, **extra)
