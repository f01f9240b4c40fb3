"""The registry is the one list of names: every module that implements them covers exactly its names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mgkit import registry

PACKAGE = Path(__file__).resolve().parents[1] / "mgkit"


def test_models_attach_a_builder_and_family_to_every_registry_name():
    from mgkit import models

    assert set(models._REGISTRY) == set(registry.MODELS)
    assert list(models.FAMILIES) == list(registry.FAMILIES)
    for name, family in registry.MODELS.items():
        record = models.family_of(name)
        assert record.name == family and record.facts is registry.FAMILIES[family]


def test_losses_and_attributions_implement_exactly_the_registry_names():
    from mgkit import attribution, losses

    assert set(losses.LOSS_POSTPROCESS) == set(registry.LOSSES)
    assert attribution.METHODS == registry.ATTRIBUTIONS


def test_family_facts_are_consistent():
    for facts in registry.FAMILIES.values():
        assert facts.default_attribution in facts.attributions
        assert set(facts.attributions) <= set(registry.ATTRIBUTIONS)
    assert [n for n, f in registry.FAMILIES.items() if f.exact_intgrad] == ["xdnn"]


def test_registry_and_options_import_without_torch():
    code = "import sys, mgkit.registry, mgkit.options, mgkit.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_family_name_comparison_or_second_name_list_outside_the_registry():
    """grep: no `== "bcos"`-style branch on a family name outside registry.py and models.py, and no
    literal tuple of the losses, layers or attributions anywhere else."""
    families = "|".join(registry.FAMILIES)
    # (`method == "bcos"` compares an attribution method, which shares the name: not a family branch)
    branch = re.compile(rf'(?<!method )[=!]=\s*"({families})"|"({families})"\s*[=!]=')
    lists = [re.compile(r"\(\s*" + r",\s*".join(f'"{n}"' for n in names[:3]))
             for names in (registry.LOSSES, registry.LAYERS, registry.ATTRIBUTIONS)]
    lists.append(re.compile(rf'\(\s*"({families})"\s*,\s*"({families})"'))  # families, in any order
    # report/claims.py tests the paper's statements about named families (e.g. "B-cos models gain most"):
    # the names are the claims' content, not a branch in mgkit's behaviour
    allowed = {"registry.py", "models.py", "report/claims.py"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in allowed:
            continue
        text = path.read_text()
        found += [f"{rel}: family branch" for _ in branch.finditer(text)]
        found += [f"{rel}: name list" for pattern in lists if pattern.search(text)]
    assert found == []
