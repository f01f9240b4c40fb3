"""The one training loop behind `mgkit train` (λ = 0) and `mgkit guide` (BCE + λ · L_loc), split the
torchvision way: `setup` (processes, data checks, model, resume), `train_one_epoch`, `evaluate`
(engine.split_metrics), `end_of_epoch` (evaluation, metrics line, best / Pareto / last checkpoints) and `fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from mgkit import results
from mgkit import weights as imagenet_weights
from mgkit.artifacts import file_sha256, provenance, write_json_atomic
from mgkit.config import RunConfig, config_from_dict, resolve, save_yaml
from mgkit.data.facts import DataFacts, read_facts
from mgkit.data.loader import H5Split, default_workers, make_loader
from mgkit.engine import distributed as D
from mgkit.engine import tensorboard
from mgkit.engine.checkpoint import (check_compatible, load_checkpoint, non_finite_tensors,
                                     save_checkpoint, set_rng_state)
from mgkit.engine.split_metrics import evaluate, headline, result_sections
from mgkit.engine.pareto import ParetoArchive
from mgkit.engine.rundir import Run
from mgkit.engine.step import StepSpec, train_step
from mgkit.errors import FormatError, MgkitError, UsageError
from mgkit.models import GuidedModel, create_model
from mgkit.progress import Reporter, log


def read_data_info(cfg: RunConfig) -> DataFacts:
    """Read the data file's facts once, refusing data a run cannot use (one line each)."""
    data = read_facts(cfg.data)
    for split in ("train", "val"):
        if split not in data.splits:
            raise FormatError(f"{cfg.data}: no split '{split}' (has {', '.join(data.splits)})")
        if data.num_images[split] == 0:
            raise MgkitError(f"{cfg.data}: the {split} split is empty; {cfg.stage} needs {split} images")
    if cfg.stage == "guide" and not cfg.allow_unannotated and data.annotated["train"] == 0:
        raise MgkitError(f"{cfg.data}: no training image is annotated (bbox_frac {data.bbox_frac:g}), so "
                         "guidance would have no localization term; pass --allow-unannotated to run anyway")
    return data


def _resolve(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any] | None]:
    """Read the parent checkpoint (guide), then fill the model and per-family defaults and run the
    model-dependent checks (config.resolve), all before any data file is opened."""
    parent = load_checkpoint(cfg.init_from) if cfg.stage == "guide" else None
    return resolve(cfg, parent["model_name"] if parent is not None else None), parent


@dataclass
class Trainer:
    """Everything one run holds between epochs."""

    cfg: RunConfig
    env: D.DistEnv
    data: DataFacts
    run: Run
    model: GuidedModel
    optimizer: torch.optim.Optimizer
    device: torch.device
    spec: StepSpec
    forward_func: Callable[[torch.Tensor], torch.Tensor] | None  # DDP around model.net under torchrun
    pareto: ParetoArchive
    start_epoch: int = 1
    best_f1: float = -1.0
    best_epoch: int | None = None
    best_metrics: dict[str, Any] | None = None
    parent_sha256: str | None = None
    log_scalars: tensorboard.EpochLog = lambda epoch, line: None  # the run's TensorBoard log (_fit opens it)

    @property
    def quiet(self) -> bool:
        return self.cfg.quiet or not self.env.is_main

    def identity(self, *, checkpoint: str | Path | None = None, epoch: int | None = None) -> dict[str, Any]:
        cfg = self.cfg.to_dict()
        return results.identity(
            cfg, family=self.model.family.name, data_hash=self.data.fingerprint, dataset=self.data.source,
            task=self.data.task, classes=self.data.classes, bbox_frac=self.data.bbox_frac, run=str(self.run.dir),
            checkpoint=checkpoint, epoch=epoch,
            parent_sha256=self.parent_sha256)

    def last_good(self) -> str:
        """The sentence an error ends with: where training can be resumed from, if anywhere."""
        if self.run.last.exists():
            epoch = load_checkpoint(self.run.last)["epoch"]
            return f"the last good checkpoint is {self.run.last} (epoch {epoch})"
        return "no checkpoint was written"

    def checkpoint_args(self, epoch: int, metrics: dict[str, Any] | None) -> dict[str, Any]:
        return dict(model=self.model, model_name=self.cfg.model, classes=self.data.classes,
                    config=self.cfg.to_dict(), epoch=epoch, metrics=metrics, data=self.data.checkpoint_entry())


def make_optimizer(params, lr: float, device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """Adam as every training run builds it. The fused kernel (one pass over each parameter for the
    whole update, on CPU and CUDA) applies the same update rule as the default multi-tensor one and
    is about 2.5x faster on CPU for ResNet-50; other devices keep PyTorch's default."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


def setup(cfg: RunConfig, env: D.DistEnv, restart: bool) -> Trainer:
    """Check the data, build the model (from the parent checkpoint for guide), resume if the run
    directory holds a last.pt of the same configuration, write config.yaml and provenance.json."""
    cfg, parent = _resolve(cfg)
    data = read_data_info(cfg)
    if parent is not None:
        check_compatible(parent, cfg.init_from, model_name=cfg.model, classes=data.classes)
    start = _starting_weights(cfg, parent, env)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(data.classes), pretrained=cfg.pretrained and parent is None,
                         weights=cfg.weights if parent is None else None)
    if parent is not None:
        model.net.load_state_dict(parent["model"])
    device = D.pick_device(cfg.device, env)
    if cfg.workers is None:  # resolved here so that config.yaml and the checkpoints record the number used
        cfg = dataclasses.replace(cfg, workers=default_workers(device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if cfg.amp == "bf16" and device.type != "cuda":
        raise UsageError("--amp bf16 needs a CUDA device")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), cfg.lr, device)

    run = Run(cfg.out)
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

    forward_func = (DistributedDataParallel(model.net, device_ids=[device.index] if device.type == "cuda" else None)
                    if env.enabled else None)
    spec = StepSpec(loss=cfg.loss if cfg.stage == "guide" else None, attribution=cfg.attribution, layer=cfg.layer,
                    lam=cfg.lam, targets=cfg.targets, dilate=cfg.dilate, reduction=cfg.loc_reduction,
                    size_alpha=cfg.size_alpha, ig_steps=cfg.ig_steps, outside=data.outside,
                    amp=cfg.amp == "bf16", channels_last=cfg.channels_last)
    t = Trainer(cfg, env, data, run, model, optimizer, device, spec, forward_func, ParetoArchive(run.pareto_dir),
                parent_sha256=file_sha256(cfg.init_from) if cfg.init_from else None)
    if D.broadcast_object(run.last.exists(), env):
        ckpt = load_checkpoint(run.last, map_location=device)
        check_compatible(ckpt, run.last, model_name=cfg.model, classes=data.classes)
        model.net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        t.start_epoch = ckpt["epoch"] + 1
        t.best_f1 = ckpt.get("best_f1", -1.0)
        t.best_epoch = ckpt.get("best_epoch")
        t.best_metrics = ckpt.get("best_metrics")
        t.pareto.load()
        log(f"resuming {run.dir} at epoch {t.start_epoch}", quiet=t.quiet)
    if env.is_main:
        run.dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, run.config)
        write_json_atomic(run.provenance, provenance(
            data=str(cfg.data), data_fingerprint=data.fingerprint,
            parent=str(cfg.init_from) if cfg.init_from else None,
            parent_sha256=t.parent_sha256, world_size=env.world, device=str(device), torch=torch.__version__,
            start_weights=imagenet_weights.record(start) if start is not None else None))
    return t


def _starting_weights(cfg: RunConfig, parent: dict[str, Any] | None, env: D.DistEnv) -> Path | None:
    """The file a run without a parent starts from (--weights, or the ImageNet file of --pretrained, which
    rank 0 downloads into the torch hub cache when it is missing); None when it starts from scratch."""
    if parent is not None:
        return None
    if cfg.weights is not None:
        return Path(cfg.weights)
    if not cfg.pretrained:
        return None
    problem = None
    if env.is_main:
        try:
            imagenet_weights.ensure(cfg.model, quiet=cfg.quiet)
        except MgkitError as e:
            problem = str(e)
    problem = D.broadcast_object(problem, env)  # the other ranks wait for the download, and stop with rank 0
    if problem:
        raise MgkitError(problem)
    return imagenet_weights.ensure(cfg.model, quiet=True)


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Target sampling depends only on (seed, epoch, rank): a resumed epoch draws the same classes."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 101 + rank)


def train_one_epoch(t: Trainer, loader: DataLoader, epoch: int, rep: Reporter) -> dict[str, Any]:
    """One pass over the training split. Stops with MgkitError at the first step whose loss, or whose
    updated parameters or buffers, are not finite (nothing is saved from a non-finite model)."""
    cfg, env = t.cfg, t.env
    t.model.train()
    loader.sampler.sampler.set_epoch(epoch)
    gen = epoch_generator(cfg.seed, epoch, env.rank)
    sums = {"loss": 0.0, "bce": 0.0, "loc": 0.0}
    n_steps, n_images, t0 = 0, 0, time.monotonic()
    for step, batch in enumerate(rep.track(loader, len(loader), f"epoch {epoch}/{cfg.epochs}")):
        out = train_step(t.model, batch.to(t.device), t.spec, t.optimizer, gen, env, forward_func=t.forward_func)
        if not out["finite"]:
            raise MgkitError(f"non-finite loss at epoch {epoch}, step {step + 1} (bce={out['bce']:.4g}, "
                             f"loc={out['loc']:.4g}); {t.last_good()}")
        bad = non_finite_tensors(t.model)
        if bad:
            raise MgkitError(f"non-finite weights after epoch {epoch}, step {step + 1} (in {', '.join(bad[:3])}); "
                             f"{t.last_good()}")
        for k in sums:
            sums[k] += out[k]
        n_steps += 1
        n_images += len(batch.index)
        rep.set_info(f"loss {out['loss']:.4f}")
    seconds = time.monotonic() - t0
    return {"seconds": round(seconds, 3), "train": {k: v / max(n_steps, 1) for k, v in sums.items()},
            "train_images_per_s": round(n_images * env.world / max(seconds, 1e-9), 2)}


def run_validation(t: Trainer, loader: DataLoader, epoch: int, rep: Reporter) -> dict[str, Any]:
    """Validation of the current weights: the `evaluate` result (rank 0 only)."""
    cfg = t.cfg
    result = evaluate(t.model, loader, device=t.device, attribution=cfg.eval_attribution, layer=cfg.eval_layer,
                      outside=t.spec.outside, iou_threshold=cfg.iou_threshold, ig_steps=cfg.ig_steps,
                      group_names=t.data.group_names["val"], amp=t.spec.amp, channels_last=cfg.channels_last,
                      reporter=rep, description=f"val {epoch}")
    if not result["finite_logits"]:
        raise MgkitError(f"non-finite logits on val after epoch {epoch}; {t.last_good()}")
    return result


def validation_block(cfg: RunConfig, chosen: float | None) -> dict[str, Any]:
    """The `evaluation` block of a run's records: raw maps on val, the threshold chosen on val itself."""
    return results.evaluation("val", cfg.eval_attribution, cfg.eval_layer, maps="raw", iou_threshold=cfg.iou_threshold,
                              chosen_threshold=chosen, threshold_split="val" if chosen is not None else None)


def epoch_record(t: Trainer, epoch: int, result: dict[str, Any] | None, stats: dict[str, Any] | None) -> dict[str, Any]:
    """One metrics.jsonl line (result record of kind "epoch"); the legacy keys epoch, val, train stay."""
    sections: dict[str, Any] = {"epoch": epoch}
    if result is not None:
        sec = result_sections(result, t.data.classes, t.data.group_names["val"])
        m = sec["metrics"]
        sections.update(sec, val=headline(result), evaluation=validation_block(t.cfg, m["best_threshold"]))
    if stats is not None:
        sections.update(stats)
    return results.record("epoch", t.identity(epoch=epoch), **sections)


def end_of_epoch(t: Trainer, epoch: int, stats: dict[str, Any], val_loader: DataLoader | None,
                 rep: Reporter) -> bool:
    """Rank 0: evaluate (every --eval-every epochs and at the last), log the metrics line, save
    best_f1.pt, offer the epoch to the Pareto front (guide), then last.pt. Returns whether --min-f1
    asks to stop."""
    cfg, run = t.cfg, t.run
    result = None
    if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
        result = run_validation(t, val_loader, epoch, rep)
    line = epoch_record(t, epoch, result, stats)
    metrics = line.get("metrics")
    stop = False
    if result is not None:
        f1 = line["val"]["f1"]
        stop = cfg.min_f1 is not None and f1 < cfg.min_f1
        if f1 > t.best_f1:
            t.best_f1, t.best_epoch, t.best_metrics = f1, epoch, metrics
            save_checkpoint(run.best, **t.checkpoint_args(epoch, metrics))
        if cfg.stage == "guide":
            offer_pareto(t, epoch, metrics)
    run.append_metrics(line, keep_before=epoch)
    t.log_scalars(epoch, line)
    # last.pt is written last: a run killed before this point redoes the whole epoch.
    save_checkpoint(run.last, **t.checkpoint_args(epoch, metrics), optimizer=t.optimizer,
                    extra={"best_f1": t.best_f1, "best_epoch": t.best_epoch, "best_metrics": t.best_metrics})
    if not t.quiet:
        shown = " ".join(f"{k} {v:.4f}" for k, v in (line.get("val") or {}).items() if v is not None)
        log(f"epoch {epoch}: loss {stats['train']['loss']:.4f} {shown}".rstrip())
    return stop


def offer_pareto(t: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
    """Offer an epoch to the Pareto archive; an epoch without EPG or IoU (no pairs) cannot be placed."""
    if metrics.get("epg") is None or metrics.get("iou") is None:
        return
    t.pareto.offer(epoch, metrics, lambda path: save_checkpoint(path, **t.checkpoint_args(epoch, metrics)))


def summary_record(t: Trainer) -> dict[str, Any]:
    """The run's result record (kind "run"): identity of best_f1.pt, its validation metrics and the
    IoU threshold chosen on val, plus the legacy summary keys (run, model, stage, best_f1, final, ...)."""
    cfg, run = t.cfg, t.run
    lines = run.metric_lines()
    trained = [x for x in lines if x.get("seconds") is not None]  # every trained epoch, resumed runs included
    best = t.best_metrics or {}
    sections: dict[str, Any] = {
        "run": str(run.dir), "model": cfg.model, "stage": cfg.stage, "epochs": cfg.epochs,
        "best_f1": t.best_f1 if t.best_f1 >= 0 else None, "best_epoch": t.best_epoch,
        "last": str(run.last), "best": str(run.best), "world_size": t.env.world,
        "final": lines[-1].get("val") if lines else None,
        "metrics": best,
        "evaluation": validation_block(cfg, best.get("best_threshold")),
        "chosen_threshold": best.get("best_threshold"),
        "training": {"epochs": len(trained),
                     "seconds_per_epoch": sum(x["seconds"] for x in trained) / len(trained) if trained else None,
                     "images_per_s": (sum(x["train_images_per_s"] for x in trained) / len(trained)
                                      if trained else None)},
    }
    if cfg.stage == "guide":
        sections["pareto"] = t.pareto.entries
    return results.record("run", t.identity(checkpoint=run.best if t.best_epoch is not None else None,
                                            epoch=t.best_epoch), **sections)


def fit(cfg: RunConfig, *, restart: bool = False) -> dict[str, Any]:
    """Train (or guide) according to `cfg`, resuming an interrupted run in the same directory.
    Returns the run's summary record (also written to summary.json)."""
    env = D.setup()
    try:
        return _fit(cfg, env, restart)
    finally:
        D.teardown(env)


def _fit(cfg: RunConfig, env: D.DistEnv, restart: bool) -> dict[str, Any]:
    t = setup(cfg, env, restart)
    cfg = t.cfg
    local_batch = max(cfg.batch_size // env.world, 1)
    train_loader = make_loader(H5Split(cfg.data, "train"), local_batch, shuffle=True, seed=cfg.seed,
                               workers=cfg.workers, rank=env.rank, world=env.world, pin=t.device.type == "cuda")
    val_loader = make_loader(H5Split(cfg.data, "val", segmentation=True), cfg.eval_batch_size, shuffle=False,
                             seed=cfg.seed, workers=cfg.workers, pin=t.device.type == "cuda") if env.is_main else None
    scalars_log = tensorboard.epoch_log(t.run.dir) if env.is_main else contextlib.nullcontext(t.log_scalars)
    with Reporter(quiet=t.quiet) as rep, scalars_log as t.log_scalars:
        if env.is_main and cfg.stage == "guide" and t.start_epoch == 1:
            start = run_validation(t, val_loader, 0, rep)
            t.run.append_metrics(epoch_record(t, 0, start, None), keep_before=0)
        for epoch in range(t.start_epoch, cfg.epochs + 1):
            stats = train_one_epoch(t, train_loader, epoch, rep)
            stop = end_of_epoch(t, epoch, stats, val_loader, rep) if env.is_main else False
            if D.broadcast_object(stop, env):
                log(f"stopping: val F1 fell below --min-f1 {cfg.min_f1}", quiet=t.quiet)
                break
            D.barrier(env)
    consistent = D.same_on_all_ranks(t.model, env)
    if not env.is_main:
        return {}
    summary = summary_record(t)
    summary["ranks_consistent"] = consistent
    results.write_record(t.run.summary, summary)
    return summary
