"""The layout of a run directory (runs/NAME/), in one place for train, guide and the stages reading runs.

    config.yaml         resolved RunConfig
    provenance.json     mgkit version, data fingerprint, parent checkpoint and its hash, devices
    metrics.jsonl       one result record (kind "epoch") per evaluated or trained epoch
    summary.json        the run's result record (kind "run"), also printed by --json
    checkpoints/last.pt     resume point: weights + optimizer + RNG state
    checkpoints/best_f1.pt  weights of the epoch with the best validation F1
    pareto/pareto.json, pareto/epochNNNN_*.pt   guide: the validation Pareto front (F1, EPG, IoU)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mgkit.artifacts import write_text_atomic
from mgkit.results import dumps

RUN_FILES = ("config.yaml", "provenance.json", "metrics.jsonl", "summary.json", "checkpoints", "pareto")


class Run:
    """The files of one run directory."""

    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.config = self.dir / "config.yaml"
        self.provenance = self.dir / "provenance.json"
        self.metrics = self.dir / "metrics.jsonl"
        self.summary = self.dir / "summary.json"
        self.ckpt_dir = self.dir / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.best = self.ckpt_dir / "best_f1.pt"
        self.pareto_dir = self.dir / "pareto"

    def clear(self) -> None:
        """Remove what an earlier run of mgkit wrote here (and nothing else)."""
        for name in RUN_FILES:
            p = self.dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        for p in self.dir.glob("events.out.tfevents.*"):  # TensorBoard's (engine/tensorboard.py)
            p.unlink()

    def metric_lines(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def append_metrics(self, line: dict[str, Any], keep_before: int | None = None) -> None:
        """Append one line (strict JSON); on resume first drop lines of epochs that will be redone."""
        lines = self.metric_lines()
        if keep_before is not None:
            lines = [x for x in lines if x["epoch"] < keep_before]
        lines.append(line)
        write_text_atomic(self.metrics, "".join(dumps(x) + "\n" for x in lines))
