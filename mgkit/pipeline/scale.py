"""A pipelines/scales/SCALE.yaml file, read once: the grid every experiment is planned from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mgkit.errors import UsageError


@dataclass(frozen=True)
class Config:
    """A model/attribution configuration of the main comparison (e.g. family vanilla, attribution ixg).
    The name is only a label: family and attribution are fields, never parsed back out of it."""

    name: str
    family: str
    attribution: str


@dataclass(frozen=True)
class Family:
    name: str
    model: str
    lr: float
    batch: int
    base_epochs: int
    guide_epochs: int
    pretrained: bool = False   # baselines start from ImageNet weights (mgkit train --pretrained)


def word(x: Any) -> str:
    """A YAML value as it appears on a command line and in a path (0.1 -> '0.1', 1e-05 -> '1e-05')."""
    return repr(x) if isinstance(x, float) else str(x)


class Scale:
    """The scale file's values with the lookups the experiments need."""

    def __init__(self, raw: dict, source: str = "<scale>"):
        self.raw = raw
        self.source = source
        try:
            self.families = {k: Family(k, v["model"], v["lr"], v["batch"], v["base_epochs"], v["guide_epochs"],
                                       bool(v.get("pretrained", False)))
                             for k, v in raw["family"].items()}
            self.configs = [self.config(c) for c in raw["configs"]]
        except KeyError as e:
            raise UsageError(f"{source}: missing key {e.args[0]!r}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Scale":
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"scale file {path} does not exist")
        with open(path) as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise UsageError(f"{path}: not a mapping of scale keys")
        return cls(raw, str(path))

    def __getitem__(self, key: str) -> Any:
        try:
            return self.raw[key]
        except KeyError:
            raise UsageError(f"{self.source}: missing key {key!r}") from None

    def section(self, key: str, fields: tuple[str, ...]) -> dict | None:
        """An optional mapping key (pretrain, targets, timings): None when absent, refused in one line
        when it lacks one of FIELDS."""
        value = self.raw.get(key)
        if not value:
            return None
        missing = [f for f in fields if f not in value] if isinstance(value, dict) else list(fields)
        if missing:
            raise UsageError(f"{self.source}: {key} has no {missing[0]!r} (it needs {', '.join(fields)})")
        return value

    def config(self, entry: str | dict) -> Config:
        """A configuration from its YAML entry: a mapping {name, family, attribution}, or a name
        `FAMILY-ATTRIBUTION` whose FAMILY is one of the `family:` keys (the longest that matches, so that
        family names may contain '-')."""
        if isinstance(entry, dict):
            try:
                return Config(str(entry.get("name") or f"{entry['family']}-{entry['attribution']}"),
                              str(entry["family"]), str(entry["attribution"]))
            except KeyError as e:
                raise UsageError(f"{self.source}: configuration {entry} has no {e.args[0]!r}") from None
        for fam in sorted(self.families, key=len, reverse=True):
            if entry.startswith(fam + "-") and len(entry) > len(fam) + 1:
                return Config(entry, fam, entry[len(fam) + 1:])
        for c in getattr(self, "configs", []):
            if c.name == entry:
                return c
        raise UsageError(f"{self.source}: configuration {entry!r} does not start with a family "
                         f"({', '.join(self.families)}) followed by '-' and an attribution")

    def family(self, config: Config) -> Family:
        try:
            return self.families[config.family]
        except KeyError:
            raise UsageError(f"{self.source}: configuration {config.name!r} names family {config.family!r}, "
                             f"which is not under `family:`") from None

    def grid(self, config: Config, loss: str, layer: str) -> list[str]:
        """The lambda grid of (configuration, loss, layer): the configuration's own (lambda_by_config)
        or the default one, as command-line words."""
        values = self._grid_values(config, loss, layer)
        if not values:
            raise UsageError(f"{self.source}: no lambda grid for loss {loss!r} at layer {layer!r}")
        return [word(v) for v in values]

    def has_grid(self, config: Config, loss: str, layer: str) -> bool:
        return bool(self._grid_values(config, loss, layer))

    def _grid_values(self, config: Config, loss: str, layer: str) -> list | None:
        own = (self.raw.get("lambda_by_config") or {}).get(config.name, {}).get(loss, {}).get(layer)
        return own or (self["lambda"].get(loss) or {}).get(layer)

    def lam_at(self, config: Config, loss: str, layer: str, index: int | None = None) -> str:
        """The index-th lambda (1-based, default the ablation index) of a grid."""
        index = int(self["ablation"]["lambda_index"]) if index is None else index
        values = self.grid(config, loss, layer)
        if not 1 <= index <= len(values):
            raise UsageError(f"{self.source}: lambda_index {index} is outside the {len(values)}-value grid "
                             f"of {config.name} {loss}/{layer}")
        return values[index - 1]

    def layers_of(self, config: Config) -> list[str]:
        """The layers CONFIG is guided and evaluated at: `config_layers` (the paper's grid: GradCAM only
        at the final layer), else every one of `layers`."""
        own = (self.raw.get("config_layers") or {}).get(config.name)
        return list(own) if own else list(self["layers"])

    def ablation_lambdas(self, loss: str) -> list[str]:
        """The lambdas the annotation and dilation ablations sweep for LOSS (`ablation.lambdas`), else
        the one at the ablation index."""
        own = (self["ablation"].get("lambdas") or {}).get(loss)
        c, y = self.ablation_config, self["ablation"]["layer"]
        return [word(v) for v in own] if own else [self.lam_at(c, loss, y)]

    def depth_lambdas(self, layer: str) -> list[str]:
        """The lambdas the depth ablation sweeps at LAYER (`depth.lambdas`; at the input layer: the
        ablation's lambdas of the depth loss), else the one at the ablation index."""
        if layer == self["ablation"]["layer"]:
            return self.ablation_lambdas(self["depth"]["loss"])
        own = (self["depth"].get("lambdas") or {}).get(layer)
        return [word(v) for v in own] if own else [self.lam_at(self.ablation_config, self["depth"]["loss"], layer)]

    @property
    def ablation_config(self) -> Config:
        return self.config(self["ablation"]["config"])

    @property
    def shift_config(self) -> Config:
        return self.config(self["shift"]["config"])
