"""The train/guide command line as a user meets it: one table of bad inputs, each answered with the
documented exit code, one line naming the flag or key, and nothing left behind; plus --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mgkit.cli import app

runner = CliRunner()

# The data path of refusals is never created: a refusal that mentions it instead of the bad option
# would mean the data file was opened before the options were checked.
NO_DATA = "never-read.h5"
FAST = ["--epochs", "1", "--batch-size", "8", "--eval-batch-size", "16", "--workers", "0", "--device", "cpu",
        "--lr", "1e-3", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """A 16/8-image synthetic data file at 32 px and a 1-epoch resnet18 baseline trained on it."""
    from mgkit.data.prepare import run_prepare
    from mgkit.data.sources import synthetic

    root = tmp_path_factory.mktemp("cli")
    data = root / "tiny.h5"
    plan = synthetic.plan(task="multilabel", num_classes=3, n_train=16, n_val=8, n_test=8, seed=0)
    run_prepare(plan, data, size=32, bbox_frac=1.0, seed=0, quiet=True)
    base = root / "base"
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(base), "--model", "resnet18", *FAST])
    assert r.exit_code == 0, r.output
    return {"data": data, "base": base, "ckpt": base / "checkpoints" / "best_f1.pt", "root": root}


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def _one_line_error(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


# (name, argv after the command, exit code, expected substring). {cfg:TEXT} writes TEXT to a YAML file;
# {ckpt} is the baseline checkpoint (no data is read for any of these).
REFUSALS = [
    # numbers: types and ranges, no "0 means default"
    ("epochs-0", ["train", "--epochs", "0"], 2, "--epochs must be an integer ≥ 1, got '0'"),
    ("epochs-word", ["train", "--epochs", "three"], 2, "--epochs must be an integer ≥ 1, got 'three'"),
    ("epochs-fraction", ["train", "--epochs", "2.5"], 2, "--epochs must be an integer"),
    ("batch-0", ["train", "--batch-size", "0"], 2, "--batch-size must be an integer ≥ 1, got '0'"),
    ("lr-0", ["train", "--lr", "0"], 2, "--lr must be a number > 0, got '0'"),
    ("lr-negative", ["train", "--lr", "-1e-3"], 2, "--lr must be a number > 0"),
    ("eval-batch-0", ["train", "--eval-batch-size", "0"], 2, "--eval-batch-size must be an integer ≥ 1"),
    ("workers-negative", ["train", "--workers", "-1"], 2, "--workers must be an integer ≥ 0, got '-1'"),
    ("eval-every-0", ["train", "--eval-every", "0"], 2, "--eval-every must be an integer ≥ 1"),
    ("seed-negative", ["train", "--seed", "-3"], 2, "--seed must be an integer ≥ 0"),
    ("min-f1-range", ["train", "--min-f1", "1.5"], 2, "--min-f1 must be a number between 0 and 1"),
    ("iou-threshold-nan", ["train", "--iou-threshold", "nan"], 2, "--iou-threshold must be a number between 0 and 1"),
    ("lambda-negative", ["guide", "--from", "{ckpt}", "--loss", "energy", "--lambda", "-1"], 2,
     "--lambda must be a number ≥ 0, got '-1'"),
    ("lambda-nan", ["guide", "--from", "{ckpt}", "--loss", "energy", "--lambda", "nan"], 2, "not a finite number"),
    ("lambda-inf", ["guide", "--from", "{ckpt}", "--loss", "energy", "--lambda", "inf"], 2, "not a finite number"),
    ("ig-steps-0", ["guide", "--from", "{ckpt}", "--loss", "energy", "--ig-steps", "0"], 2,
     "--ig-steps must be an integer ≥ 1"),
    ("dilate-negative", ["guide", "--from", "{ckpt}", "--loss", "energy", "--dilate", "-0.1"], 2,
     "--dilate must be a number ≥ 0"),
    # choices: one place, one message, with a suggestion
    ("loss-typo", ["guide", "--from", "{ckpt}", "--loss", "enrgy"], 2,
     "--loss must be one of energy, l1, ppce, rrr, energy-size, got 'enrgy' (did you mean energy?)"),
    ("layer", ["guide", "--from", "{ckpt}", "--loss", "energy", "--layer", "mid9"], 2, "--layer must be one of input"),
    ("attribution", ["guide", "--from", "{ckpt}", "--loss", "energy", "--attribution", "lrp"], 2,
     "--attribution must be one of ixg, bcos, gradcam, intgrad"),
    ("model", ["train", "--model", "resnet34"], 2, "--model must be one of resnet18, resnet50"),
    ("device", ["train", "--device", "tpu"], 2, "--device must be one of auto, cpu, cuda, mps"),
    ("amp-on-cpu", ["train", "--amp", "bf16", "--device", "cpu"], 2, "--amp bf16 needs a CUDA device"),
    # checks that need the model: the parent checkpoint is read, the data file is not
    ("attribution-for-model", ["guide", "--from", "{ckpt}", "--loss", "energy", "--attribution", "bcos"], 2,
     "--attribution bcos is not available for resnet18 (choose ixg, gradcam, intgrad)"),
    ("guided-intgrad", ["guide", "--from", "{ckpt}", "--loss", "energy", "--attribution", "intgrad"], 2,
     "needs an xdnn model"),
    ("eval-attribution-for-model", ["train", "--model", "resnet18", "--eval-attribution", "bcos"], 2,
     "--eval-attribution bcos is not available for resnet18"),
    # required options
    ("guide-no-loss", ["guide", "--from", "{ckpt}"], 2, "mgkit guide needs --loss"),
    ("guide-no-from", ["guide", "--loss", "energy"], 2, "mgkit guide needs --from"),
    ("missing-checkpoint", ["guide", "--from", "missing.pt", "--loss", "energy"], 1, "missing.pt: no such checkpoint"),
    # YAML: coerced to the declared type, refused naming file and key as written
    ("yaml-epochs-word", ["train", "--config", "{cfg:epochs: three\n}"], 2, "cfg.yaml: epochs must be an integer"),
    ("yaml-data-list", ["train", "--config", "{cfg:data: [1, 2]\n}"], 2, "cfg.yaml: data must be a path, got a list"),
    ("yaml-lambda-negative", ["guide", "--from", "{ckpt}", "--config", "{cfg:loss: energy\nlambda: -1e-3\n}"], 2,
     "cfg.yaml: lambda must be a number ≥ 0"),
    ("yaml-guide-key-in-train", ["train", "--config", "{cfg:loss: energy\n}"], 2,
     "'loss' is an option of mgkit guide, not of mgkit train"),
    ("yaml-unknown-key", ["train", "--config", "{cfg:epoch: 3\n}"], 2, "unknown option 'epoch' (did you mean 'epochs'?)"),
    ("yaml-not-mapping", ["train", "--config", "{cfg:- 1\n- 2\n}"], 2, "expected a mapping"),
    ("yaml-invalid", ["train", "--config", "{cfg:lr: [1\n}"], 2, "not valid YAML"),
    ("yaml-other-stage", ["train", "--config", "{cfg:stage: guide\n}"], 2, "a configuration for mgkit guide"),
    ("yaml-missing", ["train", "--config", "nope.yaml"], 2, "--config nope.yaml: no such file"),
    # click's own parsing errors: one line as well
    ("unknown-flag", ["train", "--epoch", "3"], 2, "No such option: --epoch"),
    ("missing-value", ["train", "--epochs"], 2, "Option '--epochs' requires an argument"),
    # paths
    ("out-is-file", ["train", "--out", "{file}"], 2, "is a file; a run directory is needed"),
    ("out-under-file", ["train", "--out", "{file}/run"], 2, "is a file, so no run directory can be made there"),
]


@pytest.mark.parametrize("argv,code,expected", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_refusals(tiny, tmp_path, monkeypatch, argv, code, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    out = tmp_path / "run"
    args = []
    for a in argv:
        if a.startswith("{cfg:"):
            a = _yaml(tmp_path, a[5:-1])
        args.append(a.replace("{ckpt}", str(tiny["ckpt"])).replace("{file}", "afile"))
    if "--out" not in args:
        args[1:1] = ["--out", str(out)]
    r = runner.invoke(app, [args[0], "--data", NO_DATA, *args[1:]])
    assert r.exit_code == code, r.output
    assert expected in _one_line_error(r)
    assert not out.exists()  # nothing left that could block the corrected re-run
    assert sorted(p.name for p in tmp_path.iterdir()) in (["afile"], ["afile", "cfg.yaml"])


def test_yaml_values_are_coerced_and_cli_wins(tiny, tmp_path):
    """YAML 1.1 reads 1e-3 as a string; it must still be the number 0.001. The CLI overrides the file."""
    cfg = _yaml(tmp_path, "lr: 1e-3\nepochs: '1'\nbatch-size: 8\nworkers: 0\nmodel: resnet18\nquiet: yes\n"
                          "eval_batch_size: 16\n")
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--config", cfg, "--data", str(tiny["data"]), "--out", str(out),
                            "--device", "cpu", "--lr", "2e-3"])
    assert r.exit_code == 0, r.output
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lr"] == 2e-3 and saved["epochs"] == 1 and saved["batch_size"] == 8 and saved["quiet"] is True
    assert "loss" not in saved and "lam" not in saved and "layer" not in saved  # guide options: not for train
    # a refused change on resume is named as the flag, and the refusal leaves the run as it was
    before = (out / "config.yaml").read_text()
    r = runner.invoke(app, ["train", "--config", cfg, "--data", str(tiny["data"]), "--out", str(out),
                            "--device", "cpu", "--lr", "1e-2", "--seed", "3"])
    assert r.exit_code == 1
    assert "different configuration (--lr, --seed)" in _one_line_error(r)
    assert (out / "config.yaml").read_text() == before
    # a run's own config.yaml is a valid --config for the same stage
    r = runner.invoke(app, ["train", "--config", str(out / "config.yaml"), "--epochs", "2"])
    assert r.exit_code == 0, r.output


def test_guide_yaml_lambda_and_allow_unannotated(tiny, tmp_path):
    cfg = _yaml(tmp_path, "loss: energy\nlambda: 1e-3\nallow-unannotated: true\n")
    out = tmp_path / "g"
    r = runner.invoke(app, ["guide", "--config", cfg, "--from", str(tiny["ckpt"]), "--data", str(tiny["data"]),
                            "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lam"] == 1e-3 and saved["model"] == "resnet18" and saved["allow_unannotated"] is True


def test_interrupt_says_the_run_can_be_resumed(tiny, tmp_path, monkeypatch):
    import mgkit.engine.trainer as trainer

    def interrupted(cfg, restart=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "fit", interrupted)
    r = runner.invoke(app, ["train", "--data", str(tiny["data"]), "--out", str(tmp_path / "r"), "--model", "resnet18"])
    assert r.exit_code == 130
    line = _one_line_error(r)
    assert "re-run the same command to resume" in line and "nothing was written" not in line


def test_prepare_keeps_its_interrupt_message(tmp_path, monkeypatch):
    import mgkit.data.prepare as prepare

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "run_prepare", interrupted)
    r = runner.invoke(app, ["prepare", "synthetic", "--out", str(tmp_path / "x.h5"), "--train", "2", "--val", "2",
                            "--test", "2", "--size", "16", "--quiet"])
    assert r.exit_code == 130 and "nothing was written at the output path" in _one_line_error(r)


@pytest.mark.parametrize("command", ["train", "guide"])
def test_help_fits_80_columns_and_shows_defaults(command):
    r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    text = r.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "…" not in text and "<bool>" not in text
    assert "--eval-batch-size INTEGER" in text and "--channels-last / --no-channels-last" in text
    assert "see README" not in text
    flat = re.sub(r"\s+", " ", text).replace("- ", "-")  # click wraps after hyphens
    assert "[default: per model family: 1e-4 B-cos, 1e-5 others]" in flat  # --lr
    assert "[default: per model family: 64 B-cos, 16 others]" in flat  # --batch-size
    assert "--workers INTEGER" in text and "[default: 0 on the CPU, up to 8 on CUDA]" in flat
    assert "One of: resnet18, resnet50, bcos-resnet18" in flat  # --model choices listed
    if command == "guide":
        assert "--loss [energy|l1|ppce|rrr|energy-size]" in text
        assert "--layer [input|mid1|mid2|mid3|final]" in text and "[default: 1e-3]" in flat  # --lambda
        assert "--allow-unannotated / --no-allow-unannotated" in text
    else:
        assert "--loss" not in text and "--lambda" not in text
        assert "[default: per model family: 300 B-cos, 100 others]" in flat  # --epochs


# ------------------------------------------------------------------------------------------- own inputs
# No stage writes over one of its own inputs: each case names an input as the output. The inputs are
# placeholders (a few bytes): the refusal must come before any of them is read, and leave them unchanged.

OWN_INPUT = [
    ("prepare", ["prepare", "coco", "--train-ann-file", "in.json", "--train-image-dir", ".", "--out", "in.json"],
     "--out in.json is also an input"),
    ("train", ["train", "--data", "in.h5", "--out", "in.h5"], "--out in.h5 is a file"),
    ("guide", ["guide", "--from", "in.pt", "--loss", "energy", "--data", "in.h5", "--out", "in.pt"],
     "--out in.pt is a file"),
    ("evaluate", ["evaluate", "in.pt", "--data", "in.h5", "--out", "in.pt"], "--out in.pt is also an input"),
    ("evaluate-data", ["evaluate", "in.pt", "--data", "in.h5", "--out", "./in.h5"], "--out in.h5 is also an input"),
    ("evaluate-baseline", ["evaluate", "in.pt", "--data", "in.h5", "--baseline", "in.json", "--out", "in.json"],
     "--out in.json is also an input"),
    ("evaluate-pareto", ["evaluate", "--pareto", "run", "--data", "in.h5", "--out", "run/pareto/pareto.json"],
     "--out run/pareto/pareto.json is a file inside run, an input"),
    ("shift", ["shift", "in.pt", "--data", "in.h5", "--out", "in.pt"], "--out in.pt is also an input"),
    ("export", ["export", "in.pt", "--out", "in.pt"], "--out in.pt is also an input"),
    ("explain", ["explain", "in.png", "--data", "in.h5", "--out", "in.png"], "--out in.png is also an input"),
    ("explain-sidecar", ["explain", "in.pt", "--data", "in.json", "--out", "in.png"],
     "the sidecar of --out in.json is also an input"),
    ("tables-report", ["tables", "in.json", "--out", "t", "--report", "in.json"], "--report in.json is also an input"),
    ("tables-out", ["tables", "in.json", "--out", "in.json"], "--out in.json is also an input"),
]


@pytest.mark.parametrize("argv,expected", [c[1:] for c in OWN_INPUT], ids=[c[0] for c in OWN_INPUT])
def test_no_stage_writes_over_its_own_input(tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    inputs = {name: f"input {name}" for name in ("in.json", "in.h5", "in.pt", "in.png", "run/pareto/pareto.json")}
    for name, text in inputs.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, r.output
    assert expected in _one_line_error(r)
    files = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    assert files == inputs  # untouched, nothing added


def test_explain_refuses_a_sidecar_folder_before_drawing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fig.json").mkdir()
    r = runner.invoke(app, ["explain", "never.pt", "--data", NO_DATA, "--out", "fig.png"])
    assert r.exit_code == 2 and "the sidecar of --out fig.json is a directory" in _one_line_error(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.json"]


def test_evaluate_refuses_a_bad_out_before_reading_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["evaluate", "never.pt", "--data", NO_DATA, "--out", "afile/r.json"])
    assert r.exit_code == 2 and "--out afile/r.json: afile is a file, not a folder" in _one_line_error(r)
