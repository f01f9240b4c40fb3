"""The scale files as data: the keys the pipeline reads are present and agree with each other."""

from pathlib import Path

import pytest
import yaml

SCALES = Path(__file__).resolve().parents[2] / "pipelines" / "scales"


def load(name: str) -> dict:
    return yaml.safe_load((SCALES / f"{name}.yaml").read_text())


def grid(s: dict, config: str, loss: str, layer: str) -> list[float]:
    """As pipelines/common.mk's `grid`: the configuration's own grid, else the default one."""
    own = s.get("lambda_by_config", {}).get(config, {}).get(loss, {}).get(layer)
    return own if own is not None else s["lambda"][loss][layer]


@pytest.mark.parametrize("name, pretrained", [("paper", True), ("demo", False), ("tiny", False)])
def test_scale_keys_agree(name: str, pretrained: bool) -> None:
    s = load(name)
    assert {f: v["pretrained"] for f, v in s["family"].items()} == dict.fromkeys(s["family"], pretrained)
    assert list(s["config_layers"]) == s["configs"]
    assert sorted({y for ys in s["config_layers"].values() for y in ys}) == sorted(s["layers"])
    if "vanilla-gradcam" in s["config_layers"]:
        assert s["config_layers"]["vanilla-gradcam"] == ["final"]  # GradCAM only at the final layer (paper)
    abl, depth = s["ablation"], s["depth"]
    i = abl["lambda_index"] - 1
    assert set(abl["lambdas"]) == set(abl["losses"]) and set(depth["lambdas"]) == set(depth["layers"])
    for loss in abl["losses"]:
        full = grid(s, abl["config"], loss, abl["layer"])
        assert full[i] in abl["lambdas"][loss] and set(abl["lambdas"][loss]) <= set(full)
    for layer in depth["layers"]:
        full = grid(s, abl["config"], depth["loss"], layer)
        assert full[i] in depth["lambdas"][layer] and set(depth["lambdas"][layer]) <= set(full)


def test_paper_scale_sweeps_ablations_over_the_main_grid() -> None:
    s = load("paper")
    abl = s["ablation"]
    for loss in abl["losses"]:
        assert abl["lambdas"][loss] == grid(s, abl["config"], loss, abl["layer"])
    assert 0.001 in s["lambda"]["energy"]["input"]  # the reference README's example value
    assert s["config_layers"] == {"vanilla-ixg": ["input", "final"], "vanilla-gradcam": ["final"],
                                  "xdnn-intgrad": ["input", "final"], "bcos-bcos": ["input", "final"]}


@pytest.mark.parametrize("name", ["demo", "tiny"])
def test_issue20_keys_are_consistent(name: str) -> None:
    """Pretraining, annotation counts, the shift setting, claim 11's runs and claim 9's timings."""
    s = load(name)
    assert set(s["pretrain"]["families"]) <= set(s["family"]) and s["pretrain"]["epochs"] >= 1
    counts = s["annotation_counts"]
    assert set(counts) <= set(s["annotations"]) and all(0 < n <= s["data"]["train"] for n in counts.values())
    fracs = sorted(counts)
    assert [counts[f] for f in fracs] == sorted(counts.values())  # a larger fraction never has fewer images
    sh = s["shift"]
    assert 0 < sh["bbox_count"] <= sh["data"]["train"] and 0.5 < sh["data"]["spurious"] < 1
    assert len(sh["seeds"]) >= 2
    t = s["targets"]
    assert t["config"] in s["configs"] and t["layer"] in s["config_layers"][t["config"]]
    assert set(t["losses"]) <= set(s["losses"])
    assert set(s["timings"]["families"]) <= {"vanilla", "bcos"}  # benchmarks/bench_train.py's families
    assert "input" in s["timings"]["layers"] and len(s["timings"]["layers"]) >= 2


def test_demo_counts_are_the_papers() -> None:
    s = load("demo")
    assert s["annotation_counts"][0.01] == 25 and s["shift"]["bbox_count"] == 48  # 1 % of VOC, of Waterbirds
    assert s["shift"]["data"] == {"train": 1000, "spurious": 0.8} and s["data"]["size"] == 48  # the long study's
