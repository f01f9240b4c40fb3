"""Typed run configuration for `train` and `guide`: defaults < per-model defaults < YAML file < CLI flags."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from mgkit.errors import UsageError

# Per-family defaults and where they come from (paper.md §6):
# - B-cos: lr 1e-4, batch 64, 300 baseline epochs, 50 guided epochs: the reference README's VOC example.
# - vanilla and X-DNN: lr 1e-5, batch 16, 100 epochs: the reference's argparse defaults (the paper's
#   supplement with per-backbone settings could not be read); guided fine-tuning 50 epochs as for B-cos.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bcos": {"lr": 1e-4, "batch_size": 64, "train_epochs": 300, "guide_epochs": 50, "attribution": "bcos"},
    "vanilla": {"lr": 1e-5, "batch_size": 16, "train_epochs": 100, "guide_epochs": 50, "attribution": "ixg"},
    "xdnn": {"lr": 1e-5, "batch_size": 16, "train_epochs": 100, "guide_epochs": 50, "attribution": "intgrad"},
}

# Options that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset({"quiet", "workers", "device", "epochs", "eval_batch_size"})


@dataclass
class RunConfig:
    """Everything that determines a training or guidance run; written to runs/NAME/config.yaml."""

    stage: str  # "train" or "guide"
    data: str
    out: str
    model: str | None = None  # train: resnet50; guide: the parent checkpoint's model
    init_from: str | None = None  # checkpoint a guided run starts from
    pretrained: bool = False
    weights: str | None = None
    epochs: int = 0  # 0: the family default for the stage
    lr: float = 0.0  # 0: the family default
    batch_size: int = 0  # 0: the family default; global over all processes
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # none | bf16
    channels_last: bool = False
    workers: int = 2
    eval_every: int = 1
    min_f1: float | None = None
    # guidance
    loss: str | None = None  # energy | l1 | ppce | rrr | energy-size; None: plain classification
    attribution: str | None = None  # None: the family default
    layer: str = "input"
    lam: float = 1e-3
    targets: str = "random"  # random: one ground-truth class per image per step (reference); all
    dilate: float = 0.0
    loc_reduction: str = "sum"
    size_alpha: float = 0.5
    ig_steps: int = 16
    # evaluation during training
    eval_attribution: str | None = None  # None: the training attribution
    eval_layer: str | None = None  # None: the training layer
    iou_threshold: float = 0.5
    quiet: bool = False
    allow_unannotated: bool = False  # guide: run even when no training image is annotated

    def resolved(self, family: str) -> "RunConfig":
        """Fill family defaults for the fields left at 0 / None."""
        d = FAMILY_DEFAULTS[family]
        return dataclasses.replace(
            self,
            epochs=self.epochs or d[f"{self.stage}_epochs"],
            lr=self.lr or d["lr"],
            batch_size=self.batch_size or d["batch_size"],
            attribution=self.attribution or d["attribution"],
            eval_attribution=self.eval_attribution or self.attribution or d["attribution"],
            eval_layer=self.eval_layer or self.layer,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: "RunConfig") -> list[str]:
        """Fields whose values differ, ignoring those a resumption may change."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in RESUMABLE_CHANGES and a[k] != b[k]]


FIELD_NAMES = {f.name for f in fields(RunConfig)}
# YAML keys may use the CLI spelling.
ALIASES = {"lambda": "lam", "from": "init_from", "batch-size": "batch_size"}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file; unknown keys are an error naming the key and the file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values")
    out = {}
    for key, value in raw.items():
        name = ALIASES.get(key, key).replace("-", "_")
        if name not in FIELD_NAMES:
            raise UsageError(f"--config {path}: unknown option '{key}'")
        out[name] = value
    return out


def build_config(stage: str, cli: dict[str, Any], config_file: str | Path | None) -> RunConfig:
    """Merge YAML and CLI values (CLI wins; a None CLI value means 'not given')."""
    values: dict[str, Any] = load_yaml(config_file) if config_file else {}
    values.update({k: v for k, v in cli.items() if v is not None})
    values["stage"] = stage
    for required in ("data", "out"):
        if not values.get(required):
            raise UsageError(f"--{required} is required (on the command line or in --config)")
    try:
        return RunConfig(**values)
    except TypeError as e:
        raise UsageError(str(e)) from None


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    from mgkit.artifacts import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    return RunConfig(**{k: v for k, v in d.items() if k in FIELD_NAMES})
