"""The real Makefile pipeline at a micro scale: file targets chain prepare -> train -> guide -> evaluate,
an up-to-date target is not recomputed, and deleting one run recomputes only what depends on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from micro_scales import micro_yaml

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    stamp = tmp / "installed"  # the venv running these tests stands in for .venv
    stamp.touch()
    variables = [f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}", f"SCALE_YAML={tmp / 'micro.yaml'}",
                 f"JOBS_MK={tmp / 'micro.mk'}", "SCALE=micro", f"DATA_DIR={tmp / 'data'}",
                 f"RUNS={tmp / 'runs'}", f"RESULTS={tmp / 'results'}", "DEVICE=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args, *variables], env=env,
                          capture_output=True, text=True)


@pytest.mark.slow
def test_micro_pipeline_chains_resumes_and_recomputes_only_dependents(tmp_path):
    (tmp_path / "micro.yaml").write_text(micro_yaml())
    first = _make(tmp_path, "main")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("prepare multilabel data", "train vanilla baseline", "guide vanilla-ixg energy/input λ=0.5",
                  "evaluate ->"):
        assert stage in first.stdout, stage
    result = json.loads((tmp_path / "results/main/vanilla-ixg-input-energy.json").read_text())
    base = json.loads((tmp_path / "results/main/base-vanilla-ixg-input.json").read_text())
    for rec, stage, loss in ((result, "guide", "energy"), (base, "train", None)):
        assert rec["evaluation"]["layer"] == "input" and rec["evaluation"]["attribution"] == "ixg"
        assert rec["evaluation"]["split"] == "test" and rec["evaluation"]["threshold_split"] == "val"
        assert rec["identity"]["stage"] == stage and rec["identity"]["loss"] == loss
    assert result["identity"]["lambda"] == 0.5 and result["entries"]  # the λ run's Pareto checkpoints
    run = tmp_path / "runs/main/vanilla-ixg/input/energy/lam0.5"
    assert (run / "log.txt").stat().st_size > 0 and (run / "summary.json").exists()

    assert _make(tmp_path, "-q", "main").returncode == 0  # everything up to date: nothing to do

    (run / "summary.json").unlink()
    plan = _make(tmp_path, "-n", "main").stdout
    assert "mgkit guide" in plan and "vanilla-ixg-input-energy.json" in plan
    assert "mgkit train" not in plan and "mgkit prepare" not in plan and "base-vanilla-ixg-input.json" not in plan
