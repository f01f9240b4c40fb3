"""Turn a pipelines/scales/SCALE.yaml file into Make variable assignments (the grid's single source).

    python pipelines/mkvars.py pipelines/scales/demo.yaml > build/pipeline-demo.mk

Every leaf becomes one variable: nested keys joined by '_', lists joined by spaces, e.g.
lambda: {energy: {input: [0.001, 0.01]}} -> `lambda_energy_input := 0.001 0.01`. Keys and values
must be plain words (no spaces, no '$', '#', ':' or '='), which is checked.
"""

from __future__ import annotations

import re
import sys

import yaml

WORD = re.compile(r"^[A-Za-z0-9_.+\-/]+$")


def flatten(prefix: str, value, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not WORD.match(str(k)):
                raise SystemExit(f"{sys.argv[1]}: key {k!r} under {prefix or 'the top level'} is not a plain word")
            flatten(f"{prefix}_{k}" if prefix else str(k), v, out)
        return
    items = value if isinstance(value, list) else [value]
    words = []
    for x in items:
        if isinstance(x, bool):
            x = int(x)
        s = repr(x) if isinstance(x, float) else str(x)
        if not WORD.match(s):
            raise SystemExit(f"{sys.argv[1]}: value {x!r} of {prefix} is not a plain word")
        words.append(s)
    out[prefix] = " ".join(words)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: mkvars.py SCALE.yaml")
    with open(sys.argv[1]) as f:
        data = yaml.safe_load(f)
    out: dict[str, str] = {}
    flatten("", data, out)
    print(f"# generated from {sys.argv[1]} by pipelines/mkvars.py; edit the YAML, not this file")
    for k, v in out.items():
        print(f"S_{k} := {v}")


if __name__ == "__main__":
    main()
