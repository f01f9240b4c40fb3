"""Scale files of a few images for the pipeline tests: MICRO (one configuration, loss, layer and λ,
every ablation empty), and variants of it written as changes to its top-level keys."""

from __future__ import annotations

import copy

import yaml

MICRO = {
    "data": {"size": 24, "train": 12, "val": 8, "test": 8, "seed": 0},
    "family": {"vanilla": {"model": "resnet18", "lr": 1.0e-3, "batch": 8, "base_epochs": 1, "guide_epochs": 1}},
    "configs": ["vanilla-ixg"],
    "losses": ["energy"],
    "layers": ["input"],
    "lambda": {"energy": {"input": [0.5]}},
    "ablation": {"config": "vanilla-ixg", "layer": "input", "lambda_index": 1, "losses": ["energy"]},
    "annotations": [],
    "dilation": [],
    "depth": {"loss": "energy", "layers": []},
    "shift": {"config": "vanilla-ixg", "layer": "input", "base_epochs": 1, "bbox_frac": 0.5, "seeds": [],
              "losses": [], "tasks": []},
    "explain": {"n": 2},
}


def micro_yaml(**changes) -> str:
    """MICRO with the given top-level keys replaced or added, as the text of a scale file."""
    scale = copy.deepcopy(MICRO)
    scale.update(copy.deepcopy(changes))
    return yaml.safe_dump(scale, sort_keys=False)
