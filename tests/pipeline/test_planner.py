"""The planner: experiment records + a scale file -> one explicit Make rule per job."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mgkit.errors import UsageError
from mgkit.pipeline.experiments import build
from mgkit.pipeline.planner import render
from mgkit.pipeline.scale import Scale

ROOT = Path(__file__).resolve().parents[2]


def tiny() -> dict:
    return yaml.safe_load((ROOT / "pipelines/scales/tiny.yaml").read_text())


def test_family_names_with_a_dash_are_not_split():
    raw = tiny()
    raw["family"]["my-net"] = dict(raw["family"]["vanilla"], model="resnet34")
    raw["configs"] = ["my-net-ixg", {"name": "odd", "family": "bcos", "attribution": "bcos"}, "bcos-bcos"]
    raw["lambda_by_config"] = {"odd": {"energy": {"input": [7.0, 8.0]}}}
    s = Scale(raw)
    c = s.config("my-net-ixg")
    assert (c.family, c.attribution) == ("my-net", "ixg") and s.family(c).model == "resnet34"
    odd = s.config({"name": "odd", "family": "bcos", "attribution": "bcos"})
    assert s.grid(odd, "energy", "input") == ["7.0", "8.0"] and s.grid(odd, "l1", "input") == ["0.1", "1.0"]
    plan = build(s, "synthetic")
    cmds = [j.command for j in plan.jobs.values()]
    assert any("--model resnet34" in x for x in cmds) and "$(RUNS)/base/my-net/summary.json" in plan.jobs
    assert any("main/odd/input/energy/lam8.0 " in x for x in cmds)
    with pytest.raises(UsageError, match="does not start with a family"):
        s.config("nofamily-ixg")


def test_every_job_is_one_rule_and_gpu_jobs_go_through_the_launcher():
    text = render(build(Scale(tiny()), "synthetic"), "tiny.yaml")
    assert "$(call" not in text and "$(eval" not in text
    rules = re.findall(r"^(\S+): (.*)\n((?:\t.*\n)+)", text, re.M)
    targets = [r[0] for r in rules]
    assert len(targets) == len(set(targets))
    assert rules[0][0] == "_calibrate" and rules[0][2] == "\t@:\n"  # tiny has no calibration step
    for target, _deps, recipe in rules[1:]:
        command = next(x for x in recipe.splitlines() if "$(MGKIT)" in x)
        stage = command.split("$(MGKIT) ")[1].split()[0]
        assert ("$(LAUNCH) --name" in command) == (stage in ("train", "guide", "evaluate", "shift", "explain")), target
    n_runs = sum(1 for t in targets if t.endswith("summary.json"))
    assert n_runs == 33 and text.count("(job 33 of 33)") == 1


def test_voc_plan_prepares_from_its_root():
    plan = build(Scale(tiny()), "voc")
    prepare = plan.jobs["$(DATA_DIR)/multilabel-f1.0.h5"].command
    assert prepare.startswith("prepare voc --root $(VOC_ROOT) --size 32")
    # $(WATERBIRDS): read from WB_ROOT or built from CUB_ROOT and PLACES_ROOT (pipelines/common.mk)
    assert plan.jobs["$(DATA_DIR)/birds-f0.1.h5"].command.startswith("prepare $(WATERBIRDS) --task bird --size 32")


def test_pretrained_families_start_from_imagenet_weights():
    raw = tiny()
    raw["family"]["bcos"]["pretrained"] = True
    plan = build(Scale(raw), "synthetic")
    assert "--model bcos-resnet18 --pretrained " in plan.jobs["$(RUNS)/base/bcos/summary.json"].command
    assert "--pretrained" not in plan.jobs["$(RUNS)/base/vanilla/summary.json"].command
    assert not any("--pretrained" in j.command for j in plan.jobs.values() if j.kind == "guide")
