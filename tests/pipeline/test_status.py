"""`make plan`: job states from the files on disk, GPU-hours from the throughput table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mgkit.pipeline import status
from mgkit.pipeline.experiments import build
from mgkit.pipeline.scale import Scale

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plan():
    return build(Scale.load(ROOT / "pipelines/scales/tiny.yaml"), "synthetic")


def test_states_done_failed_pending(plan, tmp_path, monkeypatch):
    monkeypatch.setattr(status, "slurm_queued", lambda: {"base/bcos"})
    dirs = {"RUNS": str(tmp_path / "runs"), "RESULTS": str(tmp_path / "res"), "DATA_DIR": str(tmp_path / "d")}
    done = tmp_path / "runs/base/vanilla"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    failed = tmp_path / "runs/main/vanilla-ixg/input/energy/lam0.01"
    failed.mkdir(parents=True)
    (failed / "log.txt").write_text("Traceback\nboom\n")
    text = status.report(plan, dirs)
    main = next(x for x in text.splitlines() if x.startswith("main "))
    jobs, n_done, running, n_failed, pending = map(int, main.split()[1:6])
    assert (n_done, running, n_failed) == (1, 1, 1) and pending == jobs - 3
    assert "failed: main/vanilla-ixg/input/energy/lam0.01" in text
    assert "boom" in status.tail(plan, dirs, "main/vanilla-ixg/input/energy/lam0.01")


def test_gpu_hours_of_a_guided_run_follow_the_throughput_table():
    raw = yaml.safe_load((ROOT / "pipelines/scales/paper.yaml").read_text())
    p = build(Scale(raw), "voc")
    job = p.jobs["$(RUNS)/main/bcos-bcos/final/energy/lam0.01/summary.json"]
    # 50 epochs of VOC trainval at the B-cos final-layer rate, plus validation (half the eval images)
    expected = 50 * (5011 / 256 + (4952 + 2510) / 2 / 322)
    assert status.train_seconds(job, p) == pytest.approx(expected)
    base = p.jobs["$(RUNS)/base/vanilla/summary.json"]
    assert status.train_seconds(base, p) == pytest.approx(100 * (5011 / 814 + (4952 + 2510) / 2 / 814))
