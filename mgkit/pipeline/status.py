"""`make plan`: per experiment, how many jobs the scale and data set need and how many are done,
running, failed or pending; an estimate of GPU-hours and disk; a failed job's last log lines.

    python -m mgkit.pipeline.status --scale pipelines/scales/paper.yaml --dataset voc [--runs DIR ...]
    python -m mgkit.pipeline.status ... --log RUN_OR_RESULT     (the last lines of a job's log)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from mgkit import registry
from mgkit.errors import MgkitError
from mgkit.pipeline.experiments import EXPERIMENTS, build
from mgkit.pipeline.jobs import Job, Plan
from mgkit.pipeline.scale import Scale

# Training throughput in images/s at 224 px on one H200, measured by the reference implementation's
# authors' code (the issue's figures; mgkit's own to replace them once measured on the device):
# (family kind, what is trained) -> images/s. X-DNN runs as vanilla ResNet-50; mid layers as the input.
THROUGHPUT = {("vanilla", "plain"): 814, ("bcos", "plain"): 322,
              ("vanilla", "input"): 179, ("bcos", "input"): 162,
              ("vanilla", "final"): 489, ("bcos", "final"): 256}
# Training images per epoch of the real data sets (VOC 2007 trainval, COCO 2014 train); synthetic:
# the scale file's `data.train`.
TRAIN_IMAGES = {"voc": 5011, "coco": 82081}
EVAL_IMAGES = {"voc": 4952 + 2510, "coco": 40504 + 5000}
WATERBIRDS = (4795, 1199 + 5794)
# Parameters (millions) of the backbones, for checkpoint sizes.
PARAMS_M = {"resnet18": 11.7, "resnet34": 21.8, "resnet50": 25.6}


def kind_of(model: str) -> str:
    """The model's row of THROUGHPUT: its family's, or vanilla's where the family has none (X-DNN: the
    same ResNet convolutions without biases; not measured separately)."""
    family = registry.MODELS.get(model, "vanilla")
    return family if (family, "plain") in THROUGHPUT else "vanilla"


def images(plan: Plan, job: Job) -> tuple[float, float]:
    """(training images per epoch, evaluation images: val + test) of the data set a job reads."""
    d = plan.scale["data"]
    if plan.dataset == "synthetic":
        return d["train"], d["val"] + d["test"]
    if "/birds" in job.command:  # Waterbirds
        return WATERBIRDS
    return TRAIN_IMAGES[plan.dataset], EVAL_IMAGES[plan.dataset]


def arg(job: Job, flag: str) -> str:
    words = job.command.split()
    return words[words.index(flag) + 1]


def model_of(job: Job, plan: Plan) -> str:
    """The backbone a run trains: its --model, or for a guided run its family's (from the run's name)."""
    if job.kind == "train":
        return arg(job, "--model")
    s = plan.scale
    for c in s.configs + [s.ablation_config, s.shift_config]:
        if f"/{c.name}/" in f"/{job.name}/" and c.attribution == arg(job, "--attribution"):
            return s.family(c).model
    return s.family(s.ablation_config).model  # annotations, dilation, depth: the ablation configuration


def train_seconds(job: Job, plan: Plan) -> float:
    """Seconds of one training job on one GPU: epochs x images / throughput, at the scale's image size
    (cost ~ pixels), each epoch's validation at plain speed."""
    n_train, n_eval = images(plan, job)
    what = "plain" if job.kind == "train" else ("final" if arg(job, "--layer") == "final" else "input")
    k = kind_of(model_of(job, plan))
    pixels = (plan.scale["data"]["size"] / 224) ** 2
    return int(arg(job, "--epochs")) * pixels * (n_train / THROUGHPUT[(k, what)] + n_eval / 2 / THROUGHPUT[(k, "plain")])


def eval_seconds(job: Job, plan: Plan) -> float:
    """One evaluation: each checkpoint over val (thresholds) and test, with attributions (the guided
    input speed: a forward and a backward pass per image)."""
    _, n = images(plan, job)
    checkpoints = max(1, job.command.count("/lam")) if "--pareto" in job.command else 1
    return checkpoints * n * (plan.scale["data"]["size"] / 224) ** 2 / THROUGHPUT[("vanilla", "input")]


def run_bytes(job: Job, plan: Plan) -> float:
    """A run's checkpoints: best_f1.pt and last.pt (weights + Adam: 3x), guided runs ~3 Pareto files."""
    model = model_of(job, plan)
    params = next((v for k, v in PARAMS_M.items() if k in model), 25.6) * 1e6
    return params * 4 * (4 + (3 if job.kind == "guide" else 0))


def resolve(path: str, dirs: dict[str, str]) -> Path:
    for var, value in dirs.items():
        path = path.replace(f"$({var})", value)
    return Path(path)


def state(job: Job, dirs: dict[str, str], queued: set[str]) -> str:
    """done (its output exists), running, failed (a log and no output, nothing running) or pending."""
    if resolve(job.target, dirs).exists():
        return "done"
    log = resolve(job.log, dirs)
    rec = resolve(job.record, dirs) if job.record else None
    if rec and rec.exists():
        r = json.loads(rec.read_text())
        if _alive(r.get("pid")):
            return "running"
    if job.name in queued:
        return "running"
    return "failed" if log.exists() and log.stat().st_size > 0 else "pending"


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def slurm_queued() -> set[str]:
    """The names of this user's SLURM jobs, pending or running (none without SLURM)."""
    try:
        out = subprocess.run(["squeue", "-h", "--me", "-o", "%j"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return set(out.split())


def report(plan: Plan, dirs: dict[str, str]) -> str:
    running = slurm_queued()
    lines = [f"{'experiment':<14}{'jobs':>6}{'done':>6}{'running':>9}{'failed':>8}{'pending':>9}"
             f"{'GPU-h':>9}{'disk GB':>9}"]
    failed: list[Job] = []
    names = {x.name for x in EXPERIMENTS} | {"figures"}  # the demo's own runs are not part of the study
    study = [j for j in plan.jobs.values() if j.experiments & names and j.kind not in ("prepare", "tables")]
    total_h = total_gb = 0.0
    counted: set[str] = set()
    for e in [x.name for x in EXPERIMENTS] + ["figures"]:
        jobs = [j for j in study if e in j.experiments]
        states = {j.target: state(j, dirs, running) for j in jobs}
        n = Counter(states.values())
        failed += [j for j in jobs if states[j.target] == "failed" and j not in failed]
        new = [j for j in jobs if j.target not in counted]  # a run shared with an earlier experiment counts there
        counted |= {j.target for j in new}
        h = sum(train_seconds(j, plan) if j.kind in ("train", "guide") else eval_seconds(j, plan) for j in new) / 3600
        gb = sum(run_bytes(j, plan) for j in new if j.kind in ("train", "guide")) / 1e9
        total_h, total_gb = total_h + h, total_gb + gb
        lines.append(f"{e:<14}{len(jobs):>6}{n['done']:>6}{n['running']:>9}{n['failed']:>8}{n['pending']:>9}"
                     f"{h:>9.1f}{gb:>9.1f}")
    runs = sum(1 for j in study if j.kind in ("train", "guide"))
    evals = len(study) - runs
    lines.append(f"{'all':<14}{runs + evals:>6}  ({runs} training runs, {evals} evaluations and figures)"
                 f"{total_h:>17.1f}{total_gb:>9.1f}")
    lines.append("GPU-hours: one H200 at the reference's measured throughputs (mgkit/pipeline/status.py "
                 "THROUGHPUT), cost ~ pixels; disk: checkpoints before PRUNE (PRUNE=1 keeps ~1/4).")
    for j in failed:
        lines.append(f"failed: {j.name}: log {resolve(j.log, dirs)}  (last lines: make plan-log JOB={j.name})")
    return "\n".join(lines)


def tail(plan: Plan, dirs: dict[str, str], name: str, n: int = 20) -> str:
    job = next((j for j in plan.jobs.values() if j.name == name or str(resolve(j.target, dirs)) == name), None)
    if job is None:
        raise MgkitError(f"no job named {name!r} in this plan (the names `make plan` prints)")
    log = resolve(job.log, dirs)
    lines = log.read_text(errors="replace").splitlines()[-n:] if log.exists() else ["(no log yet)"]
    slurm = sorted(log.parent.glob("*slurm-*.err"))
    return "\n".join([f"==> {log}", *lines] + ([f"SLURM logs: {' '.join(map(str, slurm))}"] if slurm else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", required=True)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--runs", default="runs")
    ap.add_argument("--results", default="results")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--log", metavar="JOB", help="print the last lines of this job's log")
    a = ap.parse_args(argv)
    dirs = {"RUNS": a.runs, "RESULTS": a.results, "DATA_DIR": a.data_dir}
    try:
        plan = build(Scale.load(a.scale), a.dataset)
        print(tail(plan, dirs, a.log) if a.log else report(plan, dirs))
    except MgkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
