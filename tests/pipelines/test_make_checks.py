"""The Makefile before any job runs: the variables a data set needs, the launcher on every GPU job."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def _make_n(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    stamp = tmp / "installed"
    stamp.touch()
    return subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "_paper-tables",
                           f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}", f"JOBS_MK={tmp / 'jobs.mk'}",
                           *args], capture_output=True, text=True)


def test_real_data_needs_its_root_in_one_error_line(tmp_path):
    r = _make_n(tmp_path, "DATASET=voc", "SCALE=tiny")
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if "error:" in x]
    assert len(lines) == 1 and "VOC_ROOT" in lines[0] and not (tmp_path / "jobs.mk").exists()
    assert "SCALE=nope" in _make_n(tmp_path, "SCALE=nope").stderr
    assert "LAUNCHER=pbs" in _make_n(tmp_path, "SCALE=tiny", "LAUNCHER=pbs").stderr


def test_paper_scale_on_voc_through_slurm_without_waterbirds(tmp_path):
    (tmp_path / "voc").mkdir()
    r = _make_n(tmp_path, "DATASET=voc", "SCALE=paper", f"VOC_ROOT={tmp_path / 'voc'}", "LAUNCHER=slurm")
    assert r.returncode == 0, r.stderr
    assert ("shift experiment is skipped; WB_ROOT=DIR and CUB_ROOT=DIR (Waterbirds), or CUB_ROOT=DIR and "
            "PLACES_ROOT=DIR (to build it), enable it") in r.stdout
    jobs = [x for x in r.stdout.splitlines() if "/mgkit " in x]
    gpu = [x for x in jobs if any(f"/mgkit {s} " in x for s in ("train", "guide", "evaluate", "explain"))]
    assert len(gpu) > 150 and all("-m mgkit.pipeline.launch --name " in x for x in gpu)
    assert not any("/mgkit shift " in x for x in jobs)
    assert all("-m mgkit.pipeline.launch" not in x for x in jobs if "/mgkit prepare " in x or "/mgkit tables " in x)
    assert f"prepare voc --root {tmp_path / 'voc'} --size 224" in r.stdout


def _make_paper_n(tmp: Path, dataset: str, root: str) -> str:
    """`make -n paper-tables SCALE=paper` (both of its makes: calibration, then the goal)."""
    stamp = tmp / "installed"
    stamp.touch()
    r = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(ROOT), "paper-tables", "SCALE=paper",
                        f"DATASET={dataset}", root, f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}",
                        f"JOBS_MK={tmp / 'jobs.mk'}", f"RESULTS={tmp / 'results'}", "PARALLEL=1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_paper_scale_protocol_in_the_dry_run(tmp_path):
    """The paper's protocol on VOC and COCO: ImageNet weights on every baseline, GradCAM only at the final
    layer, the λ calibration step before any guided run, and λ sweeps (Pareto merges) in the ablations."""
    for dataset, root in (("voc", "VOC_ROOT"), ("coco", "COCO_ROOT")):
        (tmp_path / dataset).mkdir()
        out = _make_paper_n(tmp_path, dataset, f"{root}={tmp_path / dataset}")
        lines = [x for x in out.splitlines() if "set -o pipefail" in x]
        trains = [x for x in lines if "/mgkit train " in x]
        guides = [x for x in lines if "/mgkit guide " in x]
        assert {x.split("--model ")[1].split()[0] for x in trains} == {"resnet50", "xdnn-resnet50", "bcos-resnet50"}
        assert all(" --pretrained " in x for x in trains)
        assert not [x for x in guides + lines if "--attribution gradcam --layer input" in x]
        assert any("--attribution gradcam --layer final" in x for x in guides)
        # calibration: one calibrate_lambda.py per configuration on its baseline, merged into lambda.yaml,
        # all before the first guided run; the report cites the file
        cal = [i for i, x in enumerate(lines) if "pipelines/calibrate_lambda.py" in x]
        merge = [i for i, x in enumerate(lines) if "-m mgkit.pipeline.calibration" in x]
        # (a dry run prints the calibration twice: the second make does not see its file either)
        names = [lines[i].split("--name ")[1].split()[0] for i in cal]
        assert names[:4] == [f"results/calibration/{c}" for c in ("vanilla-ixg", "vanilla-gradcam", "xdnn-intgrad",
                                                                  "bcos-bcos")]
        assert cal[3] < merge[0] < lines.index(guides[0])
        assert f"--out {tmp_path}/results/lambda.yaml" in lines[merge[0]]
        assert any("/mgkit tables " in x and f"--lambdas {tmp_path}/results/lambda.yaml" in x for x in lines)
        assert "λ grids are pipelines/scales/paper.yaml's until" in out
        # ablations: every condition a Pareto merge over 3 λ runs
        for sub, cond in (("annotations", "f0.01"), ("dilation", "d0.25"), ("depth", "mid2")):
            ev = [x for x in lines if "/mgkit evaluate --pareto" in x and f"/{sub}/" in x and f"-{cond}." in x]
            assert ev and all(x.split("--pareto")[1].split("--data")[0].count(f"/{sub}/") == 3 for x in ev), (sub, ev)


def test_paper_scale_refuses_guessed_grids_outside_paper_tables(tmp_path):
    stamp = tmp_path / "installed"
    stamp.touch()
    r = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "main", "SCALE=paper", "DATASET=voc",
                        f"VOC_ROOT={tmp_path}", f"BIN={Path(sys.executable).parent}", f"STAMP={stamp}",
                        f"JOBS_MK={tmp_path / 'jobs.mk'}", f"RESULTS={tmp_path / 'results'}"],
                       capture_output=True, text=True)
    errors = [x for x in r.stderr.splitlines() if "error:" in x]
    assert r.returncode != 0 and len(errors) == 1 and "lambda.yaml does not exist yet" in errors[0]
    assert not (tmp_path / "results").exists()


def test_waterbirds_roots(tmp_path):
    """The shift experiment's data: read from WB_ROOT, or built from CUB_ROOT and PLACES_ROOT; DATASET=
    waterbirds runs the shift experiment alone; a half-given or missing root is one error line."""
    for d in ("voc", "wb", "cub", "places"):
        (tmp_path / d).mkdir()
    voc, wb, cub, places = (f"{tmp_path / d}" for d in ("voc", "wb", "cub", "places"))
    read = _make_n(tmp_path, "DATASET=voc", "SCALE=tiny", f"VOC_ROOT={voc}", f"WB_ROOT={wb}", f"CUB_ROOT={cub}")
    assert read.returncode == 0 and "skipped" not in read.stdout, read.stderr
    assert f"prepare waterbirds --root {wb} --cub-root {cub} --task bird --size 32" in read.stdout
    assert "/mgkit shift " in read.stdout and "waterbirds-build" not in read.stdout
    (tmp_path / "jobs.mk").unlink()
    built = _make_n(tmp_path, "DATASET=voc", "SCALE=tiny", f"VOC_ROOT={voc}", f"PLACES_ROOT={places}",
                    f"CUB_ROOT={cub}")
    assert (f"prepare waterbirds-build --cub-root {cub} --places-root {places} --correlation 1.0 --task place "
            "--size 32") in built.stdout
    (tmp_path / "jobs.mk").unlink()  # (one jobs file name here for every data set and scale)
    alone = _make_n(tmp_path, "DATASET=waterbirds", "SCALE=paper", f"WB_ROOT={wb}", f"CUB_ROOT={cub}")
    assert alone.returncode == 0, alone.stderr
    jobs = [x for x in alone.stdout.splitlines() if "set -o pipefail" in x]
    assert jobs and all("/shift/" in x or "/mgkit tables " in x or "prepare waterbirds " in x for x in jobs)
    assert sum("/mgkit shift " in x for x in jobs) == 2 * 4 * 3  # tasks x the paper's 4 seeds x (base + 2 losses)
    assert "calibrate_lambda" not in alone.stdout
    for args, words in ((["DATASET=waterbirds", f"WB_ROOT={wb}"], "DATASET=waterbirds needs CUB_ROOT=DIR"),
                        (["DATASET=voc", f"VOC_ROOT={voc}", f"PLACES_ROOT={places}"], "PLACES_ROOT needs CUB_ROOT"),
                        (["DATASET=voc", f"VOC_ROOT={voc}", f"WB_ROOT={wb}", "CUB_ROOT=/no/cub"],
                         "CUB_ROOT=/no/cub does not exist")):
        r = _make_n(tmp_path, "SCALE=tiny", *args)
        errors = [x for x in r.stderr.splitlines() if "error:" in x]
        assert r.returncode != 0 and len(errors) == 1 and words in errors[0], (args, r.stderr)
