"""`make paper-tables SCALE=tiny DATASET=voc` end to end on VOC-layout files: ImageNet weights from a
pre-seeded TORCH_HOME, the λ calibration step and the re-planned guided runs, the shift experiment
skipped with its one line, and a report whose Pareto sets were selected on validation (`make
test-long`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mgkit import weights as W
from mgkit.models import create_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))
from fixtures import make_voc  # noqa: E402  (tests/data/fixtures.py, as the data tests import it)

pytestmark = [pytest.mark.long, pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
              pytest.mark.skipif(not os.environ.get("MGKIT_LONG_TESTS"), reason="make test-long")]


def _tiny_with_weights_and_calibration(path: Path) -> None:
    """pipelines/scales/tiny.yaml with ImageNet weights on and a calibration step (two ratios), cut to
    what this test checks: the Energy loss, one layer per configuration, the annotations ablation."""
    s = yaml.safe_load((ROOT / "pipelines/scales/tiny.yaml").read_text())
    for fam in ("vanilla", "bcos"):
        s["family"][fam]["pretrained"] = True
    s["calibrate"] = {"ratios": [1.0, 10.0], "batches": 1, "batch_size": 2}
    s["losses"] = ["energy"]
    s["lambda"] = {"energy": s["lambda"]["energy"]}
    s["config_layers"] = {"vanilla-ixg": ["final"], "bcos-bcos": ["input"]}
    s["ablation"].update(losses=["energy"], lambdas={"energy": [0.01]})
    s["dilation"] = []
    s["depth"].update(layers=[], lambdas={})
    s["shift"]["losses"] = ["energy"]
    path.write_text(yaml.safe_dump(s))


def _seed_weights(torch_home: Path) -> dict[str, Path]:
    """Random ImageNet-shaped state dicts under the names `mgkit weights` expects (no network)."""
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    files = {}
    for model in ("resnet18", "bcos-resnet18"):
        torch.manual_seed(0)
        files[model] = cache / W.WEIGHTS[model].filename
        torch.save(create_model(model, 1000).net.state_dict(), files[model])
    return files


def test_paper_tables_on_voc_files_end_to_end(tmp_path):
    voc = make_voc(tmp_path / "voc")
    scale = tmp_path / "tiny-paper.yaml"
    _tiny_with_weights_and_calibration(scale)
    files = _seed_weights(tmp_path / "torch")
    stamp = tmp_path / "installed"
    stamp.touch()
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "paper-tables", "SCALE=tiny", "DATASET=voc",
                        f"VOC_ROOT={voc}", f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}",
                        f"SCALE_YAML={scale}", f"JOBS_MK={tmp_path / 'jobs.mk'}", f"DATA_DIR={tmp_path / 'data'}",
                        f"RUNS={tmp_path / 'runs'}", f"RESULTS={tmp_path / 'results'}", "DEVICE=cpu", "WORKERS=0"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    skip = [x for x in r.stdout.splitlines() if "shift experiment is skipped" in x]
    assert len(skip) == 1 and "WB_ROOT=DIR and CUB_ROOT=DIR" in skip[0] and r.stdout.startswith(skip[0])
    # the baselines started from the seeded files
    for fam, model in (("vanilla", "resnet18"), ("bcos", "bcos-resnet18")):
        prov = json.loads((tmp_path / f"runs/base/{fam}/provenance.json").read_text())
        assert prov["start_weights"]["file"] == str(files[model])
    # the guided runs' λ are the calibrated ones, cited in the report with their source (a flat term,
    # Energy at a 1x1 final layer of 32 px images, keeps the scale file's grid, marked as such)
    lam = yaml.safe_load((tmp_path / "results/lambda.yaml").read_text())
    assert all(v["source"].startswith("scale-file guess (not measurable")
               for v in lam["grids"]["vanilla-ixg"]["energy"]["final"]["values"])
    grid = lam["grids"]["bcos-bcos"]["energy"]["input"]
    assert [v["source"] for v in grid["values"]] == ["calibrated", "calibrated"]
    star = grid["lambda_star"]
    assert [v["lambda"] for v in grid["values"]] == [float(f"{star * k:.1g}") for k in (1.0, 10.0)]
    runs = sorted(p.name for p in (tmp_path / "runs/main/bcos-bcos/input/energy").iterdir())
    assert runs == sorted(f"lam{v['lambda']!r}" for v in grid["values"])
    annotations = sorted(p.name for p in (tmp_path / "runs/annotations/energy").iterdir())
    assert annotations == sorted(f"f0.1-lam{v['lambda']!r}" for v in grid["values"])  # the ablation sweeps λ
    report = (tmp_path / "results/paper-tables.md").read_text()
    assert "## λ grids (calibration)" in report and "(calibrated)" in report
    assert "### 5. Distribution shift (§7.6, Table 1)\n\nNot measured" in report
    # Pareto sets selected on validation over every λ run, scored on test
    rec = json.loads((tmp_path / "results/main/bcos-bcos-input-energy.json").read_text())
    assert rec["selection"]["split"] == "val" and len(rec["selection"]["per_run"]) == 2
    assert rec["entries"] and all(e["selection"]["split"] == "val" and e["evaluation"]["split"] == "test"
                                  for e in rec["entries"])
    assert "Pareto sets selected on split `val`" in report
