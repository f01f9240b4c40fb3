"""Speed of training steps: plain vs guided (mgkit), a reference-style guided step, and evaluation.

Prints, per (model, size, layer): seconds per step and images/s for a plain classification step,
mgkit's guided step (forward, attribution with create_graph, Energy loss, backward, Adam), and a
step written the way the reference implementation does it (input gradients enabled in plain
training, the localization loss in a Python loop over images with masks painted box by box); then
evaluation attributions per second. Random initialisation, random images, 1-3 boxes per image.

    python benchmarks/bench_train.py                 # the default grid (CPU: a few minutes)
    python benchmarks/bench_train.py --quick         # resnet18 at 128 only
    python benchmarks/bench_train.py --device cuda --batch 64 --amp   # GPU figures

One configuration, as /work/shared/bench/side_by_side.py calls it (last line: one JSON object with
images_per_s = batch / median step time, batch, peak_rss_mb):

    python benchmarks/bench_train.py --one guided/vanilla/final --size 224 --batch 8 --eval-batch 4 \
        --steps 3 --warmup 1 --threads 2 --json [--device cuda] [--amp bf16] [--channels-last]

CONFIG: train/<fam>, guided/<fam>/<layer> or eval/<fam>/<layer>; fam vanilla (resnet50, IxG) or bcos
(bcos-resnet50, B-cos); layer input or final. Guided = Energy loss, one random ground-truth class per
image, lambda 1, Adam; eval = mgkit's evaluate (classification + EPG + IoU over every (image,
ground-truth class) pair) on one in-memory batch per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

# mgkit's public API, all in one place (adapt here when names change).
from mgkit.attribution import PostProcess, attribute, attribute_pairs
from mgkit.data.loader import Batch
from mgkit.engine.distributed import DistEnv
from mgkit.engine.evaluate import evaluate
from mgkit.engine.step import StepSpec, train_step
from mgkit.engine.trainer import make_optimizer
from mgkit.models import create_model

FAMILIES = {"vanilla": ("resnet50", "ixg"), "bcos": ("bcos-resnet50", "bcos")}


def guided_spec(loss: str | None, attribution: str, layer: str, amp: bool, channels_last: bool) -> StepSpec:
    """A StepSpec for Energy-style guidance with one random ground-truth class per image, lambda 1."""
    return StepSpec(loss=loss, attribution=attribution, layer=layer, lam=1.0, targets="random", dilate=0.0,
                    reduction="sum", size_alpha=0.5, ig_steps=16, outside=False, amp=amp,
                    channels_last=channels_last)


def make_step(config: str, model, device: torch.device, amp: bool, channels_last: bool):
    """(step(batch) -> None, batch size role) for one CONFIG; times mgkit's real code path."""
    mode, fam, *rest = config.split("/")
    layer = rest[0] if rest else "input"
    _, attribution = FAMILIES[fam]
    if mode == "eval":
        model.eval()
        return lambda b: evaluate(model, [b], device=device, attribution=attribution, layer=layer, amp=amp,
                                  channels_last=channels_last)
    model.train()
    opt = make_optimizer(model.parameters(), 1e-5, device)  # the optimizer training runs build
    spec = guided_spec(None if mode == "train" else "energy", attribution, layer, amp, channels_last)
    gen = torch.Generator().manual_seed(0)
    env = DistEnv()
    return lambda b: train_step(model, b, spec, opt, gen, env)


def fake_batch(b: int, size: int, k: int, device: torch.device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g)
    m = 3
    cls = torch.randint(0, k, (b, m), generator=g).float()
    x0 = torch.randint(0, size // 2, (b, m), generator=g).float()
    y0 = torch.randint(0, size // 2, (b, m), generator=g).float()
    w = torch.randint(size // 8, size // 2, (b, m), generator=g).float()
    boxes = torch.stack([cls, x0, y0, (x0 + w).clamp(max=size), (y0 + w).clamp(max=size)], -1)
    keep = torch.rand(b, m, generator=g) < 0.6
    keep[:, 0] = True
    boxes[~keep, 0] = -1
    labels = torch.zeros(b, k)
    for j in range(m):  # benchmark set-up only, not timed
        labels[torch.arange(b)[keep[:, j]], boxes[keep[:, j], j, 0].long()] = 1
    return Batch(images=images, labels=labels, boxes=boxes, annotated=torch.ones(b, dtype=torch.bool),
                 index=torch.arange(b)).to(device)


def reference_style_step(model, batch: Batch, optimizer, layer: str, guided: bool, lam: float = 1.0) -> None:
    """The reference's step shape: grads on the input always, per-image loss loop, masks box by box."""
    x = model.prepare_input(batch.images.permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    optimizer.zero_grad(set_to_none=True)
    if not guided:
        logits = model(x)
        F.binary_cross_entropy_with_logits(logits, batch.labels).backward()
        optimizer.step()
        return
    targets = torch.multinomial(batch.labels / batch.labels.sum(1, keepdim=True), 1).squeeze(1)
    maps, logits = attribute(model, x, targets, method="ixg", layer=layer, create_graph=True,
                             out_size=tuple(x.shape[-2:]))
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels)
    loc = 0.0
    h, w = maps.shape[-2:]
    for i in range(len(maps)):
        mask = torch.zeros(h, w, device=maps.device)
        for row in batch.boxes[i].tolist():
            if int(row[0]) == int(targets[i]):
                mask[int(row[2]):int(row[4]), int(row[1]):int(row[3])] = 1
        pos = maps[i].clamp(min=0)
        den = pos.sum()
        loc = loc + (1 - (pos * mask).sum() / den if den >= 1e-7 else 1 - (pos * mask).sum())
    (loss + lam * loc).backward()
    optimizer.step()


def timed(fn, warmup: int, reps: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def bench_steps(model_name: str, size: int, layers: list[str], batch: int, device: torch.device, amp: bool,
                reps: int, attribution: str) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(model_name, 20).to(device).train()
    opt = make_optimizer(model.parameters(), 1e-6, device)
    b = fake_batch(batch, size, 20, device)
    gen = torch.Generator().manual_seed(0)
    env = DistEnv()
    rows = []

    def spec(loss, layer):
        return guided_spec(loss, attribution, layer, amp, False)

    plain = timed(lambda: train_step(model, b, spec(None, "input"), opt, gen, env), 1, reps, device)
    ref_plain = timed(lambda: reference_style_step(model, b, opt, "input", False), 1, reps, device)
    for layer in layers:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        guided = timed(lambda: train_step(model, b, spec("energy", layer), opt, gen, env), 1, reps, device)
        row = {"model": model_name, "size": size, "layer": layer, "batch": batch, "plain_s": plain,
               "guided_s": guided, "ratio": guided / plain, "plain_img_s": batch / plain,
               "guided_img_s": batch / guided, "ref_plain_s": ref_plain}
        if device.type == "cuda":
            row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        if attribution == "ixg":
            ref = timed(lambda: reference_style_step(model, b, opt, layer, True), 1, reps, device)
            row.update(ref_guided_s=ref, speedup_vs_ref=ref / guided)
        rows.append(row)
    return rows


def bench_eval(model_name: str, size: int, layer: str, device: torch.device, attribution: str, pairs: int) -> float:
    model = create_model(model_name, 20).to(device).eval()
    b = fake_batch(pairs // 2, size, 20, device)
    x = model.prepare_input(b.images.permute(0, 3, 1, 2).float() / 255)
    img = torch.arange(pairs) % x.shape[0]
    cls = torch.randint(0, 20, (pairs,))
    s = timed(lambda: attribute_pairs(model, x, img.to(device), cls.to(device), method=attribution, layer=layer,
                                      post=PostProcess(), out_size=(size, size)), 1, 2, device)
    return pairs / s


def parse_config(config: str) -> str:
    """Check CONFIG's shape; returns it unchanged or exits with one line (code 2)."""
    parts = config.split("/")
    ok = (len(parts) == 2 and parts[0] == "train" and parts[1] in FAMILIES) or (
        len(parts) == 3 and parts[0] in ("guided", "eval") and parts[1] in FAMILIES and parts[2] in ("input", "final"))
    if not ok:
        print(f"error: --one {config!r}: expected train/<fam>, guided/<fam>/<layer> or eval/<fam>/<layer> "
              f"(fam: {'|'.join(FAMILIES)}; layer: input|final)", file=sys.stderr)
        raise SystemExit(2)
    return config


def run_one(args) -> dict:
    """Time one CONFIG: median over --steps timed steps after --warmup, batches alternating between two."""
    config = parse_config(args.one)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mode, fam = config.split("/")[:2]
    torch.manual_seed(0)
    model = create_model(FAMILIES[fam][0], 20).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    b = args.eval_batch if mode == "eval" else args.batch
    pool = [fake_batch(b, args.size, 20, device, seed=s) for s in range(2)]
    step = make_step(config, model, device, args.amp is not False, args.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step(pool[i % 2])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    rec = {"config": config, "images_per_s": round(b / med, 3), "batch": b, "size": args.size,
           "step_s": [round(t, 4) for t in times], "threads": torch.get_num_threads(), "device": str(device),
           "amp": args.amp or None, "channels_last": args.channels_last,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--amp", nargs="?", const="bf16", default=False, choices=["bf16"],
                    help="bf16 autocast in mgkit's steps (CPU with AMX/AVX-512 BF16, or CUDA)")
    ap.add_argument("--one", metavar="CONFIG", default=None,
                    help="time one configuration (train/<fam>, guided/<fam>/<layer>, eval/<fam>/<layer>)")
    ap.add_argument("--size", type=int, default=224, help="--one: image side")
    ap.add_argument("--eval-batch", type=int, default=4, help="--one eval/...: images per evaluation batch")
    ap.add_argument("--steps", type=int, default=3, help="--one: timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="--one: untimed steps first")
    ap.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    ap.add_argument("--json", action="store_true", help="--one: print the result as one JSON line")
    ap.add_argument("--quick", action="store_true", help="resnet18 at 128 only")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.one is not None:
        rec = run_one(args)
        print(json.dumps(rec) if args.json else
              f"{rec['config']}: {rec['images_per_s']:.2f} images/s (batch {rec['batch']}, {args.size}px), "
              f"peak RSS {rec['peak_rss_mb']:.0f} MB")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grid = [("resnet18", 128, "ixg")]
    if not args.quick:
        grid += [("resnet50", 224, "ixg"), ("bcos-resnet50", 224, "bcos")]
    print(f"# training steps on {device} ({torch.get_num_threads()} threads), batch {args.batch}, "
          f"mean of {args.reps} steps after one warm-up; guided = Energy loss")
    head = (f"{'model':<14}{'size':>5}{'layer':>7}{'plain s':>9}{'guided s':>10}{'ratio':>7}"
            f"{'plain img/s':>13}{'guided img/s':>14}{'ref guided s':>14}{'vs ref':>8}")
    print(head)
    for name, size, attribution in grid:
        for r in bench_steps(name, size, ["input", "final"], args.batch, device, bool(args.amp), args.reps,
                             attribution):
            ref = f"{r['ref_guided_s']:>14.3f}{r['speedup_vs_ref']:>7.2f}x" if "ref_guided_s" in r else f"{'-':>14}{'-':>8}"
            mem = f"  peak {r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
            print(f"{r['model']:<14}{r['size']:>5}{r['layer']:>7}{r['plain_s']:>9.3f}{r['guided_s']:>10.3f}"
                  f"{r['ratio']:>7.2f}{r['plain_img_s']:>13.1f}{r['guided_img_s']:>14.1f}{ref}{mem}", flush=True)
    print("# evaluation attributions per second (no graph), 64 (image, class) pairs")
    for name, size, attribution in grid:
        for layer in ("input", "final"):
            print(f"{name:<14}{size:>5}{layer:>7}{bench_eval(name, size, layer, device, attribution, 64):>10.1f} pairs/s",
                  flush=True)


if __name__ == "__main__":
    main()
