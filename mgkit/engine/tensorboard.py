"""TensorBoard event files next to metrics.jsonl (`tensorboard --logdir runs/` shows every run of a
sweep). Optional: without the tensorboard package (`pip install mgkit[tensorboard]`) nothing is written."""

from __future__ import annotations

import importlib.util
from numbers import Number
from pathlib import Path
from typing import Any

AVAILABLE = importlib.util.find_spec("tensorboard") is not None


def scalars(line: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.jsonl line worth plotting: train/* and val/* (flat numbers only)."""
    out = {}
    for section in ("train", "val"):
        for k, v in (line.get(section) or {}).items():
            if isinstance(v, Number) and not isinstance(v, bool):
                out[f"{section}/{k}"] = float(v)
    if isinstance(line.get("seconds"), Number):
        out["time/seconds_per_epoch"] = float(line["seconds"])
    return out


def log_epoch(run_dir: Path, epoch: int, line: dict[str, Any]) -> None:
    """Append one epoch's scalars to the run directory's event files (a resumed run adds a file)."""
    if not AVAILABLE:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir)) as w:
        for tag, value in scalars(line).items():
            w.add_scalar(tag, value, epoch)
