"""The λ grids of a scale that calibrates them (`calibrate:` in its file, SCALE=paper): the measurements of
pipelines/calibrate_lambda.py on the scale's baselines (one JSON per configuration) merged into one file,
RESULTS/lambda.yaml, that the planner reads for the guided runs' grids and the report cites. Every value
carries its source: `calibrated` (λ* × a ratio, measured), `published` (a value a source states, from the
scale file's `calibrate.published`), or `scale-file guess` (the scale's own grid, where nothing was measured).

    python -m mgkit.pipeline.calibration pipelines/scales/paper.yaml --out results/voc-paper/lambda.yaml \\
        results/voc-paper/calibration/*.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mgkit.artifacts import write_text_atomic
from mgkit.errors import MgkitError, UsageError
from mgkit.pipeline.scale import Config, Scale, word

CALIBRATED, PUBLISHED, GUESS = "calibrated", "published", "scale-file guess"


def calibrates(scale: Scale) -> bool:
    return bool(scale.raw.get("calibrate"))


def grid_keys(scale: Scale) -> list[tuple[Config, str, str]]:
    """Every (configuration, loss, layer) a guided run of the scale uses: the main grid at each
    configuration's layers, and the depth ablation's deeper layers of the ablation configuration."""
    keys = [(c, loss, y) for c in scale.configs for y in scale.layers_of(c) for loss in scale["losses"]]
    abl = scale.ablation_config
    keys += [(abl, scale["depth"]["loss"], y) for y in scale["depth"]["layers"]]
    seen: set[tuple[str, str, str]] = set()
    return [k for k in keys if (k[0].name, k[1], k[2]) not in seen and not seen.add((k[0].name, k[1], k[2]))]


def calibration_layers(scale: Scale, config: Config) -> list[str]:
    """The layers calibrate_lambda.py measures for CONFIG."""
    return list(dict.fromkeys(y for c, _, y in grid_keys(scale) if c.name == config.name))


def merge(scale: Scale, parts: list[Path]) -> dict[str, Any]:
    """The lambda.yaml document from calibrate_lambda.py outputs (each names its configuration)."""
    measured: dict[str, dict] = {}
    for part in parts:
        try:
            doc = json.loads(Path(part).read_text())
            measured[doc["config"]] = doc
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"{part}: not a calibrate_lambda.py output with a 'config' ({e})") from None
    published = (scale.raw.get("calibrate") or {}).get("published") or {}
    grids: dict[str, Any] = {}
    for c, loss, y in grid_keys(scale):
        m = (measured.get(c.name) or {}).get("lambda", {}).get(loss, {}).get(y)
        if m and m.get("grid"):
            entry = {"values": [{"lambda": v, "source": CALIBRATED} for v in m["grid"]],
                     "lambda_star": m["lambda_star"], "bce_grad": m["bce_grad"], "loc_grad": m["loc_grad"],
                     "baseline": measured[c.name]["checkpoint"]}
        else:  # nothing measured, or a flat localization term (calibrate_lambda.py's note)
            guess = f"{GUESS} ({m['note']})" if m and m.get("note") else GUESS
            entry = {"values": [{"lambda": float(v), "source": guess} for v in scale.grid(c, loss, y)]}
        for pub in ((published.get(c.name) or {}).get(loss) or {}).get(y) or []:
            if not any(abs(float(v["lambda"]) - float(pub["lambda"])) <= 1e-12 for v in entry["values"]):
                # after the calibrated values, so that the ablation index keeps pointing into them
                entry["values"].append({"lambda": float(pub["lambda"]), "source": f"{PUBLISHED}: {pub['source']}"})
        grids.setdefault(c.name, {}).setdefault(loss, {})[y] = entry
    ratios = sorted({tuple(d.get("ratios", ())) for d in measured.values()})
    return {"scale": scale.source, "ratios": list(ratios[0]) if len(ratios) == 1 else [list(r) for r in ratios],
            "grids": grids}


def load(path: str | Path, flag: str = "") -> dict[str, Any]:
    """A lambda.yaml written by `main`; FLAG: the option that named it, for the error line."""
    where = f"{flag} {path}" if flag else str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
        if not isinstance(doc.get("grids"), dict):
            raise KeyError("grids")
    except (OSError, yaml.YAMLError, AttributeError, KeyError) as e:
        reason = e.strerror if isinstance(e, OSError) else f"{e.__class__.__name__}: {e}"
        raise UsageError(f"{where}: not a λ calibration file of mgkit.pipeline.calibration ({reason})") from None
    return doc


def apply(scale: Scale, doc: dict[str, Any]) -> Scale:
    """SCALE with the grids of a calibration file: the main grids per configuration, and the ablations'
    lambdas (`ablation.lambdas`, `depth.lambdas`) those of the ablation configuration's grids."""
    raw = copy.deepcopy(scale.raw)
    by_config = raw.setdefault("lambda_by_config", {})
    for name, losses in doc["grids"].items():
        for loss, layers in losses.items():
            for y, entry in layers.items():
                by_config.setdefault(name, {}).setdefault(loss, {})[y] = [v["lambda"] for v in entry["values"]]
    out = Scale(raw, scale.source)
    abl, y = out.ablation_config, raw["ablation"]["layer"]
    raw["ablation"]["lambdas"] = {loss: [float(v) for v in out.grid(abl, loss, y)] for loss in raw["ablation"]["losses"]}
    dl = raw["depth"]["loss"]
    raw["depth"]["lambdas"] = {y: [float(v) for v in out.grid(abl, dl, y)] for y in raw["depth"]["layers"]}
    return Scale(raw, scale.source)


def markdown(doc: dict[str, Any]) -> list[str]:
    """The report's section: every grid value with its source."""
    lines = ["## λ grids (calibration)", "",
             f"The guided runs' λ values, from `{doc.get('scale', '?')}` calibrated on its baselines "
             "(pipelines/calibrate_lambda.py: λ* = |∇BCE| / |∇L_loc| on validation batches, times the ratios "
             f"{doc.get('ratios')}, one significant digit). Source of each value: calibrated, published "
             "(with its reference) or scale-file guess (not measured).", "",
             "| configuration | loss | layer | λ* | λ values (source) |", "|---|---|---|---|---|"]
    for name, losses in doc["grids"].items():
        for loss, layers in losses.items():
            for y, e in layers.items():
                star = f"{e['lambda_star']:.3g}" if "lambda_star" in e else "—"
                vals = ", ".join(f"{word(v['lambda'])} ({v['source']})" for v in e["values"])
                lines.append(f"| {name} | {loss} | {y} | {star} | {vals} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scale", help="pipelines/scales/SCALE.yaml")
    ap.add_argument("parts", nargs="*", type=Path, help="calibrate_lambda.py --out files, one per configuration")
    ap.add_argument("--out", required=True, type=Path, help="the calibration file (lambda.yaml)")
    args = ap.parse_args(argv)
    try:
        doc = merge(Scale.load(args.scale), args.parts)
    except MgkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    head = ("# λ grids calibrated on the baselines (python -m mgkit.pipeline.calibration); the planner reads\n"
            "# `grids` for the guided runs; each value names its source. Do not edit: delete to recalibrate.\n")
    write_text_atomic(args.out, head + yaml.safe_dump(doc, sort_keys=False, width=120))
    for line in markdown(doc)[4:-1]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
