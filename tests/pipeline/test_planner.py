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
        command = next((x for x in recipe.splitlines() if "$(MGKIT)" in x), None)
        if command is None:  # claim 9's benchmark, timed where make runs
            assert target == "$(RESULTS)/timings.jsonl" and "$(LAUNCH)" not in recipe
            continue
        stage = command.split("$(MGKIT) ")[1].split()[0]
        assert ("$(LAUNCH) --name" in command) == (stage in ("train", "guide", "evaluate", "shift", "explain")), target
    n_runs = sum(1 for t in targets if t.endswith("summary.json"))
    # 33 of the main grid, ablations and one shift seed, 2 pretraining runs, 6 of the second shift seed,
    # 2 --targets all runs
    assert n_runs == 43 and text.count("(job 43 of 43)") == 1


def test_voc_plan_prepares_from_its_root():
    plan = build(Scale(tiny()), "voc")
    prepare = plan.jobs["$(DATA_DIR)/multilabel-f1.0.h5"].command
    assert prepare.startswith("prepare voc --root $(VOC_ROOT) --size 32")
    birds = plan.jobs["$(DATA_DIR)/birds-f0.1.h5"].command
    # $(WATERBIRDS): read from WB_ROOT or built from CUB_ROOT and PLACES_ROOT (pipelines/common.mk)
    assert birds.startswith("prepare $(WATERBIRDS) --task bird --size 32")
    # the built-in data's counts, cue agreement and sizes do not apply to real data sets; no cue-free pretraining
    assert "--bbox-count" not in birds and "--spurious" not in birds and "--train" not in birds
    assert not any("pretrain" in t or "--weights" in j.command for t, j in plan.jobs.items())


def test_pretrained_families_start_from_imagenet_weights():
    raw = tiny()
    del raw["pretrain"]
    raw["family"]["bcos"]["pretrained"] = True
    plan = build(Scale(raw), "synthetic")
    assert "--model bcos-resnet18 --pretrained " in plan.jobs["$(RUNS)/base/bcos/summary.json"].command
    assert "--pretrained" not in plan.jobs["$(RUNS)/base/vanilla/summary.json"].command
    assert not any("--pretrained" in j.command for j in plan.jobs.values() if j.kind == "guide")
    # with cue-free pretraining too, the ImageNet start goes to the pretraining run, the baseline loads its result
    raw = tiny()
    raw["family"]["bcos"]["pretrained"] = True
    plan = build(Scale(raw), "synthetic")
    assert "--model bcos-resnet18 --pretrained " in plan.jobs["$(DATA_DIR)/pretrain/bcos/summary.json"].command
    assert "--pretrained" not in plan.jobs["$(RUNS)/base/bcos/summary.json"].command


def test_main_baselines_load_the_cue_free_backbone_made_once_under_data():
    plan = build(Scale(tiny()), "synthetic")
    data = plan.jobs["$(DATA_DIR)/pretrain-f1.0.h5"].command
    assert data.startswith("prepare synthetic --task pretrain --size 32 --train 16 --val 8 --test 8 ")
    for fam, model in (("vanilla", "resnet18"), ("bcos", "bcos-resnet18")):
        pre = plan.jobs[f"$(DATA_DIR)/pretrain/{fam}/summary.json"]
        assert pre.deps == ["$(DATA_DIR)/pretrain-f1.0.h5"]
        assert f"--model {model} --epochs 1 " in pre.command and "--out $(DATA_DIR)/pretrain/" in pre.command
        base = plan.jobs[f"$(RUNS)/base/{fam}/summary.json"]
        assert f"--weights $(DATA_DIR)/pretrain/{fam}/checkpoints/best_f1.pt " in base.command
        assert f"$(DATA_DIR)/pretrain/{fam}/summary.json" in base.deps
        assert "main" in pre.experiments  # `make plan` counts it with the main baselines
    # the birds task has 2 classes, the backbones 6: the shift baselines (2 tasks x 2 seeds, and the demo's
    # set) train from scratch
    shift_bases = [j for t, j in plan.jobs.items() if j.kind == "train" and "/shift/" in t]
    assert len(shift_bases) == 5 and not any("--weights" in j.command for j in shift_bases)
    # a scale without `pretrain` (or a family outside its list) trains its baselines from scratch
    raw = tiny()
    raw["pretrain"]["families"] = ["bcos"]
    plan = build(Scale(raw), "synthetic")
    assert "--weights" not in plan.jobs["$(RUNS)/base/vanilla/summary.json"].command
    assert "$(DATA_DIR)/pretrain/vanilla/summary.json" not in plan.jobs


def test_annotation_counts_and_the_shift_setting_reach_prepare():
    plan = build(Scale(tiny()), "synthetic")
    ann = plan.jobs["$(DATA_DIR)/multilabel-f0.1-n3.h5"].command
    assert "--task multilabel --size 32 --train 16 " in ann and "--bbox-count 3 --bbox-frac 0.1 " in ann
    assert any("--data $(DATA_DIR)/multilabel-f0.1-n3.h5 " in j.command for j in plan.jobs.values() if j.kind == "guide")
    for task in ("birds", "birds-place"):
        birds = plan.jobs[f"$(DATA_DIR)/{task}-f0.1-n3.h5"].command
        assert f"--task {task} --size 32 --train 24 --val 8 --test 8 --spurious 0.8 --bbox-count 3 --bbox-frac 0.1 " \
            in birds
    # both seeds of every shift set, each evaluated
    for seed in (0, 1):
        assert f"$(RESULTS)/shift/bcos-bcos-birds-place-energy-s{seed}.json" in plan.results["shift"]
        assert f"--seed {seed} " in plan.jobs[f"$(RUNS)/shift/bcos-bcos/birds/base-s{seed}/summary.json"].command
    # without counts: the fraction alone, as before
    raw = tiny()
    del raw["annotation_counts"]
    assert "$(DATA_DIR)/multilabel-f0.1.h5" in build(Scale(raw), "synthetic").jobs


def test_targets_all_runs_beside_the_main_front_for_claim_11():
    plan = build(Scale(tiny()), "synthetic")
    runs = [t for t, j in plan.jobs.items() if j.kind == "guide" and "--targets all" in j.command]
    assert runs == [f"$(RUNS)/targets/bcos-bcos/input/energy/all-lam{lam}/summary.json" for lam in ("0.01", "0.1")]
    assert plan.results["targets"] == ["$(RESULTS)/targets/bcos-bcos-input-energy-all.json"]
    ev = plan.jobs["$(RESULTS)/targets/bcos-bcos-input-energy-all.json"].command
    assert "--experiment targets" in ev and ev.count("/all-lam") == 2
    assert "$(RESULTS)/main/bcos-bcos-input-energy.json" in plan.results["main"]
    assert not any("--targets" in j.command for t, j in plan.jobs.items() if "/targets/" not in t)
    raw = tiny()
    del raw["targets"]
    assert build(Scale(raw), "synthetic").results["targets"] == []


def test_timings_run_alone_after_every_result_and_feed_the_tables():
    text = render(build(Scale(tiny()), "synthetic"), "tiny.yaml")
    rule = re.search(r"^\$\(RESULTS\)/timings.jsonl: (.*)\n((?:\t.*\n)+)", text, re.M)
    assert rule.group(1) == "$(PAPER_RESULTS) $(figures_RESULTS)"
    recipe = rule.group(2)
    # one benchmark per layer, each on the scale's own model of the family, all grouped in one shell list
    flags = "--size 32 --batch 2 --steps 1 --warmup 1 --threads 1 --json"
    model = Scale(tiny()).families["bcos"].model
    bench = "$(BIN)/python benchmarks/bench_train.py --one guided/bcos/{} --model %s %s" % (model, flags)
    assert (f"{{ {bench.format('input')} $(if $(filter cuda,$(DEVICE)),--device cuda) | tail -n 1 && "
            f"{bench.format('mid2')} $(if $(filter cuda,$(DEVICE)),--device cuda) | tail -n 1; }}") in recipe
    assert "mv $(RESULTS)/timings.log.out $(RESULTS)/timings.jsonl" in recipe
    tables = re.search(r"^\$\(RESULTS\)/paper-tables.md: (.*)\n\t.*\n\t.*\n\t(.*)\n", text, re.M)
    assert "$(RESULTS)/timings.jsonl" in tables.group(1) and "--timings $(RESULTS)/timings.jsonl" in tables.group(2)
    demo = re.search(r"^\$\(RESULTS\)/demo.md: (.*)\n", text, re.M)
    assert "timings" not in demo.group(1)
    raw = tiny()
    del raw["timings"]
    text = render(build(Scale(raw), "synthetic"), "tiny.yaml")
    assert "timings" not in text


def test_timings_of_a_family_the_scale_lacks_are_refused_in_one_line():
    raw = tiny()
    raw["timings"]["families"] = ["nosuch"]
    with pytest.raises(UsageError, match=r"^<scale>: timings names family 'nosuch', which is not under `family:`$"):
        render(build(Scale(raw), "synthetic"), "tiny.yaml")


@pytest.mark.parametrize("key, field", [("pretrain", "epochs"), ("targets", "layer"), ("timings", "steps")])
def test_an_incomplete_issue20_key_is_refused_in_one_line(key, field):
    raw = tiny()
    del raw[key][field]
    with pytest.raises(UsageError, match=rf"^<scale>: {key} has no '{field}' \(it needs "):
        render(build(Scale(raw), "synthetic"), "tiny.yaml")
