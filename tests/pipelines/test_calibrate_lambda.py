"""pipelines/calibrate_lambda.py, the pipeline's calibration step: λ* = |∇BCE| / |∇L_loc| against the two
gradient norms recomputed here with separate forward passes and .backward(), and its --out file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mgkit.data.loader import H5Split, images_to_float, make_loader
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic
from mgkit.engine.checkpoint import model_from_checkpoint, save_checkpoint
from mgkit.engine.distributed import DistEnv
from mgkit.engine.step import StepSpec, contributing_pairs, localization_term, sample_targets
from mgkit.models import create_model

ROOT = Path(__file__).resolve().parents[2]


def _norms(ckpt: Path, data: Path, loss: str) -> tuple[float, float]:
    """|∇BCE| and |∇L_loc| over the parameters on the first 4 validation images, each from its own
    forward pass (the script takes both from one graph)."""
    out = []
    for term in ("bce", "loc"):
        model, _ = model_from_checkpoint(ckpt)
        model.train()
        b = next(iter(make_loader(H5Split(data, "val"), 4, shuffle=False, seed=0, workers=0)))
        targets = sample_targets(b.labels, torch.Generator().manual_seed(0))[:, None]
        spec = StepSpec(loss=loss, attribution="ixg", layer="input", lam=1.0, targets="random", dilate=0.0,
                        reduction="sum", size_alpha=0.5, ig_steps=16, outside=False, amp=False, channels_last=False)
        loc, logits = localization_term(model, model.prepare_input(images_to_float(b.images)), targets,
                                        contributing_pairs(b, targets, (b.labels.sum(1) > 0)[:, None]), b, spec,
                                        DistEnv())
        (F.binary_cross_entropy_with_logits(logits.float(), b.labels) if term == "bce" else loc).backward()
        out.append(math.sqrt(sum(float((p.grad ** 2).sum()) for p in model.parameters() if p.grad is not None)))
    return out[0], out[1]


@pytest.mark.slow
def test_lambda_star_is_the_ratio_of_gradient_norms(tmp_path, one_thread):
    data = tmp_path / "d.h5"
    run_prepare(synthetic.plan(task="multilabel", num_classes=3, n_train=4, n_val=4, n_test=4, seed=0), data,
                size=32, bbox_frac=1.0, seed=0, quiet=True)
    torch.manual_seed(0)
    ckpt = tmp_path / "base.pt"
    save_checkpoint(ckpt, model=create_model("resnet18", 3), model_name="resnet18", classes=["a", "b", "c"],
                    config={"stage": "train"}, epoch=1, data={"image_size": [32, 32]})
    out = tmp_path / "cal" / "vanilla-ixg.json"
    out.parent.mkdir()
    r = subprocess.run([sys.executable, str(ROOT / "pipelines/calibrate_lambda.py"), str(ckpt), "--data", str(data),
                        "--attribution", "ixg", "--layers", "input", "--losses", "energy", "--batches", "1",
                        "--batch-size", "4", "--ratios", "0.1", "1", "10", "--device", "cpu", "--config",
                        "vanilla-ixg", "--out", str(out)], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    m = doc["lambda"]["energy"]["input"]
    bce, loc = _norms(ckpt, data, "energy")
    assert bce > 0 and loc > 0
    assert doc["config"] == "vanilla-ixg" and doc["ratios"] == [0.1, 1.0, 10.0]
    assert math.isclose(m["bce_grad"], bce, rel_tol=1e-4) and math.isclose(m["loc_grad"], loc, rel_tol=1e-4)
    assert math.isclose(m["lambda_star"], bce / loc, rel_tol=1e-4)
    assert m["grid"] == [float(f"{bce / loc * k:.1g}") for k in (0.1, 1.0, 10.0)]
