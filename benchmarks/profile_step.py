"""Where the time of one mgkit step goes: torch.profiler table for one bench_train configuration.

    python benchmarks/profile_step.py guided/vanilla/input --size 112 --batch 8 --threads 2
    python benchmarks/profile_step.py eval/bcos/final --size 112 --batch 8 --amp bf16 --top 30

Runs --warmup untimed steps, then profiles --steps steps of mgkit's real code path (train_step or
evaluate, built by bench_train.make_step), and prints the operators by self CPU time plus the share of
a few operator groups (convolutions, batch norm, element-wise). Shares, not absolute times, are what
carries over between machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import FAMILIES, create_model, fake_batch, make_step, parse_config  # noqa: E402

# operator-name fragments -> group (first match wins)
GROUPS = (
    ("conv", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch norm", ("batch_norm", "native_batch_norm", "var_mean", "aten::var")),
    ("matmul", ("addmm", "matmul", "aten::mm", "bmm", "einsum")),
    ("pool/interp", ("pool", "upsample", "interpolate")),
    ("element-wise", ("aten::mul", "aten::add", "aten::div", "aten::sub", "aten::where", "threshold", "relu",
                      "aten::abs", "aten::pow", "aten::sqrt", "aten::sum", "aten::clamp", "aten::copy_",
                      "aten::fill_", "aten::zero_", "aten::empty")),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k in low for k in keys):
            return group
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="train/<fam>, guided/<fam>/<layer> or eval/<fam>/<layer>")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--amp", nargs="?", const="bf16", default=False, choices=["bf16"])
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    config = parse_config(args.config)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = create_model(FAMILIES[config.split("/")[1]][0], 20)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    step = make_step(config, model, device, bool(args.amp), args.channels_last)
    pool = [fake_batch(args.batch, args.size, 20, device, seed=s) for s in range(2)]
    for i in range(args.warmup):
        step(pool[i % 2])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(args.steps):
            step(pool[i % 2])
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = {}
    for e in events:
        shares[group_of(e.key)] = shares.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    print(f"# {config} {args.size}px batch {args.batch}, {args.threads} threads, amp={args.amp or 'off'}, "
          f"channels_last={args.channels_last}: self CPU {total / 1e6 / args.steps:.2f} s per step")
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<14}{100 * t / total:6.1f} %")


if __name__ == "__main__":
    main()
