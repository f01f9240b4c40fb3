"""Speed and memory of mgkit's training steps and evaluation, one configuration per process.

Configurations: train/<fam> (plain classification step), guided/<fam>/<layer> (forward, attribution
with create_graph, Energy loss, backward, Adam), eval/<fam>/<layer> (mgkit's evaluate: classification,
EPG and IoU over every (image, ground-truth class) pair). Random initialisation, random images with
1-3 boxes, 20 classes. Each configuration runs in its own child process so that peak RSS is its own.

    python benchmarks/bench_train.py                          # every configuration, ResNet-50 / B-cos ResNet-50 at 224
    python benchmarks/bench_train.py --quick                  # ResNet-18 / B-cos ResNet-18 at 128
    python benchmarks/bench_train.py --device cuda --batch 64 --eval-batch 64 --amp bf16   # GPU figures

Against the reference implementation, time both sides with /work/shared/bench/side_by_side.py (it calls
the `--one` form below); benchmarks/RESULTS.md has its tables and the commands that made them.

One configuration, as /work/shared/bench/side_by_side.py calls it (last line: one JSON object with
images_per_s = batch / median step time, batch, peak_rss_mb):

    python benchmarks/bench_train.py --one guided/vanilla/final --size 224 --batch 8 --eval-batch 4 \
        --steps 3 --warmup 1 --threads 2 --json [--device cuda] [--amp bf16] [--channels-last]

CONFIG: train/<fam>, guided/<fam>/<layer> or eval/<fam>/<layer>; fam vanilla (resnet50, IxG) or bcos
(bcos-resnet50, B-cos); layer input or final (guided also mid1, mid2, mid3). Guided = Energy loss, one random ground-truth class per
image, lambda 1, Adam; eval = mgkit's evaluate (classification + EPG + IoU over every (image,
ground-truth class) pair) on one in-memory batch per step.

Claim 9's speed-up (mgkit tables --timings), timed alone, e.g. for B-cos:

    for l in input mid2 mid3; do python benchmarks/bench_train.py --one guided/bcos/$l --quick --steps 5 \
        --threads 2 --json; done > results/timings.jsonl
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

# mgkit's public API, all in one place (adapt here when names change).
from mgkit.data.loader import Batch
from mgkit.engine.distributed import DistEnv
from mgkit.engine.split_metrics import evaluate
from mgkit.engine.step import StepSpec, train_step
from mgkit.engine.trainer import make_optimizer
from mgkit.models import create_model

FAMILIES = {"vanilla": ("resnet50", "ixg"), "bcos": ("bcos-resnet50", "bcos")}
SMALL = {"vanilla": "resnet18", "bcos": "bcos-resnet18"}  # --quick
# Guidance at every depth: the per-step timings `mgkit tables --timings` reads for claim 9 (speed-up of
# mid2/mid3 over input guidance), each timed in a process of its own.
GUIDED_LAYERS = ("input", "mid1", "mid2", "mid3", "final")
CONFIGS = ("train/vanilla", "guided/vanilla/input", "guided/vanilla/final", "eval/vanilla/input", "eval/vanilla/final",
           "train/bcos", "guided/bcos/input", "guided/bcos/final", "eval/bcos/input", "eval/bcos/final")


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


def parse_config(config: str) -> str:
    """Check CONFIG's shape; returns it unchanged or exits with one line (code 2)."""
    parts = config.split("/")
    layers = GUIDED_LAYERS if parts[0] == "guided" else ("input", "final")
    ok = (len(parts) == 2 and parts[0] == "train" and parts[1] in FAMILIES) or (
        len(parts) == 3 and parts[0] in ("guided", "eval") and parts[1] in FAMILIES and parts[2] in layers)
    if not ok:
        print(f"error: --one {config!r}: expected train/<fam>, guided/<fam>/<layer> or eval/<fam>/<layer> "
              f"(fam: {'|'.join(FAMILIES)}; layer: {'|'.join(GUIDED_LAYERS)} guided, input|final eval)",
              file=sys.stderr)
        raise SystemExit(2)
    return config


def run_one(args) -> dict:
    """Time one CONFIG: median over --steps timed steps after --warmup, batches alternating between two."""
    config = parse_config(args.one)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mode, fam = config.split("/")[:2]
    model_name = args.model or (SMALL[fam] if args.quick else FAMILIES[fam][0])
    torch.manual_seed(0)
    model = create_model(model_name, 20).to(device)
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
    rec = {"config": config, "model": model_name,
           "images_per_s": round(b / med, 3), "batch": b, "size": args.size,
           "step_s": [round(t, 4) for t in times], "threads": torch.get_num_threads(), "device": str(device),
           "amp": args.amp or None, "channels_last": args.channels_last,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        rec["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return rec


def run_grid(args) -> None:
    """Every configuration, each in a child process (`--one ... --json`), one table row each."""
    size = 128 if args.quick and args.size == 224 else args.size
    print(f"# {args.device}, {args.threads or 'default'} threads, {size}px, batch {args.batch} "
          f"(eval {args.eval_batch}), median of {args.steps} steps after {args.warmup} warm-up")
    print(f"{'config':<22}{'model':<15}{'images/s':>10}{'step s':>9}{'peak RSS MB':>13}")
    for config in CONFIGS:
        cmd = [sys.executable, __file__, "--one", config, "--size", str(size), "--batch", str(args.batch),
               "--eval-batch", str(args.eval_batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--device", args.device, "--json"]
        cmd += (["--amp", args.amp] if args.amp else []) + (["--channels-last"] if args.channels_last else [])
        cmd += ["--quick"] if args.quick else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{config:<22}{r['model']:<15}{r['images_per_s']:>10.2f}{statistics.median(r['step_s']):>9.3f}"
              f"{r['peak_rss_mb']:>13.0f}" + (f"  peak GPU {r['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in r else ""),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--amp", nargs="?", const="bf16", default=False, choices=["bf16"],
                    help="bf16 autocast in mgkit's steps (CPU with AMX/AVX-512 BF16, or CUDA)")
    ap.add_argument("--one", metavar="CONFIG", default=None,
                    help="time one configuration (train/<fam>, guided/<fam>/<layer>, eval/<fam>/<layer>)")
    ap.add_argument("--size", type=int, default=224, help="image side")
    ap.add_argument("--eval-batch", type=int, default=64,
                    help="images per evaluation batch (default: the CLI's --eval-batch-size)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    ap.add_argument("--json", action="store_true", help="--one: print the result as one JSON line")
    ap.add_argument("--quick", action="store_true", help="ResNet-18 / B-cos ResNet-18 (at 128px unless --size)")
    ap.add_argument("--model", default=None,
                    help="--one: time this model of the family instead (e.g. a pipeline scale's own model)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.one is not None:
        rec = run_one(args)
        print(json.dumps(rec) if args.json else
              f"{rec['config']}: {rec['images_per_s']:.2f} images/s (batch {rec['batch']}, {args.size}px), "
              f"peak RSS {rec['peak_rss_mb']:.0f} MB")
        return
    run_grid(args)


if __name__ == "__main__":
    main()
