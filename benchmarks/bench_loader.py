"""Speed of mgkit's data path: images/s of shuffled training batches from a prepared HDF5 file, beside the
step rates of the reference implementation on an H200, saying whether a GPU would wait for the loader.

    python benchmarks/bench_loader.py [--sizes 112 224] [--workers 0 1 2] [--batch 64] [--train 1024]

For each image size it writes a synthetic file (`mgkit prepare synthetic`, in a temporary directory, so
it sits in the page cache), then iterates `make_loader(H5Split(file, "train"), batch, shuffle=True)`:
one epoch to warm up (worker start-up, first reads), then `--epochs` epochs timed. Batches stay uint8
on the host, as the trainer receives them; no pinning (that needs CUDA). It also times the read of the
same shuffled batches with h5py's fancy index `d[sorted_rows]`, the loader's read before issue 21.

The reference's step rates (its own loop, data held in RAM as float tensors, ResNet-50 / B-cos
ResNet-50 at 224 px, batch 64, on an H200) are what a loader must at least deliver for the GPU never
to wait. They were measured at 224 px; for 112 px the table compares against 4x those rates, an upper
bound of how much faster a step on a quarter of the pixels could be. Each cell says whether a GPU at
that rate would wait, and for what share of the time: with workers only when the loader is slower (the
reading overlaps the step, "keeps up (margin)"); with 0 workers always a little, since reading and
stepping take turns in one process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from mgkit.data.loader import H5Split, make_loader, read_rows

# images/s of one training step on an H200, from the issue (../shared/bench/side_by_side.py's figures).
REFERENCE_H200 = {"plain vanilla": 814, "plain B-cos": 322, "guided input vanilla": 179, "guided input B-cos": 162,
                  "guided final vanilla": 489, "guided final B-cos": 256}
REFERENCE_SIZE = 224


def prepare(out: Path, size: int, n_train: int) -> None:
    cmd = [sys.executable, "-m", "mgkit", "prepare", "synthetic", "--out", str(out), "--train", str(n_train),
           "--val", "1", "--test", "1", "--size", str(size), "--quiet"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def loader_rate(path: Path, batch: int, workers: int, epochs: int) -> float:
    """images/s over `epochs` shuffled epochs after one warm-up epoch."""
    loader = make_loader(H5Split(path, "train"), batch, shuffle=True, seed=0, workers=workers)
    for _ in loader:  # warm-up: worker start-up and first reads
        pass
    images, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        loader.sampler.sampler.set_epoch(epoch)
        for b in loader:
            images += len(b.index)
    return images / (time.perf_counter() - start)


def read_rates(path: Path, batch: int, batches: int) -> tuple[float, float]:
    """images/s of reading the same shuffled batches' images: h5py fancy index (before) and read_rows (now)."""
    with h5py.File(path, "r") as f:
        d = f["train/images"]
        rng = np.random.default_rng(0)
        rows = [np.sort(rng.permutation(d.shape[0])[:batch]) for _ in range(batches)]
        rates = []
        for read in (lambda r: d[r], lambda r: read_rows(d, r)):
            read(rows[0])
            start = time.perf_counter()
            for r in rows:
                read(r)
            rates.append(batch * batches / (time.perf_counter() - start))
    return rates[0], rates[1]


def verdict(rate: float, needed: float, overlapped: bool) -> str:
    """Whether a GPU stepping at `needed` images/s would wait for a loader delivering `rate`.

    With workers, reading overlaps the step: the GPU waits only when the loader is slower, for the share
    1 - rate/needed of the time. In-process (0 workers) reading and stepping take turns, so the GPU
    idles for the share needed / (needed + rate) however fast the loader is.
    """
    if not overlapped:
        return f"waits {100 * needed / (needed + rate):.0f} %"
    if rate >= needed:
        return f"keeps up ({rate / needed:.1f}x)"
    return f"waits {100 * (1 - rate / needed):.0f} %"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="square image sizes in pixels")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts")
    parser.add_argument("--batch", type=int, default=64, help="batch size")
    parser.add_argument("--train", type=int, default=1024, help="training images in the file")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--fancy-batches", type=int, default=6, help="batches read with the fancy index")
    args = parser.parse_args(argv)

    names = list(REFERENCE_H200)
    print(f"shuffled batches of {args.batch} from a {args.train}-image synthetic file in the page cache; "
          f"{args.epochs} epochs after one warm-up; reference H200 step rates (images/s at {REFERENCE_SIZE} px): "
          + ", ".join(f"{k} {v}" for k, v in REFERENCE_H200.items()))
    print()
    print("| px | workers | images/s | " + " | ".join(names) + " |")
    print("|---:|---:|---:|" + "---|" * len(names))
    reads = {}
    with tempfile.TemporaryDirectory(prefix="mgkit-bench-loader-") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"synthetic-{size}.h5"
            prepare(path, size, args.train)
            scale = (REFERENCE_SIZE / size) ** 2
            for workers in args.workers:
                rate = loader_rate(path, args.batch, workers, args.epochs)
                cells = [verdict(rate, REFERENCE_H200[k] * scale, workers > 0) for k in names]
                print(f"| {size} | {workers} | {rate:,.0f} | " + " | ".join(cells) + " |", flush=True)
            reads[size] = read_rates(path, args.batch, args.fancy_batches)
            path.unlink()
    print()
    print("| px | read of a batch's images: h5py fancy index (before) | read_rows (now) | speed-up |")
    print("|---:|---:|---:|---:|")
    for size, (fancy, rows) in reads.items():
        print(f"| {size} | {fancy:,.0f} images/s | {rows:,.0f} images/s | {rows / fancy:.0f}x |")


if __name__ == "__main__":
    main()
