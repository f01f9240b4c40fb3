"""λ calibration by gradient-norm ratio, blind to the claims' outcome (how pipelines/*.yaml grids were set).

For a baseline checkpoint, a loss and a layer: on the first `--batches` validation batches, the norm of
the parameter gradient of BCE and of the localization term L_loc (as the guided step computes it, summed
over the batch) are measured; λ* = |∇BCE| / |∇L_loc| is the weight at which both pull equally hard.
The grid is λ* × each `--ratios` value (default 0.1 1 10: the localization term a tenth of, equal to,
and ten times the classification term), rounded to one significant digit. Where |∇L_loc| is below
|∇BCE| / 1e4 (a flat term: no boxes, or a map the loss cannot move) no grid is given (`grid: null`). Validation batches, not
training ones: a baseline fitted to its training set has near-zero training BCE gradients.

    python pipelines/calibrate_lambda.py runs/base/checkpoints/best_f1.pt --data data/synth.h5 \
        --attribution ixg --layers input final --losses energy l1 ppce rrr

With --config NAME --out FILE (the pipeline's calibration step at SCALE=paper) the JSON also names its
configuration and is written to FILE (atomically); `python -m mgkit.pipeline.calibration` merges them.
"""

from __future__ import annotations

import argparse
import json
import math

import h5py
import torch
import torch.nn.functional as F

from mgkit.data.loader import H5Split, images_to_float, make_loader
from mgkit.engine.checkpoint import model_from_checkpoint
from mgkit.artifacts import write_text_atomic
from mgkit.engine.distributed import DistEnv, pick_device
from mgkit.engine.step import StepSpec, contributing_pairs, localization_term, sample_targets


# A lambda* above this means the localization gradient is too weak to measure against BCE's.
MAX_LAMBDA_STAR = 1.0e4


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor], retain: bool = False) -> float:
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=retain)
    return math.sqrt(sum(float((g.float() ** 2).sum()) for g in grads if g is not None))


def round1(x: float) -> float:
    return float(f"{x:.1g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--attribution", required=True)
    ap.add_argument("--layers", nargs="+", default=["input", "final"])
    ap.add_argument("--losses", nargs="+", default=["energy", "l1", "ppce", "rrr"])
    ap.add_argument("--ratios", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--config", help="the configuration's name, recorded in the output")
    ap.add_argument("--out", help="write the JSON here (else: the last line of stdout)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = pick_device(args.device, DistEnv())
    torch.manual_seed(0)
    model, _ = model_from_checkpoint(args.checkpoint, device=device)
    model.train()  # as in guided training (BatchNorm in batch mode)
    params = [p for p in model.parameters() if p.requires_grad]
    ds = H5Split(args.data, "val")
    with h5py.File(args.data, "r") as f:
        mask_mode = str(f.attrs.get("mask_mode", "inside"))
    batches = []
    for i, b in enumerate(make_loader(ds, args.batch_size, shuffle=False, seed=0, workers=0)):
        if i >= args.batches:
            break
        batches.append(b.to(device))
    gen = torch.Generator().manual_seed(0)
    out = {"config": args.config, "checkpoint": args.checkpoint, "attribution": args.attribution, "ratios": args.ratios, "lambda": {}}
    for loss in args.losses:
        for layer in args.layers:
            spec = StepSpec(loss=loss, attribution=args.attribution, layer=layer, lam=1.0, targets="random",
                            dilate=0.0, reduction="sum", size_alpha=0.5, ig_steps=16, outside=mask_mode == "outside",
                            amp=False, channels_last=False)
            gb = gl = 0.0
            for b in batches:
                x = model.prepare_input(images_to_float(b.images))
                targets = sample_targets(b.labels, gen)[:, None]
                valid = (b.labels.sum(1) > 0)[:, None]
                weight = contributing_pairs(b, targets, valid)  # as the guided step: annotated pairs with a box
                loc, logits = localization_term(model, x, targets, weight, b, spec, DistEnv())
                bce = F.binary_cross_entropy_with_logits(logits.float(), b.labels)
                gb += grad_norm(bce, params, retain=True) / len(batches)
                gl += grad_norm(loc, params) / len(batches)
            entry = {"bce_grad": gb, "loc_grad": gl}
            if gl * MAX_LAMBDA_STAR <= gb:
                # L_loc is flat on this baseline (no contributing box, or a map the loss cannot move, e.g. a
                # 1x1 final layer): no weight balances it, so no grid is measured
                entry.update(lambda_star=None, grid=None, note=f"not measurable: |dLoc| {gl:.3g} vs |dBCE| {gb:.3g}")
            else:
                entry.update(lambda_star=gb / gl, grid=[round1(gb / gl * r) for r in args.ratios])
            out["lambda"].setdefault(loss, {})[layer] = entry
            print(f"{loss:7s} {layer:6s} |dBCE| {gb:.3g} |dLoc| {gl:.3g} "
                  + (f"lambda* {entry['lambda_star']:.3g} grid {entry['grid']}" if entry["grid"] else entry["note"]),
                  flush=True)
    if args.out:
        write_text_atomic(args.out, json.dumps(out, indent=1) + "\n")
    else:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
