"""Two gloo processes on CPU through torchrun: a guided run (DDP passed to attribute as forward_func)
completes and every rank ends with the same weights. The unguided path calls the same forward_func
(tests/engine/test_step.py), so one launch covers both."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgkit.data.format import open_dataset
from mgkit.engine.checkpoint import load_checkpoint, save_checkpoint
from mgkit.models import create_model


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_two_process_guided_run(tiny_data, tmp_path):
    with open_dataset(tiny_data) as ds:
        classes = ds.classes
    parent = tmp_path / "parent.pt"
    torch.manual_seed(0)
    save_checkpoint(parent, model=create_model("resnet18", len(classes)), model_name="resnet18", classes=classes,
                    config={"stage": "train"}, epoch=1)
    common = ["--data", str(tiny_data), "--model", "resnet18", "--epochs", "1", "--batch-size", "8",
              "--lr", "1e-3", "--workers", "0", "--device", "cpu", "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common += ["--from", str(parent), "--loss", "energy", "--lambda", "1"]
    out = tmp_path / "ddp"
    r = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "mgkit", "guide", *common,
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["ranks_consistent"] is True
    last = load_checkpoint(out / "checkpoints/last.pt")
    assert last["epoch"] == 1
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and lines[1]["train"]["loc"] > 0
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
