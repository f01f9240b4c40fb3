"""Result schema v1: every JSON record a stage writes names what produced it (README "Result schema").

One record is one JSON object: an envelope (`schema`, `schema_version`, `kind`, `mgkit_version`,
`created`), the `identity` of the run (model, family, stage, loss, layer, attribution, λ, bbox fraction,
seed, data file and hash, class names, checkpoint and parent), then sections (`evaluation`, `metrics`,
`per_class`, `per_size`, `groups`, `iou_sweep`, `training`, ...). Per-class and per-group values are keyed
by NAME; missing values are null, never 0; JSON is strict (NaN and inf are written as null).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mgkit import __version__
from mgkit.errors import FormatError

SCHEMA = "mgkit.result"
SCHEMA_VERSION = 1
KINDS = ("epoch", "run", "evaluation", "shift", "pareto")
# The metrics a checkpoint is selected on (its validation Pareto front, the merged front of `evaluate
# --pareto`), and the headline metrics a record compares with its baseline (`delta`, terminal tables).
PARETO_KEYS = ("f1", "epg", "iou")
HEADLINE_KEYS = ("f1", "precision", "recall", "accuracy", "mAP", "epg", "iou", "iou_chosen", "on_object",
                 "worst_group", "mean_group", "overall")
STAGES = ("train", "guide")
IDENTITY_KEYS = ("run", "stage", "model", "family", "loss", "layer", "attribution", "lambda", "bbox_frac",
                 "dilate", "seed", "data", "data_hash", "dataset", "task", "classes", "checkpoint", "epoch",
                 "parent", "parent_sha256")


def strict(obj: Any) -> Any:
    """A copy of `obj` that strict JSON can hold: non-finite floats -> None, tuples -> lists, keys -> str."""
    if isinstance(obj, Mapping):
        return {str(k): strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return strict(obj.item())
    return obj


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON text (allow_nan=False after `strict`: a NaN can never slip through)."""
    return json.dumps(strict(obj), indent=indent, sort_keys=True, allow_nan=False, default=str)


def by_name(values: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """Per-index values (class id, group id) -> {name: value}."""
    if len(values) != len(names):
        raise ValueError(f"{len(values)} values for {len(names)} names")
    return {str(n): v for n, v in zip(names, values)}


def identity(config: Mapping[str, Any], *, family: str, data_hash: str | None, dataset: str | None,
             task: str | None, classes: Sequence[str], bbox_frac: float | None, run: str | None = None,
             checkpoint: str | None = None, epoch: int | None = None,
             parent_sha256: str | None = None) -> dict[str, Any]:
    """The `identity` block from a run config (RunConfig.to_dict() or a checkpoint's "config"), facts of
    its data file (hash, source, task, classes, bbox fraction) and the checkpoint the record is about.

    A train stage has no guidance: loss, layer, attribution and targets are null and lambda 0.0.
    """
    guided = config.get("stage") == "guide"
    return {
        "run": run if run is not None else config.get("out"),
        "stage": config.get("stage"),
        "model": config.get("model"),
        "family": family,
        "loss": config.get("loss") if guided else None,
        "layer": config.get("layer") if guided else None,
        "attribution": config.get("attribution") if guided else None,
        "lambda": float(config.get("lam") or 0.0) if guided else 0.0,
        "bbox_frac": bbox_frac,
        "dilate": float(config.get("dilate") or 0.0),
        "seed": config.get("seed"),
        "data": None if config.get("data") is None else str(config.get("data")),
        "data_hash": data_hash,
        "dataset": dataset,
        "task": task,
        "classes": [str(c) for c in classes],
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "epoch": epoch,
        "parent": config.get("init_from") if guided else None,
        "parent_sha256": parent_sha256 if guided else None,
        # optional (records from before it lack it): which classes a guided step explains, for claim 11
        "targets": config.get("targets", "random") if guided else None,
    }


def evaluation(split: str, attribution: str, layer: str, *, maps: str, iou_threshold: float,
               chosen_threshold: float | None, threshold_split: str | None, **more: Any) -> dict[str, Any]:
    """A record's `evaluation` block: how its metrics were measured (split, maps, IoU protocol), then
    `more` (e.g. the data file and seed of `mgkit evaluate`)."""
    return {"split": split, "attribution": attribution, "layer": layer, "maps": maps, "iou_threshold": iou_threshold,
            "chosen_threshold": chosen_threshold, "threshold_split": threshold_split, **more}


def record(kind: str, ident: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """A complete record: envelope + identity + the given sections (made strict)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; one of {', '.join(KINDS)}")
    rec = {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind, "mgkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "identity": dict(ident),
        **sections,
    }
    return strict(rec)


def problem(obj: Any) -> str | None:
    """Why `obj` is not a schema-v1 record, or None when it is."""
    if not isinstance(obj, Mapping):
        return "not a JSON object"
    if obj.get("schema") != SCHEMA:
        return f"not an mgkit result (no \"schema\": \"{SCHEMA}\")"
    if obj.get("schema_version") != SCHEMA_VERSION:
        return f"result schema version {obj.get('schema_version')!r}, this mgkit reads {SCHEMA_VERSION}"
    if obj.get("kind") not in KINDS:
        return f"unknown kind {obj.get('kind')!r} (expected one of {', '.join(KINDS)})"
    ident = obj.get("identity")
    if not isinstance(ident, Mapping):
        return "no identity object"
    missing = [k for k in IDENTITY_KEYS if k not in ident]
    if missing:
        return f"identity lacks {', '.join(missing[:4])}"
    for section in ("metrics", "per_class", "per_size", "groups", "iou_sweep"):
        if section in obj and obj[section] is not None and not isinstance(obj[section], Mapping):
            return f"{section} is not an object keyed by name"
    return None


def validate_record(obj: Any, source: str = "record") -> dict[str, Any]:
    """`obj` itself when it is a schema-v1 record; FormatError with one line naming `source` otherwise."""
    why = problem(obj)
    if why:
        raise FormatError(f"{source}: {why}")
    return dict(obj)


def _parse(text: str, where: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not strict JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError as e:
        raise FormatError(f"{where}: not valid JSON ({str(e).splitlines()[0]})") from None


def records_in(path: str | Path, *, skip_foreign: bool = False) -> list[dict[str, Any]]:
    """The records of one file: a .json file holds one record, a .jsonl file one per line.

    Raises FormatError with one line naming the file (and line) for an unreadable, invalid or foreign
    file; with `skip_foreign`, JSON that is not an mgkit result (other files in a results folder) is
    skipped instead, while a result of another schema version is still refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such result file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not readable ({e.__class__.__name__})") from None
    lines = ([(f"{path}:{n}", line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
             if path.suffix == ".jsonl" else [(str(path), text)])
    out: list[dict[str, Any]] = []
    for where, chunk in lines:
        try:
            obj = _parse(chunk, where)
        except FormatError:
            if skip_foreign:
                continue
            raise
        if skip_foreign and (not isinstance(obj, Mapping) or obj.get("schema") != SCHEMA):
            continue
        out.append(validate_record(obj, where))
    return out


def read_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every record in the files `paths` (see `records_in`)."""
    return [rec for path in paths for rec in records_in(path)]


def write_record(path: str | Path, rec: Mapping[str, Any]) -> None:
    """Write one record as strict JSON, atomically: indented, or on one line for a .jsonl file (JSON Lines,
    as `records_in` reads it)."""
    from mgkit.artifacts import write_text_atomic

    validate_record(rec, str(path))
    write_text_atomic(path, dumps(rec, indent=None if Path(path).suffix == ".jsonl" else 2) + "\n")
