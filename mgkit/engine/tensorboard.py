"""TensorBoard event files next to metrics.jsonl (`tensorboard --logdir runs/` shows every run of a
sweep). Optional: without the tensorboard package (`pip install mgkit[tensorboard]`) nothing is written."""

from __future__ import annotations

import contextlib
import importlib.util
from numbers import Number
from pathlib import Path
from typing import Any, Callable, Iterator

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


EpochLog = Callable[[int, dict[str, Any]], None]


@contextlib.contextmanager
def epoch_log(run_dir: Path) -> Iterator[EpochLog]:
    """A function that appends one epoch's scalars to the run directory's event file, flushed each
    epoch: one file per training process (a resumed run adds one). Without tensorboard it does nothing."""
    if not AVAILABLE:
        yield lambda epoch, line: None
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run_dir)) as w:
        def log(epoch: int, line: dict[str, Any]) -> None:
            for tag, value in scalars(line).items():
                w.add_scalar(tag, value, epoch)
            w.flush()
        yield log
