"""The one training loop behind `mgkit train` (λ = 0) and `mgkit guide` (BCE + λ · L_loc).

Read top to bottom: set up processes, data and model; resume if the run directory has a checkpoint;
then per epoch train, evaluate on val, log a line, save last/best/Pareto checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from mgkit.artifacts import file_sha256, provenance, write_json_atomic, write_text_atomic
from mgkit.attribution import METHODS
from mgkit.config import RunConfig, config_from_dict, save_yaml
from mgkit.data.format import open_dataset
from mgkit.data.loader import H5Split, make_loader
from mgkit.engine import distributed as D
from mgkit.engine.checkpoint import (check_compatible, data_fingerprint, load_checkpoint, save_checkpoint,
                                     set_rng_state)
from mgkit.engine.evaluate import evaluate, headline
from mgkit.engine.pareto import ParetoArchive
from mgkit.engine.step import StepSpec, train_step
from mgkit.errors import MgkitError, UsageError
from mgkit.losses import LOSSES
from mgkit.models import LAYERS, MODEL_NAMES, Family, create_model
from mgkit.progress import Reporter, log

RUN_FILES = ("config.yaml", "provenance.json", "metrics.jsonl", "checkpoints", "pareto")


def validate(cfg: RunConfig, family: Family) -> None:
    """Flag values that cannot work together, each named."""
    if cfg.loss is not None and cfg.loss not in LOSSES:
        raise UsageError(f"--loss must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    supported = family.attributions
    for flag, value in (("--attribution", cfg.attribution), ("--eval-attribution", cfg.eval_attribution)):
        if value not in METHODS:
            raise UsageError(f"{flag} must be one of {', '.join(METHODS)}, got {value!r}")
        if value not in supported:
            raise UsageError(f"{flag} {value} is not available for {cfg.model} (choose {', '.join(supported)})")
    for flag, value in (("--layer", cfg.layer), ("--eval-layer", cfg.eval_layer)):
        if value not in LAYERS:
            raise UsageError(f"{flag} must be one of {', '.join(LAYERS)}, got {value!r}")
    checks = [
        (cfg.targets in ("random", "all"), f"--targets must be random or all, got {cfg.targets!r}"),
        (cfg.loc_reduction in ("sum", "mean"), f"--loc-reduction must be sum or mean, got {cfg.loc_reduction!r}"),
        (cfg.amp in ("none", "bf16"), f"--amp must be none or bf16, got {cfg.amp!r}"),
        (cfg.epochs >= 1, "--epochs must be at least 1"),
        (cfg.batch_size >= 1, "--batch-size must be at least 1"),
        (cfg.lr > 0, "--lr must be positive"),
        (cfg.eval_every >= 1, "--eval-every must be at least 1"),
        (cfg.dilate >= 0, "--dilate must be non-negative"),
        (cfg.stage != "guide" or cfg.loss is not None, "mgkit guide needs --loss"),
        # Riemann IntGrad replicates the batch along the path; in train mode BatchNorm would mix the
        # path points, so guided IntGrad uses X-DNN, where it is exact in one pass (the paper's choice).
        (cfg.stage != "guide" or cfg.attribution != "intgrad" or family.exact_intgrad,
         "--attribution intgrad for guidance needs an xdnn model (elsewhere use it with --eval-attribution)"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


class Run:
    """The files of one run directory."""

    def __init__(self, out: str | Path):
        self.dir = Path(out)
        self.config = self.dir / "config.yaml"
        self.metrics = self.dir / "metrics.jsonl"
        self.ckpt_dir = self.dir / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.best = self.ckpt_dir / "best_f1.pt"
        self.pareto_dir = self.dir / "pareto"

    def clear(self) -> None:
        """Remove what an earlier run of mgkit wrote here (and nothing else)."""
        for name in RUN_FILES:
            p = self.dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def metric_lines(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def append_metrics(self, line: dict[str, Any], keep_before: int | None = None) -> None:
        """Append one line; on resume first drop lines of epochs that will be redone."""
        lines = self.metric_lines()
        if keep_before is not None:
            lines = [x for x in lines if x["epoch"] < keep_before]
        lines.append(line)
        write_text_atomic(self.metrics, "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))


def _resolve(cfg: RunConfig, data_classes: list[str]) -> tuple[RunConfig, dict[str, Any] | None]:
    """Load the parent checkpoint (guide) and fill the model name from it, or the train default."""
    parent = None
    if cfg.stage == "guide":
        if not cfg.init_from:
            raise UsageError("mgkit guide needs --from CHECKPOINT (e.g. runs/BASE/checkpoints/best_f1.pt)")
        parent = load_checkpoint(cfg.init_from)
        if cfg.model is None:
            cfg = dataclasses.replace(cfg, model=parent["model_name"])
        check_compatible(parent, cfg.init_from, model_name=cfg.model, classes=data_classes)
    if cfg.model is None:
        cfg = dataclasses.replace(cfg, model="resnet50")
    if cfg.model not in MODEL_NAMES:
        raise UsageError(f"--model must be one of {', '.join(MODEL_NAMES)}, got {cfg.model!r}")
    return cfg, parent


def fit(cfg: RunConfig, *, restart: bool = False) -> dict[str, Any]:
    """Train (or guide) according to `cfg`, resuming an interrupted run in the same directory."""
    env = D.setup()
    try:
        return _fit(cfg, env, restart)
    finally:
        D.teardown(env)


def _fit(cfg: RunConfig, env: D.DistEnv, restart: bool) -> dict[str, Any]:
    quiet = cfg.quiet or not env.is_main
    with open_dataset(cfg.data) as ds:
        classes, fingerprint, mask_mode = ds.classes, data_fingerprint(ds), ds.mask_mode
        for split in ("train", "val"):
            ds.split(split)
        group_names = ds.split_info("val").group_names
    cfg, parent = _resolve(cfg, classes)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(classes), pretrained=cfg.pretrained and parent is None,
                         weights=cfg.weights if parent is None else None)
    cfg = cfg.resolved(model.family.name)
    validate(cfg, model.family)
    if parent is not None:
        model.net.load_state_dict(parent["model"])
    device = D.pick_device(cfg.device, env)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.amp == "bf16" and device.type != "cuda":
        raise UsageError("--amp bf16 needs a CUDA device")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    run = Run(cfg.out)
    start_epoch, best_f1 = 1, -1.0
    pareto = ParetoArchive(run.pareto_dir)
    problem = None
    if env.is_main and run.config.exists():
        if restart:
            run.clear()
        else:
            diff = config_from_dict(yaml.safe_load(run.config.read_text())).differences(cfg)
            if diff:
                problem = (f"{run.dir} holds a run with a different configuration ({', '.join(diff)}); "
                           "use another --out, or --restart to start over")
    problem = D.broadcast_object(problem, env)  # every process stops, not only rank 0
    if problem:
        raise MgkitError(problem)
    resume = D.broadcast_object(run.last.exists(), env)
    if resume:
        ckpt = load_checkpoint(run.last, map_location=device)
        check_compatible(ckpt, run.last, model_name=cfg.model, classes=classes)
        model.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start_epoch = ckpt["epoch"] + 1
        best_f1 = ckpt.get("best_f1", -1.0)
        pareto.load()
        log(f"resuming {run.dir} at epoch {start_epoch}", quiet=quiet)
    if env.is_main:
        run.dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run.config)
        write_json_atomic(run.dir / "provenance.json", provenance(
            data=str(cfg.data), data_fingerprint=fingerprint,
            parent=str(cfg.init_from) if cfg.init_from else None,
            parent_sha256=file_sha256(cfg.init_from) if cfg.init_from else None,
            world_size=env.world, device=str(device), torch=torch.__version__))

    ddp = (DistributedDataParallel(model.net, device_ids=[device.index] if device.type == "cuda" else None)
           if env.enabled else None)
    train_set = H5Split(cfg.data, "train")
    local_batch = max(cfg.batch_size // env.world, 1)
    train_loader = make_loader(train_set, local_batch, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                               rank=env.rank, world=env.world, pin=device.type == "cuda")
    val_loader = make_loader(H5Split(cfg.data, "val", segmentation=True), cfg.eval_batch_size, shuffle=False,
                             seed=cfg.seed, workers=cfg.workers) if env.is_main else None
    spec = StepSpec(loss=cfg.loss if cfg.stage == "guide" else None, attribution=cfg.attribution, layer=cfg.layer,
                    lam=cfg.lam, targets=cfg.targets, dilate=cfg.dilate, reduction=cfg.loc_reduction,
                    size_alpha=cfg.size_alpha, ig_steps=cfg.ig_steps, outside=mask_mode == "outside",
                    amp=cfg.amp == "bf16", channels_last=cfg.channels_last)

    def run_eval(rep: Reporter, epoch: int) -> dict[str, Any]:
        result = evaluate(model, val_loader, device=device, attribution=cfg.eval_attribution,
                          layer=cfg.eval_layer, outside=spec.outside, iou_threshold=cfg.iou_threshold,
                          ig_steps=cfg.ig_steps, group_names=group_names, amp=spec.amp,
                          channels_last=cfg.channels_last, reporter=rep, description=f"val {epoch}")
        return result

    summary: dict[str, Any] = {"run": str(run.dir), "model": cfg.model, "stage": cfg.stage}
    with Reporter(quiet=quiet) as rep:
        if env.is_main and cfg.stage == "guide" and start_epoch == 1:
            start = run_eval(rep, 0)
            run.append_metrics({"epoch": 0, "val": headline(start), "val_detail": _compact(start)}, keep_before=0)
        for epoch in range(start_epoch, cfg.epochs + 1):
            model.train()
            train_loader.sampler.sampler.set_epoch(epoch)
            # Target sampling depends only on (seed, epoch, rank): a resumed epoch draws the same classes.
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + env.rank)
            sums = {"loss": 0.0, "bce": 0.0, "loc": 0.0}
            n_steps, n_images, t0 = 0, 0, time.monotonic()
            for step, batch in enumerate(rep.track(train_loader, len(train_loader), f"epoch {epoch}/{cfg.epochs}")):
                out = train_step(model, batch.to(device), spec, optimizer, gen, env, forward_func=ddp)
                if not out["finite"]:
                    raise MgkitError(f"non-finite loss at epoch {epoch}, step {step + 1} (bce={out['bce']:.4g}, "
                                     f"loc={out['loc']:.4g}); the last good checkpoint is {run.last}")
                for k in sums:
                    sums[k] += out[k]
                n_steps += 1
                n_images += len(batch.index)
                rep.set_info(f"loss {out['loss']:.4f}")
            seconds = time.monotonic() - t0
            line: dict[str, Any] = {
                "epoch": epoch, "seconds": round(seconds, 3),
                "train": {k: v / max(n_steps, 1) for k, v in sums.items()},
                "train_images_per_s": round(n_images * env.world / max(seconds, 1e-9), 2),
            }
            stop = False
            if env.is_main:
                evaluated = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
                metrics = None
                if evaluated:
                    result = run_eval(rep, epoch)
                    metrics = headline(result)
                    line["val"] = metrics
                    line["val_detail"] = _compact(result)
                    stop = cfg.min_f1 is not None and metrics["f1"] < cfg.min_f1
                ckpt_args = dict(model=model, model_name=cfg.model, classes=classes, config=cfg.to_dict())
                if metrics is not None and metrics["f1"] > best_f1:
                    best_f1 = metrics["f1"]
                    save_checkpoint(run.best, **ckpt_args, epoch=epoch, metrics=metrics)
                if metrics is not None and cfg.stage == "guide":
                    pareto.offer(epoch, metrics, lambda path: save_checkpoint(path, **ckpt_args, epoch=epoch,
                                                                              metrics=metrics))
                run.append_metrics(line, keep_before=epoch)
                # last.pt is written last: a run killed before this point redoes the whole epoch.
                save_checkpoint(run.last, **ckpt_args, epoch=epoch, optimizer=optimizer, metrics=metrics,
                                extra={"best_f1": best_f1})
                if not quiet:
                    shown = " ".join(f"{k} {v:.4f}" for k, v in (metrics or {}).items())
                    log(f"epoch {epoch}: loss {line['train']['loss']:.4f} {shown}".rstrip())
            if D.broadcast_object(stop, env):
                log(f"stopping: val F1 fell below --min-f1 {cfg.min_f1}", quiet=quiet)
                break
            D.barrier(env)
    summary.update(epochs=cfg.epochs, best_f1=best_f1, last=str(run.last), best=str(run.best),
                   world_size=env.world, ranks_consistent=D.same_on_all_ranks(model, env))
    if cfg.stage == "guide":
        summary["pareto"] = pareto.entries
    lines = run.metric_lines() if env.is_main else []
    if lines:
        summary["final"] = lines[-1].get("val")
    return summary


def _compact(result: dict[str, Any]) -> dict[str, Any]:
    """The evaluation numbers worth a metrics.jsonl line (no per-class tables)."""
    cls = result["classification"]
    out: dict[str, Any] = {k: cls.get(k) for k in ("precision", "recall", "f1", "mAP")}
    loc = result.get("localization")
    if loc:
        out.update(epg=loc["epg"], iou=loc["iou"], best_threshold=loc["best_threshold"], best_iou=loc["best_iou"],
                   on_object=(loc.get("on_object") or {}).get("ratio"))
    if "groups" in result:
        out.update(worst_group=result["groups"]["worst_group"], mean_group=result["groups"]["mean_group"],
                   overall=result["groups"]["overall"])
    return out
