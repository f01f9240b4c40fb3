"""Run one GPU job of the pipeline (train, guide, evaluate, shift, explain) where MGKIT_LAUNCHER says:

- local: on this machine, with its own GPU slot(s): CUDA_VISIBLE_DEVICES is set to GPUs that no other
  job of this user holds (lock files; JOBS_PER_GPU jobs may share one GPU); NPROC=k takes k GPUs and
  runs torchrun. Without GPUs (or DEVICE=cpu) the command runs as is.
- slurm: as its own SLURM job (`sbatch`, then its state polled), named after its run, stdout and
  stderr in files next to the job's outputs (the stderr streamed to this process's stderr meanwhile), SLURM_ARGS passed
  through, --gres=gpu:NPROC when DEVICE=cuda, NODES=n nodes with torchrun's rendezvous on the first.

Either way the job writes RECORD (JSON: launcher, host, GPUs, SLURM job id). Configured from the
environment that pipelines/common.mk exports (MGKIT_LAUNCHER, MGKIT_DEVICE, MGKIT_GPUS,
MGKIT_JOBS_PER_GPU, MGKIT_NODES, MGKIT_SLURM_ARGS):

    python -m mgkit.pipeline.launch --name RUN --record DIR/launch.json [--nproc k] -- CMD...
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mgkit.artifacts import write_text_atomic


def env(key: str, default: str = "") -> str:
    return os.environ.get(f"MGKIT_{key}", "") or default


# ------------------------------------------------------------------------------------------- GPUs
def visible_gpus() -> list[str]:
    """The GPUs jobs may use: MGKIT_GPUS (GPUS=0,1), else CUDA_VISIBLE_DEVICES, else nvidia-smi's list;
    none with DEVICE=cpu."""
    if env("DEVICE", "auto") == "cpu":
        return []
    listed = env("GPUS") or os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if listed:
        return [g.strip() for g in listed.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def default_parallel(nproc: int = 1) -> int:
    """Simultaneous jobs: GPU slots / GPUs per job on a GPU machine, the cores on a CPU one."""
    gpus = visible_gpus()
    if not gpus:
        return os.cpu_count() or 1
    return max(1, len(gpus) * int(env("JOBS_PER_GPU", "1")) // max(1, nproc))


class Slots:
    """GPU slots held through lock files (flock: released when the process ends, even if killed).
    Slot k of GPU g is LOCK_DIR/gpu-g.k.lock, k < jobs_per_gpu."""

    def __init__(self, gpus: list[str], jobs_per_gpu: int, lock_dir: Path):
        self.gpus, self.per_gpu, self.dir = gpus, jobs_per_gpu, lock_dir
        self.held: list[int] = []

    def try_take(self, n: int) -> list[str] | None:
        """n slots on n distinct GPUs, the least shared first, or None (nothing held) if not free now."""
        if n > len(self.gpus):
            raise SystemExit(f"error: a job needs {n} GPUs, only {len(self.gpus)} are listed (GPUS, NPROC)")
        self.dir.mkdir(parents=True, exist_ok=True)
        chosen: list[str] = []
        for k in range(self.per_gpu):  # fill slot 0 of every GPU before sharing any
            for g in self.gpus:
                if g in chosen or len(chosen) == n:
                    continue
                fd = os.open(self.dir / f"gpu-{g}.{k}.lock", os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.held.append(fd)
                chosen.append(g)
        if len(chosen) < n:
            self.release()
            return None
        return chosen

    def take(self, n: int, poll: float = 1.0) -> list[str]:
        got = self.try_take(n)
        if got is None:
            print(f"waiting for {n} free GPU slot(s) of {','.join(self.gpus)}", file=sys.stderr, flush=True)
        while got is None:
            time.sleep(poll)
            got = self.try_take(n)
        return got

    def release(self) -> None:
        for fd in self.held:
            os.close(fd)
        self.held = []


def lock_dir() -> Path:
    return Path(env("LOCK_DIR", f"/tmp/mgkit-gpu-slots-{os.getuid()}"))


# ------------------------------------------------------------------------------------- commands
def with_torchrun(cmd: list[str], nproc: int, nodes: int = 1, rendezvous: str | None = None,
                  job_id: str = "mgkit") -> list[str]:
    """`mgkit ARGS` -> `torchrun ... -m mgkit ARGS` when the job spans several processes."""
    if nproc <= 1 and nodes <= 1:
        return cmd
    exe = Path(cmd[0])
    if exe.name != "mgkit":
        return cmd
    torchrun = str(exe.with_name("torchrun")) if exe.parent != Path(".") else "torchrun"
    if nodes > 1:
        head = [torchrun, "--nnodes", str(nodes), "--nproc_per_node", str(nproc), "--rdzv_backend", "c10d",
                "--rdzv_endpoint", rendezvous or "localhost:29500", "--rdzv_id", job_id]
    else:
        head = [torchrun, "--standalone", "--nproc_per_node", str(nproc)]
    return head + ["-m", "mgkit"] + cmd[1:]


def write_record(path: str, **fields) -> None:
    if not path:
        return
    write_text_atomic(path, json.dumps({"host": socket.gethostname(),
                                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}, indent=1) + "\n")


def run_child(cmd: list[str], extra_env: dict[str, str]) -> int:
    """Run CMD while holding the GPU slots. A SIGTERM sent to this process is passed on (the run keeps
    its last completed epoch); Ctrl-C already reaches the child through the terminal's process group."""
    child = subprocess.Popen(cmd, env={**os.environ, **extra_env})
    signal.signal(signal.SIGTERM, lambda sig, _frame: child.send_signal(sig))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return child.wait()


def run_local(a: argparse.Namespace) -> int:
    gpus = visible_gpus()
    extra: dict[str, str] = {}
    held: list[str] = []
    if gpus:
        slots = Slots(gpus, int(env("JOBS_PER_GPU", "1")), lock_dir())
        held = slots.take(a.nproc)
        extra["CUDA_VISIBLE_DEVICES"] = ",".join(held)
    write_record(a.record, launcher="local", gpus=held, name=a.name, pid=os.getpid())
    return run_child(with_torchrun(a.cmd, a.nproc), extra)


def run_inside(a: argparse.Namespace) -> int:
    """In a SLURM allocation: record it, then run the command (torchrun across the job's nodes)."""
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    rendezvous = None
    if nodes > 1:
        hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        rendezvous = f"{hosts[0]}:{29500 + int(os.environ['SLURM_JOB_ID']) % 1000}"
    if os.environ.get("SLURM_NODEID", "0") == "0":
        write_record(a.record, launcher="slurm", name=a.name, slurm_job_id=os.environ.get("SLURM_JOB_ID"),
                     nodes=nodes, gpus=[g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g])
    cmd = with_torchrun(a.cmd, a.nproc, nodes, rendezvous, os.environ.get("SLURM_JOB_ID", "mgkit"))
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)  # the job's process itself: SLURM's SIGTERM reaches the run directly


def sbatch_argv(a: argparse.Namespace, out: str, err: str) -> list[str]:
    """The sbatch command of a job (its script: this launcher again, --inside the allocation)."""
    nodes = int(env("NODES", "1"))
    inner = [sys.executable, "-m", "mgkit.pipeline.launch", "--inside", "--name", a.name, "--record", a.record,
             "--nproc", str(a.nproc), "--", *a.cmd]
    script = shlex.join(inner)
    if nodes > 1:
        script = f"srun --nodes {nodes} --ntasks-per-node 1 {script}"
    argv = ["sbatch", "--parsable", "--job-name", a.name, "--output", out, "--error", err,
            "--open-mode=append", "--chdir", os.getcwd(), "--nodes", str(nodes), "--ntasks-per-node", "1"]
    if env("DEVICE", "auto") == "cuda":
        argv.append(f"--gres=gpu:{a.nproc}")
    return argv + shlex.split(env("SLURM_ARGS")) + ["--wrap", f"exec {script}"]


# States after which SLURM does nothing more with a job (a requeued one goes back to PENDING instead).
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE"}


def job_state(job_id: str) -> tuple[str, int]:
    """(state, exit status) of a job from the controller: `unknown` when it cannot be asked now, `gone`
    once it has forgotten the job (MinJobAge), the exit status 128+signal for a job killed by one."""
    try:
        p = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown", 1
    if p.returncode != 0:
        return ("gone" if "Invalid job id" in p.stderr else "unknown"), 1
    fields = dict(tok.split("=", 1) for tok in p.stdout.split() if "=" in tok)
    code, _, sig = fields.get("ExitCode", "0:0").partition(":")
    rc = int(code) if code.isdigit() and int(code) else (128 + int(sig) if sig.isdigit() and int(sig) else 0)
    return fields.get("JobState", "unknown"), rc


def poll_interval(waited: float) -> float:
    """Seconds between two questions to the controller: 0.5 s for short jobs (what a job costs beyond its
    own run), then a 60th of the time waited up to 5 s (at most ~2 % more for long ones, a light load on
    the controller of a big cluster)."""
    return min(5.0, max(0.5, waited / 60))


def run_slurm(a: argparse.Namespace) -> int:
    """Submit the job, then wait for SLURM to finish it, streaming its stderr meanwhile. Its state is
    polled here: `sbatch --wait` asks after 2 s, 10 s, then every 10 s, up to 10 s lost per job. A job
    SLURM requeues (PENDING again) is waited for until it ends."""
    stem = a.record[: -len("launch.json")] if a.record.endswith("launch.json") else a.record + "."
    out, err = f"{stem}slurm-%j.out", f"{stem}slurm-%j.err"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    try:
        sub = subprocess.run(sbatch_argv(a, out, err), capture_output=True, text=True)
    except OSError as e:
        print(f"error: cannot submit {a.name} to SLURM: {e}", file=sys.stderr)
        return 1
    job_id = sub.stdout.strip().split(";")[0]
    if sub.returncode != 0 or not job_id:
        print(f"error: sbatch refused {a.name} (exit {sub.returncode}): {sub.stderr.strip()}", file=sys.stderr)
        return 1

    def cancel(sig, _frame):  # make interrupted: take the job out of the queue
        subprocess.run(["scancel", job_id], check=False)
        sys.exit(130)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, cancel)
    out, err = out.replace("%j", job_id), err.replace("%j", job_id)
    pos, t0, unreachable = 0, time.monotonic(), 0.0
    while True:
        state, rc = job_state(job_id)
        pos = copy_from(err, pos, sys.stderr)  # the job's progress lines
        if state in FINAL:
            break
        if state == "gone":
            state = "forgotten by the controller before its end was seen"
            break
        pause = poll_interval(time.monotonic() - t0)
        unreachable = unreachable + pause if state == "unknown" else 0.0
        if unreachable > 600:
            state, rc = "controller unreachable for 10 minutes", 1
            break
        time.sleep(pause)
    if Path(out).exists():
        sys.stdout.buffer.write(Path(out).read_bytes())
        sys.stdout.flush()
    if state == "COMPLETED":
        return 0
    rc = rc or 1
    print(f"error: SLURM job {job_id} ({a.name}) failed: {state}, exit {rc}; log: {err}", file=sys.stderr)
    return rc


def copy_from(path: str, pos: int, stream) -> int:
    """Copy what PATH gained since byte POS to STREAM (bytes: a write may end mid-character)."""
    try:
        with open(path, "rb") as f:
            f.seek(pos)
            chunk = f.read()
    except OSError:
        return pos
    if chunk:
        stream.buffer.write(chunk)
        stream.flush()
    return pos + len(chunk)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run one pipeline job locally or as a SLURM job.")
    ap.add_argument("--name", required=True, help="the run's name (SLURM job name)")
    ap.add_argument("--record", default="", help="JSON file: where and on which GPUs the job ran")
    ap.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per node: torchrun when > 1")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.cmd and a.cmd[0] == "--":
        a.cmd = a.cmd[1:]
    if not a.cmd:
        ap.error("no command after --")
    if a.inside:
        return run_inside(a)
    launcher = env("LAUNCHER", "local")
    if launcher == "slurm":
        return run_slurm(a)
    if launcher != "local":
        print(f"error: LAUNCHER={launcher} is not one of local, slurm", file=sys.stderr)
        return 2
    return run_local(a)


if __name__ == "__main__":
    sys.exit(main())
