"""End-to-end `train` and `guide` on tiny synthetic data: artifacts, resume, faults, refusals."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mgkit.cli import app
from mgkit.config import build_config
from mgkit.engine.checkpoint import load_checkpoint
from mgkit.engine.trainer import fit
from mgkit.errors import MgkitError, UsageError

runner = CliRunner()
FAST = dict(epochs=2, batch_size=8, eval_batch_size=16, lr=1e-3, workers=0, quiet=True, device="cpu")


def _fit(stage, data, out, **kw):
    return fit(build_config(stage, {"data": str(data), "out": str(out), **FAST, **kw}, None))


@pytest.fixture(scope="module")
def baselines(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    out = {}
    for model in ("resnet18", "bcos-resnet18", "xdnn-resnet18"):
        _fit("train", tiny_data, root / model, model=model)
        out[model] = root / model / "checkpoints" / "best_f1.pt"
    return out


def test_train_writes_every_artifact(baselines, tiny_data):
    run = baselines["resnet18"].parent.parent
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == "resnet18" and cfg["epochs"] == 2 and cfg["attribution"] == "ixg"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    assert {"f1", "epg", "iou"} <= set(lines[-1]["val"])
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["mgkit_version"] and prov["data_fingerprint"]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["optimizer"] is not None and last["model_name"] == "resnet18"
    best = load_checkpoint(baselines["resnet18"])
    assert best["metrics"]["f1"] == max(x["val"]["f1"] for x in lines)


GUIDE_CASES = [
    ("resnet18", "ixg"), ("resnet18", "gradcam"),
    ("bcos-resnet18", "bcos"), ("bcos-resnet18", "ixg"), ("bcos-resnet18", "gradcam"),
    ("xdnn-resnet18", "intgrad"), ("xdnn-resnet18", "ixg"),
]


@pytest.mark.parametrize("model,attribution", GUIDE_CASES)
@pytest.mark.parametrize("layer", ["input", "final"])
@pytest.mark.parametrize("loss", ["energy", "l1", "ppce", "rrr", "energy-size"])
def test_guide_each_loss_attribution_and_layer(baselines, tiny_data, tmp_path, model, attribution, layer, loss):
    s = _fit("guide", tiny_data, tmp_path / "g", init_from=str(baselines[model]), loss=loss,
             attribution=attribution, layer=layer, lam=1.0, ig_steps=4)
    lines = [json.loads(x) for x in (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2]  # epoch 0: the starting checkpoint on val
    assert all(torch.isfinite(torch.tensor(x["train"]["loss"])) for x in lines[1:])
    assert lines[1]["train"]["loc"] != 0.0
    pareto = json.loads((tmp_path / "g" / "pareto" / "pareto.json").read_text())
    assert pareto["entries"] and all((tmp_path / "g" / "pareto" / e["checkpoint"]).exists() for e in pareto["entries"])
    assert s["model"] == model  # taken from the parent checkpoint


@pytest.mark.parametrize("loss", ["energy", "l1", "ppce", "rrr", "energy-size"])
def test_guide_mid_layer_dilation_targets_reduction(baselines, tiny_data, tmp_path, loss):
    _fit("guide", tiny_data, tmp_path / "g", init_from=str(baselines["resnet18"]), loss=loss, layer="mid2",
         lam=1.0, epochs=1, dilate=0.1, targets="all" if loss in ("l1", "energy") else "random",
         loc_reduction="mean" if loss in ("rrr", "energy") else "sum")
    last = load_checkpoint(tmp_path / "g" / "checkpoints" / "last.pt")
    parent = load_checkpoint(baselines["resnet18"])
    changed = [k for k in parent["model"] if not torch.equal(parent["model"][k], last["model"][k])]
    assert changed, "guided fine-tuning changed no weight"


def test_guide_birds_place_task_and_groups(tiny_birds, tmp_path):
    _fit("train", tiny_birds, tmp_path / "b", model="resnet18", epochs=1)
    _fit("guide", tiny_birds, tmp_path / "g", init_from=str(tmp_path / "b/checkpoints/best_f1.pt"), loss="energy",
         lam=1.0, epochs=1)
    line = json.loads((tmp_path / "g" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0.0 <= line["val_detail"]["worst_group"] <= line["val_detail"]["mean_group"] <= 1.0


def test_resume_continues_and_refuses_other_config(tiny_data, tmp_path):
    out = tmp_path / "r"
    _fit("train", tiny_data, out, model="resnet18", epochs=1)
    s = _fit("train", tiny_data, out, model="resnet18", epochs=2)  # more epochs: resumes at epoch 2
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(MgkitError, match="different configuration.*lr"):
        _fit("train", tiny_data, out, model="resnet18", lr=0.5)
    fit(build_config("train", {"data": str(tiny_data), "out": str(out), **FAST, "model": "resnet18",
                               "epochs": 1, "lr": 0.5}, None), restart=True)
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1]
    assert s["best_f1"] >= 0


def test_checkpoint_mismatch_refused(baselines, tiny_data, tiny_birds, tmp_path):
    with pytest.raises(MgkitError, match="holds a resnet18 model, but --model is bcos-resnet18"):
        _fit("guide", tiny_data, tmp_path / "g", init_from=str(baselines["resnet18"]), model="bcos-resnet18",
             loss="energy")
    with pytest.raises(MgkitError, match="classes"):
        _fit("guide", tiny_birds, tmp_path / "g2", init_from=str(baselines["resnet18"]), loss="energy")


@pytest.mark.parametrize("kw,message", [
    (dict(loss="nope"), "--loss must be one of"),
    (dict(loss="energy", attribution="bcos"), "not available for resnet18"),
    (dict(loss="energy", layer="mid9"), "--layer must be one of"),
    (dict(loss=None), "needs --loss"),
    (dict(loss="energy", attribution="intgrad"), "needs an xdnn model"),
])
def test_bad_guide_flags(baselines, tiny_data, tmp_path, kw, message):
    with pytest.raises(UsageError, match=message):
        _fit("guide", tiny_data, tmp_path / "g", init_from=str(baselines["resnet18"]), **kw)


def test_non_finite_loss_stops_with_step(tiny_data, tmp_path):
    with pytest.raises(MgkitError, match=r"non-finite loss at epoch 1, step \d+"):
        _fit("train", tiny_data, tmp_path / "n", model="resnet18", lr=1e30, epochs=1, batch_size=4)


def test_cli_train_guide_json_and_config_file(tiny_data, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": "resnet18", "epochs": 1, "batch-size": 8, "workers": 0, "lr": 1e-3}))
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(tiny_data), "--out", str(tmp_path / "b"),
                            "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["stage"] == "train"
    r = runner.invoke(app, ["guide", "--from", str(tmp_path / "b/checkpoints/best_f1.pt"), "--data", str(tiny_data),
                            "--out", str(tmp_path / "g"), "--loss", "energy", "--lambda", "1", "--epochs", "1",
                            "--batch-size", "8", "--workers", "0", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pareto"]
    r = runner.invoke(app, ["guide", "--from", str(tmp_path / "missing.pt"), "--data", str(tiny_data),
                            "--out", str(tmp_path / "g3"), "--loss", "energy"])
    assert r.exit_code == 1 and "missing.pt: no such checkpoint" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("wat: 1\n")
    r = runner.invoke(app, ["train", "--config", str(bad), "--data", str(tiny_data), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown option 'wat'" in r.output


def _guide_cmd(data, out):
    return [sys.executable, "-m", "mgkit", "guide", "--data", str(data), "--out", str(out), "--model", "resnet18",
            "--epochs", "3", "--batch-size", "4", "--lr", "1e-3", "--workers", "0", "--device", "cpu", "--quiet"]


def test_resume_after_sigkill_matches_uninterrupted(baselines, tiny_data, tmp_path):
    """Kill a guided run in the middle of epoch 2, re-run the same command, compare with a clean run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    extra = ["--from", str(baselines["resnet18"]), "--loss", "energy", "--lambda", "1"]
    clean = tmp_path / "clean"
    subprocess.run(_guide_cmd(tiny_data, clean) + extra, check=True, env=env)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_guide_cmd(tiny_data, killed) + extra, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = (killed / "metrics.jsonl").read_text().splitlines() if (killed / "metrics.jsonl").exists() else []
        if any(json.loads(x)["epoch"] == 1 for x in lines) and (killed / "checkpoints/last.pt").exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)  # well inside epoch 2 (8 steps of a guided resnet18)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoints/last.pt")["epoch"] < 3, "the run finished before it was killed"
    subprocess.run(_guide_cmd(tiny_data, killed) + extra, check=True, env=env)
    a = load_checkpoint(clean / "checkpoints/last.pt")
    b = load_checkpoint(killed / "checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma = [json.loads(x) for x in (clean / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [x.get("val") for x in ma] == [x.get("val") for x in mb]
