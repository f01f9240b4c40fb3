"""On a real one-node SLURM (.ci/slurm-up.sh; `make test-long`): `make paper-tables LAUNCHER=slurm` (at
a miniature of SCALE=tiny) runs every job as a SLURM job that completes, with the results of LAUNCHER=local, and a
job that SLURM stops (SIGTERM) resumes on the next `make` to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from micro_scales import MICRO, micro_yaml

ROOT = Path(__file__).resolve().parents[2]
JOBCOMP = Path(os.environ.get("MGKIT_SLURM_JOBCOMP", "/var/log/slurm/jobcomp.log"))
pytestmark = [
    pytest.mark.long,
    pytest.mark.skipif(not os.environ.get("MGKIT_LONG_TESTS"), reason="minutes on a real SLURM: make test-long"),
    pytest.mark.skipif(shutil.which("sbatch") is None or shutil.which("make") is None,
                       reason="no SLURM here: run .ci/slurm-up.sh (as root) first"),
]
# Left out of the comparison: timings, and the identities of files made twice (a data file's fingerprint
# holds its creation time, a checkpoint's hash its bytes, creation time included).
TIMING = {"created", "seconds", "started", "elapsed", "images_per_second", "images_per_s", "epoch_seconds", "time",
          "data_hash", "parent_sha256", "sha256"}

# SCALE=tiny shrunk to one of each: one configuration, both losses (the Energy-vs-L1 figure needs them) at
# one lambda each, one value per ablation, one shift task and seed, no timings (claim 9's benchmark: they
# differ from run to run). Every experiment and every kind of job (pretrain, train, guide, evaluate, shift,
# explain) is still planned and run by the real pipeline: 25 jobs instead of SCALE=tiny's 94.
MINI = """
data: {size: 32, train: 16, val: 8, test: 8, seed: 0}
pretrain: {train: 16, val: 8, test: 8, epochs: 1, families: [bcos]}
family:
  vanilla: {model: resnet18, lr: 1.0e-3, batch: 8, base_epochs: 1, guide_epochs: 1, pretrained: false}
  bcos: {model: bcos-resnet18, lr: 1.0e-3, batch: 8, base_epochs: 1, guide_epochs: 1, pretrained: false}
configs: [bcos-bcos]
losses: [energy, l1]
layers: [input]
config_layers: {bcos-bcos: [input]}
lambda:
  energy: {input: [0.1], final: [0.1]}
  l1: {input: [1.0]}
ablation: {config: bcos-bcos, layer: input, lambda_index: 1, losses: [energy], lambdas: {energy: [0.1]}}
annotations: [0.1]
dilation: [0.25]
depth: {loss: energy, layers: [final], lambdas: {final: [0.1]}}
shift: {config: bcos-bcos, layer: input, base_epochs: 1, bbox_frac: 0.1, seeds: [0], losses: [energy], tasks: [birds]}
targets: {config: bcos-bcos, layer: input, losses: [energy]}
explain: {n: 2}
"""


def _make(root: Path, launcher: str, *args: str, scale_yaml: str = "pipelines/scales/tiny.yaml",
          data: Path | None = None, wait: bool = True):
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / "installed"
    stamp.touch()
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), *args, f"BIN={Path(sys.executable).parent}",
           f"STAMP={stamp}", f"SCALE_YAML={scale_yaml}", f"JOBS_MK={root / 'jobs.mk'}",
           f"DATA_DIR={data or root / 'data'}", f"RUNS={root / 'runs'}", f"RESULTS={root / 'results'}",
           "DEVICE=cpu", f"LAUNCHER={launcher}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MGKIT_LOCK_DIR": str(root / "locks")}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def _comparable(x, root: str):
    """A record without its timings, paths relative to the pipeline's root."""
    if isinstance(x, dict):
        return {k.replace(root, "ROOT"): _comparable(v, root) for k, v in x.items()
                if k not in TIMING and "second" not in k}
    if isinstance(x, list):
        return [_comparable(v, root) for v in x]
    return x.replace(root, "ROOT") if isinstance(x, str) else x


def _jobcomp() -> dict[str, tuple[str, str]]:
    """Job id -> (name, state) from SLURM's job-completion log."""
    out = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            out[fields["JobId"]] = (fields.get("Name", ""), fields.get("JobState", ""))
    return out


def test_paper_tables_on_slurm_completes_every_job_with_local_results(tmp_path):
    (tmp_path / "mini.yaml").write_text(MINI)
    scale = str(tmp_path / "mini.yaml")
    t0 = time.time()
    slurm = _make(tmp_path / "slurm", "slurm", "paper-tables", "PARALLEL=2", scale_yaml=scale)
    assert slurm.returncode == 0, slurm.stdout[-3000:] + slurm.stderr[-3000:]
    t_slurm = time.time() - t0
    planned = (tmp_path / "slurm/jobs.mk").read_text().count("$(LAUNCH) ")  # every train/evaluate/explain job
    records = sorted((tmp_path / "slurm").rglob("*launch.json"))
    names = [json.loads(p.read_text())["name"] for p in records]
    assert planned == 25 and len(set(names)) == len(records) == planned
    assert sum(not n.startswith("results/") for n in names) == 10  # training runs
    assert any(n.startswith("results/figures/") for n in names), names
    done = _jobcomp()
    for p in records:  # each job's own SLURM job: its run name, COMPLETED
        rec = json.loads(p.read_text())
        assert done.get(rec["slurm_job_id"]) == (rec["name"], "COMPLETED"), (p, done.get(rec["slurm_job_id"]))

    local = _make(tmp_path / "local", "local", "paper-tables", "PARALLEL=2", scale_yaml=scale)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    print(f"paper-tables, {planned} jobs: slurm {t_slurm:.0f} s, local {time.time() - t0 - t_slurm:.0f} s")
    local_jsons = [*(tmp_path / "local/results").rglob("*.json"), *(tmp_path / "local/runs").rglob("summary.json"),
                   *(tmp_path / "local/data").rglob("summary.json")]  # pretraining's run lives with the data
    results = sorted(p.relative_to(tmp_path / "local") for p in local_jsons
                     if not p.name.endswith("launch.json"))  # where each job ran differs, by design
    assert len(results) >= 15 + 10
    for rel in results:
        a = _comparable(json.loads((tmp_path / "local" / rel).read_text()), str(tmp_path / "local"))
        b = _comparable(json.loads((tmp_path / "slurm" / rel).read_text()), str(tmp_path / "slurm"))
        assert a == b, rel
    assert (tmp_path / "slurm/results/paper-tables.md").read_text().replace(str(tmp_path / "slurm"), "ROOT") == \
        (tmp_path / "local/results/paper-tables.md").read_text().replace(str(tmp_path / "local"), "ROOT")


# a baseline of 4 epochs (long enough to be stopped between two of them) on 32 training images
RESUME = micro_yaml(
    data={"size": 32, "train": 32, "val": 8, "test": 8, "seed": 0},
    family={"vanilla": {**MICRO["family"]["vanilla"], "base_epochs": 4},
            "bcos": {"model": "bcos-resnet18", "lr": 1.0e-3, "batch": 8, "base_epochs": 1, "guide_epochs": 1}},
    targets={"config": "bcos-bcos", "layer": "input", "losses": ["energy"]})


def _weights(path: Path) -> dict:
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_a_job_stopped_by_slurm_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    import torch

    (tmp_path / "resume.yaml").write_text(RESUME)
    scale = str(tmp_path / "resume.yaml")
    target = lambda root: f"{root / 'runs'}/base/vanilla/summary.json"  # noqa: E731
    whole, data = tmp_path / "whole", tmp_path / "data"
    done = _make(whole, "local", target(whole), scale_yaml=scale, data=data)
    assert done.returncode == 0, done.stdout[-3000:]

    cut = tmp_path / "cut"
    run = cut / "runs/base/vanilla"
    proc = _make(cut, "slurm", target(cut), scale_yaml=scale, data=data, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints/last.pt").exists():
        time.sleep(0.5)
    assert (run / "checkpoints/last.pt").exists(), "no epoch completed in 5 minutes"
    job = json.loads((run / "launch.json").read_text())["slurm_job_id"]
    subprocess.run(["scancel", "--full", "--signal=TERM", job], check=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and f"SLURM job {job} (base/vanilla) failed" in out and "log: " in out, out[-2000:]
    epochs_before = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= epochs_before < 4 and not (run / "summary.json").exists()

    again = _make(cut, "slurm", target(cut), scale_yaml=scale, data=data)
    assert again.returncode == 0, again.stdout[-3000:]
    assert json.loads((run / "launch.json").read_text())["slurm_job_id"] != job  # resubmitted
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    for name in ("last.pt", "best_f1.pt"):
        a, b = _weights(whole / "runs/base/vanilla/checkpoints" / name), _weights(run / "checkpoints" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
