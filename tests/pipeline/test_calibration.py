"""The λ calibration step: calibrate_lambda.py outputs merged into lambda.yaml (each value with its
source), and the planner's guided runs and ablation sweeps taken from it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mgkit.pipeline import calibration
from mgkit.pipeline.experiments import build
from mgkit.pipeline.planner import main as planner_main
from mgkit.pipeline.scale import Scale

PAPER = Path(__file__).resolve().parents[2] / "pipelines" / "scales" / "paper.yaml"


def _part(tmp: Path, config: str, grids: dict) -> Path:
    """A calibrate_lambda.py --out file with the given {loss: {layer: grid}}."""
    doc = {"config": config, "checkpoint": f"runs/base/{config}/best_f1.pt", "attribution": "x",
           "ratios": [0.1, 1.0, 10.0],
           "lambda": {loss: {y: {"bce_grad": 1.0, "loc_grad": 1.0, "lambda_star": g[1], "grid": g}
                             for y, g in layers.items()} for loss, layers in grids.items()}}
    path = tmp / f"{config}.json"
    path.write_text(json.dumps(doc))
    return path


def test_merge_names_each_source_and_appends_published_values(tmp_path):
    scale = Scale.load(PAPER)
    parts = [_part(tmp_path, "bcos-bcos", {"energy": {"input": [0.02, 0.2, 2.0], "mid2": [0.5, 5.0, 50.0]}}),
             _part(tmp_path, "vanilla-gradcam", {"l1": {"final": [0.03, 0.3, 3.0]}, "energy": {"final": [1, 2, 3]}})]
    flat = json.loads(parts[1].read_text())  # a flat term: calibrate_lambda.py gives no grid
    flat["lambda"]["energy"]["final"].update(grid=None, lambda_star=None, note="not measurable: |dLoc| 0")
    parts[1].write_text(json.dumps(flat))
    doc = calibration.merge(scale, parts)
    g = doc["grids"]
    vals = lambda e: [(v["lambda"], v["source"].split(":")[0]) for v in e["values"]]  # noqa: E731
    # the published 1e-3 (reference README) joins B-cos Energy/input after the three calibrated values
    assert vals(g["bcos-bcos"]["energy"]["input"]) == [(0.02, "calibrated"), (0.2, "calibrated"),
                                                       (2.0, "calibrated"), (0.001, "published")]
    assert g["bcos-bcos"]["energy"]["input"]["lambda_star"] == 0.2
    assert vals(g["bcos-bcos"]["energy"]["mid2"]) == [(0.5, "calibrated"), (5.0, "calibrated"), (50.0, "calibrated")]
    assert vals(g["vanilla-gradcam"]["l1"]["final"])[0] == (0.03, "calibrated")
    # nothing measured: the scale file's grid, marked as a guess; GradCAM has no input grid at all
    assert vals(g["xdnn-intgrad"]["rrr"]["final"]) == [(1e-7, "scale-file guess"), (1e-6, "scale-file guess"),
                                                       (1e-5, "scale-file guess")]
    assert "input" not in g["vanilla-gradcam"]["energy"]
    assert [v["source"] for v in g["vanilla-gradcam"]["energy"]["final"]["values"]] == \
        ["scale-file guess (not measurable: |dLoc| 0)"] * 3
    assert set(g["bcos-bcos"]["energy"]) == {"input", "final", "mid1", "mid2", "mid3"}


def test_planner_guides_with_the_calibrated_grids(tmp_path):
    scale = Scale.load(PAPER)
    parts = [_part(tmp_path, "bcos-bcos", {"energy": {"input": [0.02, 0.2, 2.0], "final": [0.04, 0.4, 4.0]},
                                           "l1": {"input": [0.07, 0.7, 7.0]}})]
    lam = tmp_path / "lambda.yaml"
    assert calibration.main([str(PAPER), *map(str, parts), "--out", str(lam)]) == 0
    plan = build(calibration.apply(scale, calibration.load(lam)), "voc")
    guided = [j.target for j in plan.jobs.values() if j.kind == "guide"]
    lams = lambda prefix: sorted({t[len(prefix):].split("lam")[1].split("/")[0] for t in guided if t.startswith(prefix)})  # noqa: E731
    assert lams("$(RUNS)/main/bcos-bcos/input/energy/") == ["0.001", "0.02", "0.2", "2.0"]
    assert lams("$(RUNS)/main/bcos-bcos/final/energy/") == ["0.04", "0.4", "4.0"]
    # the ablations sweep the calibrated grid of their configuration and layer, one Pareto merge each
    assert lams("$(RUNS)/annotations/l1/f0.01-") == ["0.07", "0.7", "7.0"]
    assert lams("$(RUNS)/depth/energy/final-") == ["0.04", "0.4", "4.0"]
    ev = plan.jobs["$(RESULTS)/annotations/bcos-bcos-input-energy-f0.1.json"]
    assert ev.command.count("$(RUNS)/annotations/energy/f0.1-lam") == 4 and "--pareto" in ev.command
    # uncalibrated grids stay the scale's
    assert lams("$(RUNS)/main/vanilla-ixg/input/rrr/") == ["0.0001", "1e-05", "1e-06"]
    # the report cites the file; the jobs file marks the grids as calibrated
    out = tmp_path / "jobs.mk"
    assert planner_main([str(PAPER), "--dataset", "voc", "--lambda-file", str(lam), "--out", str(out)]) == 0
    text = out.read_text()
    assert "CALIBRATED := 1" in text and "--lambdas $(RESULTS)/lambda.yaml" in text
    assert planner_main([str(PAPER), "--dataset", "voc", "--lambda-file", str(tmp_path / "none"),
                         "--out", str(out)]) == 0
    assert "CALIBRATED := 0" in out.read_text()


def test_report_section_lists_every_value_with_its_source(tmp_path):
    doc = calibration.merge(Scale.load(PAPER), [_part(tmp_path, "bcos-bcos", {"energy": {"input": [0.02, 0.2, 2.0]}})])
    lines = calibration.markdown(yaml.safe_load(yaml.safe_dump(doc)))
    row = next(x for x in lines if x.startswith("| bcos-bcos | energy | input |"))
    assert "0.02 (calibrated)" in row and "0.001 (published: reference README" in row and "| 0.2 |" in row
    assert any(x.startswith("| vanilla-ixg | rrr | input | — | ") and "scale-file guess" in x for x in lines)
