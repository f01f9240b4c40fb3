"""Checkpoints: written atomically, and checked against the model and class list before use."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgkit import __version__
from mgkit.artifacts import atomic_path
from mgkit.errors import FormatError, MgkitError

CHECKPOINT_FORMAT = "mgkit-checkpoint"


def data_fingerprint(ds) -> str:
    """A cheap identity of a prepared data file: its root attributes and dataset shapes.

    The attributes include the creation time and every preparation option, so two different
    preparations never share a fingerprint, while hashing gigabytes of pixels is avoided.
    """
    h = hashlib.sha256()
    for key in sorted(ds.h5.attrs.keys()):
        h.update(f"{key}={ds.h5.attrs[key]!r};".encode())
    for split in ds.splits:
        for name, item in sorted(ds.h5[split].items()):
            h.update(f"{split}/{name}{item.shape};".encode())
    return h.hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, model_name: str, classes: list[str],
                    config: dict[str, Any], epoch: int, optimizer: torch.optim.Optimizer | None = None,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """Save everything needed to resume or reuse a model; renamed into place only when complete."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "mgkit_version": __version__,
        "model_name": model_name,
        "classes": list(classes),
        "config": config,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": rng_state(),
        "metrics": metrics or {},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an mgkit checkpoint, with a one-line error for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise MgkitError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt zip, truncated file, pickle errors
        raise FormatError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: {e})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{path}: not an mgkit checkpoint (for plain weights files use --weights)")
    return ckpt


def check_compatible(ckpt: dict[str, Any], path: str | Path, *, model_name: str, classes: list[str]) -> None:
    """Refuse a checkpoint made for another model or another class list."""
    if ckpt["model_name"] != model_name:
        raise MgkitError(f"{path} holds a {ckpt['model_name']} model, but --model is {model_name}")
    if list(ckpt["classes"]) != list(classes):
        theirs, ours = ckpt["classes"], classes
        raise MgkitError(f"{path} was trained on {len(theirs)} classes ({', '.join(theirs[:4])}, …), "
                         f"the data has {len(ours)} ({', '.join(ours[:4])}, …)")


def describe(ckpt: dict[str, Any]) -> str:
    return json.dumps({k: ckpt[k] for k in ("model_name", "epoch", "mgkit_version")})
