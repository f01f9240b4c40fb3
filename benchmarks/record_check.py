"""Do `mgkit evaluate` records stay the same across a refactor? Writes or compares evaluation records of
fixed seeds (every family, attribution method and layer kind, raw and reference maps, the threshold
protocol, a baseline, groups), with the fields that change from run to run (`created`, the fresh data
file's and parent checkpoint's hashes, paths of the temporary directory) left out.

    .venv/bin/python benchmarks/record_check.py --write before.json     # on the old code
    .venv/bin/python benchmarks/record_check.py --compare before.json   # on the new code: exit 1 if any differ

Tiny runs (32x32 synthetic images, resnet18 / bcos-resnet18, one epoch) train first, in about a minute
on two cores. Records compare exactly (float equality), since the refactor must not move a bit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from mgkit.config import build_config
from mgkit.data.prepare import run_prepare
from mgkit.data.sources import synthetic

FAST = dict(batch_size=8, eval_batch_size=16, lr=1e-3, workers=0, quiet=True, device="cpu", epochs=1)

# (name, checkpoint key, data key, EvalOptions overrides, baseline key)
CASES = [
    ("vanilla-own", "vanilla", "multi", {}, None),
    ("vanilla-ixg-final-baseline", "guided", "multi", {"attribution": "ixg", "layer": "final"}, "vanilla"),
    ("vanilla-ixg-input", "vanilla", "multi", {"attribution": "ixg", "layer": "input"}, None),
    ("vanilla-gradcam-mid2", "vanilla", "multi", {"attribution": "gradcam", "layer": "mid2"}, None),
    ("vanilla-gradcam-final", "vanilla", "multi", {"attribution": "gradcam", "layer": "final"}, None),
    ("vanilla-intgrad-mid3", "vanilla", "multi", {"attribution": "intgrad", "layer": "mid3", "ig_steps": 4}, None),
    ("vanilla-intgrad-final", "vanilla", "multi", {"attribution": "intgrad", "layer": "final"}, None),
    ("guided-reference-maps", "guided", "multi", {"maps": "reference", "threshold_split": "test"}, None),
    ("guided-no-threshold", "guided", "multi", {"threshold_split": None, "iou_threshold": 0.3}, None),
    ("bcos-own", "bcos", "multi", {}, None),
    ("bcos-bcos-final", "bcos", "multi", {"attribution": "bcos", "layer": "final"}, None),
    ("bcos-ixg-final", "bcos", "multi", {"attribution": "ixg", "layer": "final"}, None),
    ("bcos-gradcam-final", "bcos", "multi", {"attribution": "gradcam", "layer": "final"}, None),
    ("bcos-intgrad-final", "bcos", "multi", {"attribution": "intgrad", "layer": "final", "ig_steps": 3}, None),
    ("bcos-bcos-mid1", "bcos", "multi", {"attribution": "bcos", "layer": "mid1"}, None),
    ("xdnn-intgrad-input", "xdnn", "multi", {"attribution": "intgrad", "layer": "input"}, None),
    ("birds-groups", "birds", "birds", {"attribution": "ixg", "layer": "final"}, None),
    ("birds-groups-input", "birds", "birds", {"attribution": "ixg", "layer": "input", "eval_batch_size": 5}, None),
]


# the creation time, and the hashes of a freshly written data file and parent checkpoint (they cover
# their own creation times)
VARYING = ("created", "data_hash", "parent_sha256")


def _strip(obj, tmp: str):
    """The record without the fields in VARYING, with the temporary directory's path made relative."""
    if isinstance(obj, dict):
        return {k: _strip(v, tmp) for k, v in obj.items() if k not in VARYING}
    if isinstance(obj, list):
        return [_strip(v, tmp) for v in obj]
    if isinstance(obj, str) and tmp in obj:
        return obj.replace(tmp, "<tmp>")
    return obj


def _records() -> dict[str, dict]:
    from mgkit.engine import trainer as T
    try:
        from mgkit.engine.evaluate_stage import EvalOptions, Evaluator
    except ImportError:  # before the stage's module was renamed (issue 17)
        from mgkit.engine.assess import EvalOptions, Evaluator

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = {"multi": root / "multi.h5", "birds": root / "birds.h5"}
        run_prepare(synthetic.plan(task="multilabel", num_classes=4, spurious=None, n_train=32, n_val=16,
                                   n_test=8, seed=0), data["multi"], size=32, bbox_frac=1.0, seed=0, quiet=True)
        run_prepare(synthetic.plan(task="birds", num_classes=2, spurious=None, n_train=32, n_val=16, n_test=8,
                                   seed=0), data["birds"], size=32, bbox_frac=0.5, seed=0, quiet=True)
        runs = {"vanilla": ("train", "multi", {"model": "resnet18"}),
                "bcos": ("train", "multi", {"model": "bcos-resnet18"}),
                "xdnn": ("train", "multi", {"model": "xdnn-resnet18"}),
                "birds": ("train", "birds", {"model": "resnet18"})}
        ckpt = {}
        for name, (stage, dkey, extra) in runs.items():
            torch.manual_seed(0)
            T.fit(build_config(stage, {"data": str(data[dkey]), "out": str(root / name), **extra, **FAST}, None))
            ckpt[name] = root / name / "checkpoints/best_f1.pt"
        torch.manual_seed(0)
        T.fit(build_config("guide", {"data": str(data["multi"]), "out": str(root / "guided"), "loss": "l1",
                                     "layer": "mid3", "lam": 1.0, "init_from": str(ckpt["vanilla"]), **FAST}, None))
        ckpt["guided"] = root / "guided/checkpoints/best_f1.pt"
        out = {}
        for name, key, dkey, opts, base in CASES:
            ev = Evaluator(EvalOptions(data=str(data[dkey]), quiet=True, device="cpu", **opts))
            rec = ev.record(ckpt[key], None if base is None else ckpt[base])
            out[name] = _strip(json.loads(json.dumps(rec)), tmp)
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--compare", type=Path)
    args = ap.parse_args()
    recs = _records()
    if args.write:
        args.write.write_text(json.dumps(recs, indent=1, sort_keys=True))
        print(f"{len(recs)} records written to {args.write}")
        return 0
    before = json.loads(args.compare.read_text())
    differ = [k for k in sorted(set(before) | set(recs)) if before.get(k) != recs.get(k)]
    for k in differ:
        print(f"DIFFERS: {k}")
    print(f"{len(recs) - len(differ)} of {len(recs)} records equal" + ("" if differ else " (all)"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
