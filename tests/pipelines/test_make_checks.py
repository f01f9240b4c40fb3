"""The Makefile before any job runs: the variables a data set needs, the launcher on every GPU job."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make_n(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    stamp = tmp / "installed"
    stamp.touch()
    return subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "_paper-tables",
                           f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}", f"JOBS_MK={tmp / 'jobs.mk'}",
                           *args], capture_output=True, text=True)


def test_real_data_needs_its_root_in_one_error_line(tmp_path):
    r = _make_n(tmp_path, "DATASET=voc", "SCALE=tiny")
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if "error:" in x]
    assert len(lines) == 1 and "VOC_ROOT" in lines[0] and not (tmp_path / "jobs.mk").exists()
    assert "SCALE=nope" in _make_n(tmp_path, "SCALE=nope").stderr
    assert "LAUNCHER=pbs" in _make_n(tmp_path, "SCALE=tiny", "LAUNCHER=pbs").stderr


def test_paper_scale_on_voc_through_slurm_without_waterbirds(tmp_path):
    r = _make_n(tmp_path, "DATASET=voc", "SCALE=paper", "VOC_ROOT=/voc", "LAUNCHER=slurm")
    assert r.returncode == 0, r.stderr
    assert "shift experiment is skipped; WB_ROOT=DIR and CUB_ROOT=DIR (Waterbirds) enable it" in r.stdout
    jobs = [x for x in r.stdout.splitlines() if "/mgkit " in x]
    gpu = [x for x in jobs if any(f"/mgkit {s} " in x for s in ("train", "guide", "evaluate", "explain"))]
    assert len(gpu) > 150 and all("-m mgkit.pipeline.launch --name " in x for x in gpu)
    assert not any("/mgkit shift " in x for x in jobs)
    assert all("-m mgkit.pipeline.launch" not in x for x in jobs if "/mgkit prepare " in x or "/mgkit tables " in x)
    assert "prepare voc --root /voc --size 224" in r.stdout
