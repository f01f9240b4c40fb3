"""The run configuration: declarations, coercion, merging, per-family defaults, resume comparison."""

from __future__ import annotations

import math
import re

import pytest

from mgkit import config as C
from mgkit.errors import UsageError


@pytest.mark.parametrize("name,value,expected", [
    ("lr", "1e-3", 1e-3),  # YAML 1.1 reads 1e-3 as a string
    ("lr", 1e-3, 1e-3),
    ("lr", 2, 2.0),
    ("lam", "0", 0.0),  # λ = 0 is a valid (unguided) weight
    ("epochs", "3", 3),
    ("epochs", 3.0, 3),
    ("epochs", " 7 ", 7),
    ("seed", "12345678901234567890", 12345678901234567890),
    ("pretrained", "yes", True),
    ("pretrained", "off", False),
    ("pretrained", 1, True),
    ("loss", "energy-size", "energy-size"),
    ("data", "data/x.h5", "data/x.h5"),
    ("min_f1", "1", 1.0),
])
def test_coerce_accepts(name, value, expected):
    got = C.coerce(name, value, "X")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("name,value,message", [
    ("lr", "three", "X must be a number > 0, got 'three'"),
    ("lr", 0, "X must be a number > 0, got 0"),
    ("lr", True, "X must be a number > 0, got a boolean"),
    ("lam", "nan", "not a finite number"),
    ("lam", float("inf"), "not a finite number"),
    ("lam", -1e-3, "X must be a number ≥ 0"),
    ("epochs", 2.5, "X must be an integer ≥ 1, got 2.5"),
    ("epochs", 0, "X must be an integer ≥ 1, got 0"),
    ("epochs", [3], "got a list"),
    ("data", [1, 2], "X must be a path, got a list"),
    ("data", "", "X must be a path"),
    ("loss", 3, "X must be one of energy, l1, ppce, rrr, energy-size, got 3"),
    ("layer", "Input", "(did you mean input?)"),
    ("pretrained", "maybe", "X must be true or false"),
    ("iou_threshold", 1.5, "X must be a number between 0 and 1"),
])
def test_coerce_refuses(name, value, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        C.coerce(name, value, "X")


def test_declared_choices_are_the_registry_names():
    from mgkit import registry

    assert C.OPTIONS["model"].choices == registry.MODEL_NAMES
    assert C.OPTIONS["loss"].choices == registry.LOSSES
    assert C.OPTIONS["attribution"].choices == C.OPTIONS["eval_attribution"].choices == registry.ATTRIBUTIONS
    assert C.OPTIONS["layer"].choices == C.OPTIONS["eval_layer"].choices == registry.LAYERS


def test_every_option_declared_once_with_a_distinct_flag():
    flags = [o.flag for o in C.OPTIONS.values()]
    assert len(flags) == len(set(flags))
    assert set(C.OPTIONS) == C.FIELD_NAMES - {"stage"}
    assert C.OPTIONS["lam"].flag == "--lambda" and C.OPTIONS["init_from"].flag == "--from"
    assert "loss" not in C.options_for("train") and "pretrained" not in C.options_for("guide")


def test_yaml_precedence_and_spellings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lambda: 1e-3\nbatch-size: 8\neval_batch_size: 4\nloss: l1\nfrom: p.pt\ndata: d.h5\nout: o\n"
                    "lr: null\n")
    cfg = C.build_config("guide", {"batch_size": "16", "lr": None}, path)
    assert cfg.lam == 1e-3 and cfg.batch_size == 16 and cfg.eval_batch_size == 4 and cfg.loss == "l1"
    assert cfg.init_from == "p.pt" and cfg.lr is None  # None: the family default, filled by resolve()


def test_cli_option_of_the_other_stage_refused():
    with pytest.raises(UsageError, match="--lambda is an option of mgkit guide, not of mgkit train"):
        C.build_config("train", {"data": "d", "out": "o", "lam": 1.0}, None)


def test_required_options():
    with pytest.raises(UsageError, match="--data is required"):
        C.build_config("train", {"out": "o"}, None)
    with pytest.raises(UsageError, match="--out is required"):
        C.build_config("train", {"data": "d"}, None)


def test_resolve_fills_family_defaults_only_where_not_given():
    cfg = C.resolve(C.build_config("train", {"data": "d", "out": "o", "model": "bcos-resnet18"}, None))
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.attribution, cfg.eval_attribution) == (1e-4, 64, 300, "bcos",
                                                                                          "bcos")
    cfg = C.resolve(C.build_config("guide", {"data": "d", "out": "o", "init_from": "p", "loss": "energy",
                                             "lr": "5e-5", "layer": "mid2"}, None), parent_model="xdnn-resnet18")
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.epochs) == ("xdnn-resnet18", 5e-5, 16, 50)
    assert cfg.attribution == "intgrad" and cfg.eval_layer == "mid2"
    assert C.resolve(cfg) == cfg  # idempotent: fit() resolves what library callers pass, resolved or not
    assert C.resolve(C.build_config("train", {"data": "d", "out": "o"}, None)).model == "resnet50"


def test_differences_name_flags_and_allow_resumable_changes():
    base = C.resolve(C.build_config("guide", {"data": "d", "out": "o", "init_from": "p", "loss": "energy"}, None),
                     parent_model="resnet18")
    import dataclasses

    other = dataclasses.replace(base, lam=0.5, batch_size=4, workers=7, epochs=99, device="cpu", quiet=True)
    assert base.differences(other) == ["--batch-size", "--lambda"]
    assert base.difference_details(other) == ["--batch-size 16 (now 4)", "--lambda 1e-3 (now 0.5)"]
    saved = C.config_from_dict(base.stage_dict())
    assert saved.differences(base) == []  # what config.yaml records is enough to compare on resume


def test_help_defaults_are_generated_from_the_family_table():
    assert C.default_text("lr", "train") == "per model family: 1e-4 B-cos, 1e-5 others"
    assert C.default_text("epochs", "guide") == "50"
    assert C.default_text("lam", "guide") == "1e-3" and C.default_text("workers", "train") == "0 on the CPU, up to 8 on CUDA"
    assert math.isclose(float(C.default_text("lam", "guide")), C.DEFAULTS["lam"])
