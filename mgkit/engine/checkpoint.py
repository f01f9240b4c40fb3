"""Checkpoints: written atomically, checked against the model and class list before use.

Every file holds plain tensors and containers only, so `torch.load(path, weights_only=True)` reads it
outside mgkit. Its "model" entry is the plain network state dict (torchvision / bcos keys, no prefix).
Only the resume point (last.pt) carries optimizer and RNG state; best_f1.pt and Pareto files hold what
reusing the model needs (weights, model name, classes, config, epoch, metrics, data identity).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkit import __version__
from mgkit.artifacts import atomic_path, check_output
from mgkit.errors import FormatError, MgkitError
from mgkit.models import GuidedModel, Family, create_model, family_of

CHECKPOINT_FORMAT = "mgkit-checkpoint"


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def non_finite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of parameters and buffers holding NaN or inf (an exploded model must not be saved)."""
    return [name for name, t in [*module.named_parameters(), *module.named_buffers()]
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _plain(obj: Any) -> Any:
    """Metrics and configs as JSON-like values: non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save_checkpoint(path: str | Path, *, model: GuidedModel, model_name: str, classes: list[str],
                    config: dict[str, Any], epoch: int, optimizer: torch.optim.Optimizer | None = None,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                    data: dict[str, Any] | None = None) -> None:
    """Save a model; with `optimizer` also the resume state (optimizer and RNG). Renamed into place only
    when complete, and refused (MgkitError) when a parameter or buffer is non-finite."""
    bad = non_finite_tensors(model)
    if bad:
        raise MgkitError(f"refusing to save {path}: non-finite values in {', '.join(bad[:3])}")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "mgkit_version": __version__,
        "model_name": model_name,
        "family": model.family.name,
        "classes": list(classes),
        "config": _plain(config),
        "epoch": epoch,
        "model": model.net.state_dict(),
        "metrics": _plain(metrics or {}),
        "data": _plain(data or {}),
        **_plain(extra or {}),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        payload["rng"] = rng_state()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an mgkit checkpoint, with a one-line error for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise MgkitError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as first:  # files of mgkit before 0.1.x pickled numpy RNG state
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e:  # corrupt zip, truncated file, pickle errors
            raise FormatError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None
        if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
            raise FormatError(f"{path}: not a readable checkpoint ({first.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{path}: not an mgkit checkpoint (a plain weights file can start a run: mgkit train --weights)")
    ckpt["model"] = net_state(ckpt["model"])
    return ckpt


def net_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain network state dict (older checkpoints stored GuidedModel's, under ``net.``)."""
    if state and all(k.startswith("net.") for k in state):
        return {k[4:]: v for k, v in state.items()}
    return state


def check_compatible(ckpt: dict[str, Any], path: str | Path, *, model_name: str | None = None,
                     classes: list[str] | None = None, image_size: tuple[int, int] | None = None) -> None:
    """Refuse a checkpoint made for another model, class list or image size (one line naming both)."""
    if model_name is not None and ckpt["model_name"] != model_name:
        raise MgkitError(f"{path} holds a {ckpt['model_name']} model, but --model is {model_name}")
    if classes is not None and list(ckpt["classes"]) != list(classes):
        theirs, ours = ckpt["classes"], classes
        raise MgkitError(f"{path} was trained on {len(theirs)} classes ({', '.join(theirs[:4])}, …), "
                         f"the data has {len(ours)} ({', '.join(ours[:4])}, …)")
    theirs_size = (ckpt.get("data") or {}).get("image_size")
    if image_size is not None and theirs_size is not None and tuple(theirs_size) != tuple(image_size):
        raise MgkitError(f"{path} was trained on {theirs_size[0]}x{theirs_size[1]} images, "
                         f"the data has {image_size[0]}x{image_size[1]}")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself (everything but the tensors)."""

    path: str
    model_name: str
    family: Family
    classes: list[str]
    epoch: int | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)  # path, fingerprint, image_size of the training data
    mgkit_version: str | None = None

    @property
    def stage(self) -> str | None:
        return self.config.get("stage")

    def own_setting(self) -> tuple[str, str]:
        """The run's own attribution and layer: those it validated with (`--eval-attribution` /
        `--eval-layer`, which default to its guidance attribution and layer), else the family's default
        attribution at the input. Its best and Pareto checkpoints were selected on maps of this setting,
        so `mgkit evaluate` scores and `mgkit explain` draws, by default, what that selection saw."""
        cfg = self.config
        attribution = cfg.get("eval_attribution") or cfg.get("attribution") or self.family.default_attribution
        return attribution, cfg.get("eval_layer") or cfg.get("layer") or "input"


def model_from_checkpoint(path: str | Path, *, device: str | torch.device = "cpu",
                          expect_classes: list[str] | None = None,
                          expect_image_size: tuple[int, int] | None = None) -> tuple[GuidedModel, CheckpointInfo]:
    """Build the model a checkpoint holds, load its weights and move it to `device` (eval mode).

    Raises MgkitError with one line naming both sides when the checkpoint's classes or image size differ
    from the expected ones, FormatError for a foreign or damaged file.
    """
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, path, classes=expect_classes, image_size=expect_image_size)
    name = ckpt["model_name"]
    model = create_model(name, len(ckpt["classes"]))
    try:
        model.net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FormatError(f"{path}: weights do not fit {name} ({first})") from None
    model.to(device).eval()
    info = CheckpointInfo(path=str(path), model_name=name, family=family_of(name), classes=list(ckpt["classes"]),
                          epoch=ckpt.get("epoch"), config=dict(ckpt.get("config") or {}),
                          metrics=dict(ckpt.get("metrics") or {}), data=dict(ckpt.get("data") or {}),
                          mgkit_version=ckpt.get("mgkit_version"))
    return model, info


def export_state_dict(path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the plain network state dict of checkpoint `path` to `out` (loads into torchvision /
    bcos models with load_state_dict, and with torch.load(..., weights_only=True))."""
    check_output(out, inputs=[path])
    ckpt = load_checkpoint(path)
    with atomic_path(out) as tmp:
        torch.save(ckpt["model"], tmp)
    return {"checkpoint": str(path), "out": str(out), "model": ckpt["model_name"], "classes": list(ckpt["classes"]),
            "tensors": len(ckpt["model"])}
