"""`train` and `guide` end to end (few runs) and the run-level behaviour: schema records, resume,
refusals, non-finite guards. Step-level behaviour over loss x attribution x layer is in test_step.py."""

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
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic
from mgkit.engine import trainer as T
from mgkit.engine.checkpoint import load_checkpoint, save_checkpoint
from mgkit.engine.distributed import DistEnv
from mgkit.errors import MgkitError, UsageError
from mgkit.models import create_model
from mgkit.progress import Reporter
from mgkit.results import read_records

runner = CliRunner()
FAST = dict(epochs=2, batch_size=8, eval_batch_size=16, lr=1e-3, workers=0, quiet=True, device="cpu")


def _cfg(stage, data, out, **kw):
    return build_config(stage, {"data": str(data), "out": str(out), **FAST, **kw}, None)


def _fit(stage, data, out, **kw):
    return T.fit(_cfg(stage, data, out, **kw))


@pytest.fixture(scope="module")
def untrained(tiny_data, tmp_path_factory):
    """Checkpoints of untrained models on tiny_data's classes: enough for every refusal test."""
    from mgkit.data.format import open_dataset

    with open_dataset(tiny_data) as ds:
        classes = ds.classes
    root = tmp_path_factory.mktemp("untrained")
    out = {}
    for name in ("resnet18", "xdnn-resnet18"):
        out[name] = root / f"{name}.pt"
        save_checkpoint(out[name], model=create_model(name, len(classes)), model_name=name, classes=classes,
                        config={"stage": "train"}, epoch=1)
    return out


def _lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_cli_train_guide_export_and_schema_records(tiny_data, tmp_path):
    """The two stages through the CLI: files as before, every record schema-v1 and strict, export works."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": "resnet18", "epochs": 2, "batch-size": 8, "workers": 0, "lr": 1e-3}))
    base = tmp_path / "b"
    r = runner.invoke(app, ["train", "--config", str(cfg), "--data", str(tiny_data), "--out", str(base),
                            "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["stage"] == "train" and summary == json.loads((base / "summary.json").read_text())
    assert yaml.safe_load((base / "config.yaml").read_text())["attribution"] == "ixg"  # the family default
    prov = json.loads((base / "provenance.json").read_text())
    assert prov["mgkit_version"] and prov["data_fingerprint"] == summary["identity"]["data_hash"]
    records = read_records([base / "summary.json", base / "metrics.jsonl"])
    assert [x["kind"] for x in records] == ["run", "epoch", "epoch"]
    ident = summary["identity"]
    assert (ident["model"], ident["family"], ident["stage"], ident["loss"], ident["lambda"]) == \
        ("resnet18", "vanilla", "train", None, 0.0)
    assert set(ident["classes"]) == set(records[1]["per_class"]) and ident["checkpoint"].endswith("best_f1.pt")
    lines = records[1:]
    assert [x["epoch"] for x in lines] == [1, 2]
    best = max(lines, key=lambda x: x["val"]["f1"])
    assert summary["best_f1"] == best["val"]["f1"] and summary["best_epoch"] == best["epoch"]
    assert summary["chosen_threshold"] == best["metrics"]["best_threshold"] == \
        summary["evaluation"]["chosen_threshold"]
    assert summary["training"]["epochs"] == 2
    last = load_checkpoint(base / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["optimizer"] is not None and last["model_name"] == "resnet18"
    best_ckpt = torch.load(base / "checkpoints" / "best_f1.pt", weights_only=True)
    assert "optimizer" not in best_ckpt and best_ckpt["metrics"]["f1"] == summary["best_f1"]

    guided = tmp_path / "g"
    r = runner.invoke(app, ["guide", "--from", str(base / "checkpoints/best_f1.pt"), "--data", str(tiny_data),
                            "--out", str(guided), "--loss", "energy", "--lambda", "1", "--epochs", "1",
                            "--batch-size", "8", "--device", "cpu", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    # no --workers: the CPU's default (loader.default_workers) is what config.yaml and the checkpoints record
    assert yaml.safe_load((guided / "config.yaml").read_text())["workers"] == 0
    assert load_checkpoint(guided / "checkpoints" / "last.pt")["config"]["workers"] == 0
    ident = summary["identity"]
    assert (ident["stage"], ident["loss"], ident["layer"], ident["attribution"], ident["lambda"]) == \
        ("guide", "energy", "input", "ixg", 1.0)
    assert ident["parent"].endswith("best_f1.pt") and len(ident["parent_sha256"]) == 64
    assert [x["epoch"] for x in _lines(guided)] == [0, 1]  # epoch 0: the starting checkpoint on val
    assert _lines(guided)[1]["train"]["loc"] > 0
    pareto = json.loads((guided / "pareto" / "pareto.json").read_text())
    assert pareto["entries"] == summary["pareto"]
    assert all((guided / "pareto" / e["checkpoint"]).exists() for e in pareto["entries"])

    r = runner.invoke(app, ["export", str(guided / "checkpoints/best_f1.pt"), "--out", str(tmp_path / "m.pt")])
    assert r.exit_code == 0, r.output
    import torchvision

    net = torchvision.models.resnet18(num_classes=len(ident["classes"]))
    net.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))

    r = runner.invoke(app, ["guide", "--from", str(tmp_path / "missing.pt"), "--data", str(tiny_data),
                            "--out", str(tmp_path / "g3"), "--loss", "energy"])
    assert r.exit_code == 1 and "missing.pt: no such checkpoint" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("wat: 1\n")
    r = runner.invoke(app, ["train", "--config", str(bad), "--data", str(tiny_data), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown option 'wat'" in r.output


def test_guide_birds_place_task_and_groups(tiny_birds, tmp_path):
    _fit("train", tiny_birds, tmp_path / "b", model="resnet18", epochs=1)
    _fit("guide", tiny_birds, tmp_path / "g", init_from=str(tmp_path / "b/checkpoints/best_f1.pt"), loss="energy",
         lam=1.0, epochs=1)
    line = _lines(tmp_path / "g")[-1]
    m = line["metrics"]
    assert 0.0 <= m["worst_group"] <= m["mean_group"] <= 1.0
    assert list(line["groups"]) == sorted(synthetic.BIRD_GROUPS)  # keyed by name (sorted: strict JSON dump)
    assert all(set(v) >= {"accuracy", "count"} for v in line["groups"].values())


def test_resume_continues_and_refuses_other_config(tiny_data, tmp_path):
    out = tmp_path / "r"
    _fit("train", tiny_data, out, model="resnet18", epochs=1)
    s = _fit("train", tiny_data, out, model="resnet18", epochs=2)  # more epochs: resumes at epoch 2
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert [x["epoch"] for x in _lines(out)] == [1, 2] and s["training"]["epochs"] == 2
    with pytest.raises(MgkitError, match="different configuration.*lr"):
        _fit("train", tiny_data, out, model="resnet18", lr=0.5)
    T.fit(_cfg("train", tiny_data, out, model="resnet18", epochs=1, lr=0.5), restart=True)
    assert [x["epoch"] for x in _lines(out)] == [1]


def test_checkpoint_mismatch_refused(untrained, tiny_data, tiny_birds, tmp_path):
    with pytest.raises(MgkitError, match="holds a resnet18 model, but --model is bcos-resnet18"):
        _fit("guide", tiny_data, tmp_path / "g", init_from=str(untrained["resnet18"]), model="bcos-resnet18",
             loss="energy")
    with pytest.raises(MgkitError, match="classes"):
        _fit("guide", tiny_birds, tmp_path / "g2", init_from=str(untrained["resnet18"]), loss="energy")


@pytest.mark.parametrize("kw,message", [
    (dict(loss="nope"), "--loss must be one of"),
    (dict(loss="energy", attribution="bcos"), "not available for resnet18"),
    (dict(loss="energy", layer="mid9"), "--layer must be one of"),
    (dict(loss=None), "needs --loss"),
    (dict(loss="energy", attribution="intgrad"), "needs an xdnn model"),
    (dict(loss="energy", lam=float("nan")), "--lambda must be a number ≥ 0, got nan"),
])
def test_bad_guide_flags(untrained, tiny_data, tmp_path, kw, message):
    with pytest.raises(UsageError, match=message):
        _fit("guide", tiny_data, tmp_path / "g", init_from=str(untrained["resnet18"]), **kw)
    assert not (tmp_path / "g").exists()  # refused before anything is written


def _prepare(tmp_path, name, **kw):
    path = tmp_path / f"{name}.h5"
    plan = synthetic.plan(task="multilabel", num_classes=4, spurious=None, seed=0,
                          **{"n_train": 8, "n_val": 4, "n_test": 0, **kw.pop("counts", {})})
    run_prepare(plan, path, size=32, seed=0, quiet=True, **kw)
    return path


def test_unusable_data_is_refused_up_front(untrained, tmp_path):
    empty_val = _prepare(tmp_path, "noval", bbox_frac=1.0, counts={"n_val": 0})
    with pytest.raises(MgkitError, match=r"noval.h5: the val split is empty"):
        _fit("train", empty_val, tmp_path / "t", model="resnet18")
    none_annotated = _prepare(tmp_path, "nobox", bbox_frac=0.0)
    with pytest.raises(MgkitError, match=r"nobox.h5: no training image is annotated .*--allow-unannotated"):
        _fit("guide", none_annotated, tmp_path / "g", init_from=str(untrained["resnet18"]), loss="energy")
    s = _fit("guide", none_annotated, tmp_path / "g", init_from=str(untrained["resnet18"]), loss="energy",
             epochs=1, allow_unannotated=True)
    assert s["identity"]["bbox_frac"] == 0.0 and _lines(tmp_path / "g")[-1]["train"]["loc"] == 0.0


def test_non_finite_loss_stops_with_step_and_writes_nothing(tiny_data, tmp_path):
    with pytest.raises(MgkitError, match=r"non-finite (loss|weights).* at epoch 1, step \d+.*no checkpoint was written"):
        _fit("train", tiny_data, tmp_path / "n", model="resnet18", lr=1e30, epochs=1, batch_size=4)
    assert not (tmp_path / "n" / "checkpoints").exists()


def test_explosion_in_epoch_two_keeps_the_good_checkpoints(tiny_data, tmp_path):
    """A BatchNorm running_var that turns inf at step 1 of epoch 2 stops the run naming last.pt of
    epoch 1; last.pt and best_f1.pt keep finite epoch-1 weights."""
    t = T.setup(_cfg("train", tiny_data, tmp_path / "e", model="resnet18"), DistEnv(), restart=False)
    from mgkit.data.loader import H5Split, make_loader

    loader = make_loader(H5Split(tiny_data, "train"), 8, shuffle=True, seed=0, workers=0)
    val = make_loader(H5Split(tiny_data, "val", segmentation=True), 16, shuffle=False, seed=0, workers=0)
    with Reporter(quiet=True) as rep:
        T.end_of_epoch(t, 1, T.train_one_epoch(t, loader, 1, rep), val, rep)
        with torch.no_grad():
            t.model.net.bn1.running_var.fill_(float("inf"))
        with pytest.raises(MgkitError, match=r"non-finite weights after epoch 2, step 1 \(in net.bn1.running_var\); "
                                             r"the last good checkpoint is .*last.pt \(epoch 1\)"):
            T.train_one_epoch(t, loader, 2, rep)
    for name in ("last.pt", "best_f1.pt"):
        ckpt = load_checkpoint(tmp_path / "e" / "checkpoints" / name)
        assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values()
                                          if v.is_floating_point())


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(untrained, tiny_data, tmp_path, one_thread):
    """Kill a guided run in the middle of its last epoch, re-run the same command, compare with a clean run.
    Only the killed run needs its own process; the clean run and the resumed one run here, on one thread
    as the killed process does, so all three compute bit for bit alike."""
    guide = dict(model="resnet18", init_from=str(untrained["resnet18"]), loss="energy", lam=1.0, batch_size=4)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    _fit("guide", tiny_data, clean, **guide)
    cmd = [sys.executable, "-m", "mgkit", "guide", "--data", str(tiny_data), "--out", str(killed),
           "--model", "resnet18", "--from", guide["init_from"], "--loss", "energy", "--lambda", "1",
           "--epochs", "2", "--batch-size", "4", "--eval-batch-size", "16", "--lr", "1e-3", "--workers", "0",
           "--device", "cpu", "--quiet"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        lines = (killed / "metrics.jsonl").read_text().splitlines() if (killed / "metrics.jsonl").exists() else []
        if any(json.loads(x)["epoch"] == 1 for x in lines) and (killed / "checkpoints/last.pt").exists():
            break
        time.sleep(0.05)
    time.sleep(0.5)  # well inside epoch 2 (8 steps of a guided resnet18)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(killed / "checkpoints/last.pt")["epoch"] < 2, "the run finished before it was killed"
    _fit("guide", tiny_data, killed, **guide)  # refuses to resume if its configuration differs from the CLI's
    a = load_checkpoint(clean / "checkpoints/last.pt")
    b = load_checkpoint(killed / "checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma, mb = _lines(clean), _lines(killed)
    assert [x.get("val") for x in ma] == [x.get("val") for x in mb]
    assert [x.get("metrics") for x in ma] == [x.get("metrics") for x in mb]
