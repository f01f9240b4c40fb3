"""Speed and peak memory of `mgkit prepare synthetic` as the number of training images grows.

    python benchmarks/bench_prepare.py [--sizes 200 5000] [--workers 0] [--image-size 128]

Each N runs in a fresh child process (`python -m mgkit prepare synthetic --train N --val 10 --test 10
--quiet`), so imports and allocator state never carry over between measurements. Only the training
split scales with N; val, test and test_shifted stay at 10 images each, so the figures measure how the
pipeline scales with data set size rather than split bookkeeping. Images/s counts every image written
(N + 30).

Peak RSS comes from `os.wait4` on the child's pid: the rusage of that one child, whose `ru_maxrss`
on Linux is the larger of its own peak and the peaks of the processes it reaped (its --workers pool),
i.e. the largest single process of the run, not their sum. Streaming works when this stays flat as N
grows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL_SPLITS = 10  # val and test images; test_shifted gets as many as test


def measure(n: int, workers: int, image_size: int, out_dir: Path) -> tuple[float, float]:
    """Run one prepare in a child process; return (wall seconds, peak RSS in MiB)."""
    out = out_dir / f"bench-{n}.h5"
    cmd = [sys.executable, "-m", "mgkit", "prepare", "synthetic", "--out", str(out), "--train", str(n),
           "--val", str(SMALL_SPLITS), "--test", str(SMALL_SPLITS), "--size", str(image_size),
           "--workers", str(workers), "--force", "--quiet"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    # wait4 reaps exactly this child and returns its own rusage (RUSAGE_CHILDREN would be the max over
    # every child this script ever had, hiding a smaller later run behind a larger earlier one).
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: keep Popen from waiting again
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed for N={n} (exit {proc.returncode}): {' '.join(cmd)}")
    out.unlink(missing_ok=True)
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    rss_mib = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return seconds, rss_mib


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 5000], help="training-image counts N")
    parser.add_argument("--workers", type=int, default=0, help="--workers passed to prepare")
    parser.add_argument("--image-size", type=int, default=128, help="square image size in pixels")
    args = parser.parse_args(argv)

    print(f"mgkit prepare synthetic: {args.image_size}x{args.image_size}, workers={args.workers}, "
          f"val/test/test_shifted = {SMALL_SPLITS} each")
    print(f"{'N train':>8} {'images':>7} {'seconds':>8} {'images/s':>9} {'peak RSS MiB':>13}")
    with tempfile.TemporaryDirectory(prefix="mgkit-bench-") as tmp:
        for n in args.sizes:
            seconds, rss = measure(n, args.workers, args.image_size, Path(tmp))
            total = n + 3 * SMALL_SPLITS
            print(f"{n:>8} {total:>7} {seconds:>8.2f} {total / seconds:>9.1f} {rss:>13.1f}", flush=True)


if __name__ == "__main__":
    main()
