"""The launcher's choices without GPUs or SLURM: GPU slots from a fake device list, torchrun wrapping,
the sbatch command of a job."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from mgkit.pipeline import launch


@pytest.fixture
def gpus(monkeypatch, tmp_path):
    monkeypatch.setenv("MGKIT_DEVICE", "cuda")
    monkeypatch.setenv("MGKIT_GPUS", "0,1,2")
    monkeypatch.setenv("MGKIT_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


def test_each_job_gets_its_own_gpu_until_none_is_free(gpus):
    held = [launch.Slots(launch.visible_gpus(), 1, gpus) for _ in range(4)]
    got = [s.try_take(1) for s in held]
    assert got[:3] == [["0"], ["1"], ["2"]] and got[3] is None  # a fourth job waits
    held[1].release()
    assert held[3].try_take(1) == ["1"]  # the freed GPU goes to the waiting job


def test_jobs_per_gpu_shares_only_after_every_gpu_has_a_job(gpus):
    slots = [launch.Slots(["0", "1"], 2, gpus) for _ in range(5)]
    got = [s.try_take(1) for s in slots]
    assert got == [["0"], ["1"], ["0"], ["1"], None]


def test_nproc_takes_distinct_gpus_and_all_or_nothing(gpus):
    a, b, c = (launch.Slots(["0", "1", "2"], 1, gpus) for _ in range(3))
    assert a.try_take(2) == ["0", "1"]
    assert b.try_take(2) is None and b.held == []  # only one free: holds nothing, waits
    assert c.try_take(1) == ["2"]
    with pytest.raises(SystemExit, match="needs 4 GPUs"):
        b.try_take(4)


def test_default_parallel_follows_gpu_slots_or_cores(gpus, monkeypatch):
    assert launch.default_parallel(1) == 3
    monkeypatch.setenv("MGKIT_JOBS_PER_GPU", "2")
    assert launch.default_parallel(1) == 6 and launch.default_parallel(2) == 3
    monkeypatch.setenv("MGKIT_DEVICE", "cpu")
    assert launch.default_parallel(1) == (__import__("os").cpu_count() or 1)


def test_local_run_records_its_gpu_and_sets_cuda_visible_devices(gpus, tmp_path, capfd):
    record = tmp_path / "run" / "launch.json"
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    rc = launch.main(["--name", "r", "--record", str(record), "--", sys.executable, "-c", code])
    assert rc == 0 and capfd.readouterr().out.strip() == "0"
    rec = json.loads(record.read_text())
    assert rec["launcher"] == "local" and rec["gpus"] == ["0"] and rec["name"] == "r"


def test_cpu_jobs_run_without_slots(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("MGKIT_DEVICE", "cpu")
    monkeypatch.setenv("MGKIT_GPUS", "0")
    rc = launch.main(["--name", "r", "--", sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"])
    assert rc == 0 and capfd.readouterr().out.strip() == "None"


def test_torchrun_replaces_mgkit_only_for_several_processes():
    cmd = ["/v/bin/mgkit", "train", "--out", "x"]
    assert launch.with_torchrun(cmd, 1) == cmd
    assert launch.with_torchrun(cmd, 4) == ["/v/bin/torchrun", "--standalone", "--nproc_per_node", "4", "-m", "mgkit",
                                            "train", "--out", "x"]
    multi = launch.with_torchrun(cmd, 2, nodes=3, rendezvous="n1:29512", job_id="12")
    assert multi[:11] == ["/v/bin/torchrun", "--nnodes", "3", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
                          "--rdzv_endpoint", "n1:29512", "--rdzv_id", "12"]


def test_sbatch_command_names_the_run_and_asks_for_gpus(monkeypatch):
    monkeypatch.setenv("MGKIT_DEVICE", "cuda")
    monkeypatch.setenv("MGKIT_SLURM_ARGS", "--partition gpu --time 2:00:00 --requeue")
    monkeypatch.setenv("MGKIT_NODES", "2")
    a = argparse.Namespace(name="main/vanilla-ixg/input/energy/lam0.1", record="r/launch.json", nproc=4,
                           cmd=["mgkit", "guide", "--out", "r"])
    argv = launch.sbatch_argv(a, "r/slurm-%j.out", "r/slurm-%j.err")
    assert argv[:3] == ["sbatch", "--wait", "--parsable"]
    assert argv[argv.index("--job-name") + 1] == a.name and argv[argv.index("--nodes") + 1] == "2"
    assert "--gres=gpu:4" in argv and argv[argv.index("--output") + 1] == "r/slurm-%j.out"
    assert argv[argv.index("--partition") + 1] == "gpu" and "--requeue" in argv
    script = argv[-1]
    assert script.startswith("exec srun --nodes 2 --ntasks-per-node 1 ") and "--inside" in script
    monkeypatch.setenv("MGKIT_DEVICE", "cpu")
    assert not any(x.startswith("--gres") for x in launch.sbatch_argv(a, "o", "e"))


def test_concurrent_jobs_never_share_a_gpu(gpus, tmp_path):
    """Four launcher processes on GPUS=0,1 (as `make -j4` starts them): at most two run at once, and two
    jobs that overlap in time hold different GPUs."""
    import os
    import subprocess


    os.environ["MGKIT_GPUS"] = "0,1"  # monkeypatched by the fixture, restored after the test
    code = ("import os, time, json, sys; t0 = time.time(); time.sleep(0.6); "
            "print(json.dumps([os.environ['CUDA_VISIBLE_DEVICES'], t0, time.time()]))")
    procs = [subprocess.Popen([sys.executable, "-m", "mgkit.pipeline.launch", "--name", f"j{i}", "--",
                               sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for i in range(4)]
    spans = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    for i, (g1, a1, b1) in enumerate(spans):
        for g2, a2, b2 in spans[i + 1:]:
            if a1 < b2 and a2 < b1:  # overlapping in time
                assert g1 != g2
    assert {g for g, _, _ in spans} == {"0", "1"}

