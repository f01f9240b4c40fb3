"""The Pareto front of a guided run over validation (F1, EPG, IoU), kept on disk as it evolves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from mgkit.artifacts import write_json_atomic
from mgkit.fronts import pareto_front
from mgkit.results import PARETO_KEYS


class ParetoArchive:
    """Non-dominated checkpoints (after the reference's 0.005 binning) in `pareto/` with `pareto.json`."""

    def __init__(self, directory: str | Path, bin_width: float = 0.005):
        self.dir = Path(directory)
        self.bin_width = bin_width
        self.entries: list[dict[str, Any]] = []

    @property
    def index(self) -> Path:
        return self.dir / "pareto.json"

    def load(self) -> None:
        if self.index.exists():
            self.entries = json.loads(self.index.read_text())["entries"]

    def offer(self, epoch: int, metrics: dict[str, float], save: Callable[[Path], None]) -> bool:
        """Add epoch's checkpoint when it is on the front; drop checkpoints it dominates. True if kept."""
        candidate = {"epoch": epoch, **{k: float(metrics[k]) for k in PARETO_KEYS},
                     "checkpoint": f"epoch{epoch:04d}_f1{metrics['f1']:.4f}_epg{metrics['epg']:.4f}"
                                   f"_iou{metrics['iou']:.4f}.pt"}
        pool = [e for e in self.entries if e["epoch"] != epoch] + [candidate]
        keep = pareto_front([[e[k] for k in PARETO_KEYS] for e in pool], self.bin_width)
        kept = [pool[i] for i in keep]
        self.dir.mkdir(parents=True, exist_ok=True)
        on_front = candidate in kept
        if on_front:
            save(self.dir / candidate["checkpoint"])
        for e in self.entries:
            if e not in kept and (self.dir / e["checkpoint"]).exists():
                (self.dir / e["checkpoint"]).unlink()
        self.entries = sorted(kept, key=lambda e: e["epoch"])
        write_json_atomic(self.index, {"split": "val", "bin_width": self.bin_width, "metrics": list(PARETO_KEYS),
                                       "entries": self.entries})
        return on_front
