"""The names mgkit knows and the facts of each model family, in one torch-free place.

Everything that lists models, losses, attribution methods or layers, and everything that needs a
family's defaults or label (`--help`, option checks, the report's orderings), reads them here; importing
this module costs nothing, so `--help` stays fast. `mgkit.models` attaches the network builders and the
torch-side family behaviour to these names, `mgkit.losses` the loss formulas, `mgkit.attribution` the
methods; each checks at import that it covers exactly the names listed here.

To add a model family: one `FamilyFacts` record in `FAMILIES`, its model names in `MODELS`, and the
builders and `Family` record in `mgkit.models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LAYERS: tuple[str, ...] = ("input", "mid1", "mid2", "mid3", "final")
"""Guidance layers: the input, then the outputs of ResNet stages layer1..layer4 (paper spec §3.2)."""

LOSSES: tuple[str, ...] = ("energy", "l1", "ppce", "rrr", "energy-size")
"""Localization losses, in the order the report lists them."""

ATTRIBUTIONS: tuple[str, ...] = ("ixg", "bcos", "gradcam", "intgrad")
"""Built-in attribution methods; captum methods are spelled captum:NAME on top of these."""

CAPTUM_PREFIX = "captum:"

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class FamilyFacts:
    """What is known about a model family without building a network.

    Training defaults and where they come from (paper spec §6):
    - B-cos: lr 1e-4, batch 64, 300 baseline epochs, 50 guided epochs: the reference README's VOC example.
    - vanilla and X-DNN: lr 1e-5, batch 16, 100 epochs: the reference's argparse defaults (the paper's
      supplement with per-backbone settings could not be read); guided fine-tuning 50 epochs as for B-cos.
    """

    name: str
    label: str  # as tables and help texts print it
    attributions: tuple[str, ...]  # attributions this family supports
    default_attribution: str
    exact_intgrad: bool  # IntGrad is exact in one pass (positively homogeneous network: X-DNN)
    colour_explanations: bool  # its dynamic linear weights can be drawn in colour (B-cos; explain figures)
    lr: float
    batch_size: int
    train_epochs: int
    guide_epochs: int

    def training_defaults(self) -> dict[str, Any]:
        """The defaults `config.resolve` fills in for options left unset."""
        return {"lr": self.lr, "batch_size": self.batch_size, "train_epochs": self.train_epochs,
                "guide_epochs": self.guide_epochs, "attribution": self.default_attribution}


# In the report's order (tables list families this way).
FAMILIES: dict[str, FamilyFacts] = {
    "vanilla": FamilyFacts("vanilla", "vanilla", ("ixg", "gradcam", "intgrad"), "ixg", False, False,
                           lr=1e-5, batch_size=16, train_epochs=100, guide_epochs=50),
    "xdnn": FamilyFacts("xdnn", "X-DNN", ("ixg", "gradcam", "intgrad"), "intgrad", True, False,
                        lr=1e-5, batch_size=16, train_epochs=100, guide_epochs=50),
    "bcos": FamilyFacts("bcos", "B-cos", ("bcos", "ixg", "gradcam", "intgrad"), "bcos", False, True,
                        lr=1e-4, batch_size=64, train_epochs=300, guide_epochs=50),
}

MODELS: dict[str, str] = {
    "resnet18": "vanilla",
    "resnet50": "vanilla",
    "bcos-resnet18": "bcos",
    "bcos-resnet50": "bcos",
    "xdnn-resnet18": "xdnn",  # a small test model: no ImageNet weights exist
    "xdnn-resnet50": "xdnn",
}
"""Model name -> family name."""

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)

TRAIN_DEFAULT_MODEL = "resnet50"


def family_facts(model_name: str) -> FamilyFacts:
    """The family facts of a model name; KeyError for a name not listed in MODELS."""
    return FAMILIES[MODELS[model_name]]


def is_known_attribution(method: str) -> bool:
    """A built-in method or a captum:NAME spelling (whose NAME mgkit.captum_methods checks)."""
    return method in ATTRIBUTIONS or method.startswith(CAPTUM_PREFIX)


# Data sources: the choices `mgkit prepare` offers (the source modules read them from here).
SYNTHETIC_TASKS: tuple[str, ...] = ("multilabel", "birds", "birds-place", "pretrain")
SYNTHETIC_SPURIOUS: dict[str, float] = {"multilabel": 0.9, "birds": 1.0, "birds-place": 1.0, "pretrain": 0.0}
"""Default cue/class co-occurrence in train and val, per synthetic task."""
WATERBIRDS_TASKS: tuple[str, ...] = ("bird", "place")
REFERENCE_DATASETS: tuple[str, ...] = ("voc", "coco")
"""Class lists the reference implementation's preprocessed .pt files may use."""
