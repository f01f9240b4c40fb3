"""Two gloo processes on CPU through torchrun: the run completes and every rank ends with the same weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mgkit.engine.checkpoint import load_checkpoint


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.parametrize("stage", ["train", "guide"])
def test_two_process_run(tiny_data, tmp_path, stage):
    base = tmp_path / "base"
    common = ["--data", str(tiny_data), "--model", "resnet18", "--epochs", "2", "--batch-size", "8",
              "--lr", "1e-3", "--workers", "0", "--device", "cpu", "--quiet", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if stage == "guide":
        subprocess.run([sys.executable, "-m", "mgkit", "train", *common, "--epochs", "1", "--out", str(base)],
                       check=True, env=env, capture_output=True)
        common += ["--from", str(base / "checkpoints/best_f1.pt"), "--loss", "energy", "--lambda", "1"]
    out = tmp_path / "ddp"
    r = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "mgkit", stage, *common,
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # only rank 0 prints
    assert summary["world_size"] == 2 and summary["ranks_consistent"] is True
    last = load_checkpoint(out / "checkpoints/last.pt")
    assert last["epoch"] == 2
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == ([0, 1, 2] if stage == "guide" else [1, 2])
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
