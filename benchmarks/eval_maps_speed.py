"""Evaluation maps, before/after: images/s of the old path (a no-grad forward for the logits, then
`attribute` over (image, class) pairs with every image repeated once per class, chunks of 64) and of
`evaluation_maps` (one forward per batch; slot gradients or the final-layer closed form).

Old and new alternate in one process (the machine is shared). Usage:
    python benchmarks/eval_maps_speed.py --size 112 --batch 4 --reps 3
"""

from __future__ import annotations

import argparse
import time

import torch

from mgkit.attribution import attribute, evaluation_maps
from mgkit.models import create_model


def old(model, x, img, cls, method, layer):
    with torch.no_grad():
        logits = model(x)
    maps = [attribute(model, x[img[i:i + 64]], cls[i:i + 64], method=method, layer=layer, create_graph=False)[0]
            for i in range(0, img.numel(), 64)]
    return torch.cat(maps), logits


def new(model, x, img, cls, method, layer):
    return evaluation_maps(model, x, img, cls, method=method, layer=layer)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, nargs="+", default=[4])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2, help="ground-truth classes per image")
    ap.add_argument("--configs", nargs="+", default=["resnet50:ixg:input", "resnet50:ixg:final",
                                                     "bcos-resnet50:bcos:input", "bcos-resnet50:bcos:final"])
    args = ap.parse_args()
    for conf in args.configs:
        name, method, layer = conf.split(":")
        model = create_model(name, 20).eval()
        for b in args.batch:
            x = model.prepare_input(torch.rand(b, 3, args.size, args.size))
            img = torch.arange(b).repeat_interleave(args.pairs)
            cls = (torch.arange(b * args.pairs) * 7) % 20
            m_old, _ = old(model, x, img, cls, method, layer)
            m_new, _ = new(model, x, img, cls, method, layer)
            err = float((m_old - m_new).abs().max() / m_old.abs().max().clamp(min=1e-12))
            t = {"old": 0.0, "new": 0.0}
            for _ in range(args.reps):
                for key, fn in (("old", old), ("new", new)):
                    start = time.perf_counter()
                    fn(model, x, img, cls, method, layer)
                    t[key] += time.perf_counter() - start
            n = b * args.reps
            print(f"{conf:28s} {args.size}px batch {b:3d}: old {n / t['old']:7.2f} img/s  new {n / t['new']:7.2f} img/s"
                  f"  x{t['old'] / t['new']:.1f}  (max rel diff {err:.1e})", flush=True)


if __name__ == "__main__":
    main()
