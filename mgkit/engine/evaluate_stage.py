"""`mgkit evaluate`: score checkpoints on a split of a prepared data file as result-schema records.

One checkpoint gives a record of kind "evaluation" (optionally with the baseline scored the same way);
several guided runs (`--pareto`) give kind "pareto": every checkpoint of their validation Pareto fronts
scored on the evaluated split, and the non-dominated set of that merged pool.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mgkit import results
from mgkit.attribution import METHODS, PostProcess, evaluation_maps, post_process
from mgkit.data.facts import DataFacts, read_facts
from mgkit.data.loader import H5Split, make_loader
from mgkit.engine.checkpoint import CheckpointInfo, model_from_checkpoint
from mgkit.engine.distributed import DistEnv, pick_device
from mgkit.engine.rundir import Run
from mgkit.engine.split_metrics import evaluate, result_sections
from mgkit.errors import MgkitError, UsageError
from mgkit.fronts import pareto_front
from mgkit.losses import LOSS_POSTPROCESS
from mgkit.models import LAYERS, GuidedModel
from mgkit.progress import Reporter, log
from mgkit.results import HEADLINE_KEYS, PARETO_KEYS

MAPS = ("raw", "reference")


@dataclass(frozen=True)
class EvalOptions:
    """What `mgkit evaluate` and `mgkit shift` share (attribution/layer None: the run's own)."""

    data: str
    split: str = "test"
    threshold_split: str | None = "val"
    attribution: str | None = None
    layer: str | None = None
    maps: str = "raw"
    experiment: str | None = None
    seed: int = 0
    device: str = "auto"
    eval_batch_size: int = 64
    workers: int = 0
    amp: str = "none"
    iou_threshold: float = 0.5
    ig_steps: int = 16
    quiet: bool = False

    def check(self) -> None:
        if self.maps not in MAPS:
            raise UsageError(f"--maps must be raw or reference, got {self.maps!r}")
        if self.layer is not None and self.layer not in LAYERS:
            raise UsageError(f"--layer must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        if self.attribution is not None and not self.attribution.startswith("captum:") \
                and self.attribution not in METHODS:
            raise UsageError(f"--attribution must be one of {', '.join(METHODS)} or captum:NAME, "
                             f"got {self.attribution!r}")
        if self.amp not in ("none", "bf16"):
            raise UsageError(f"--amp must be none or bf16, got {self.amp!r}")
        if self.eval_batch_size < 1:
            raise UsageError("--eval-batch-size must be at least 1")


def maps_for(method: str):
    """The function computing evaluation maps for `method` (signature of `evaluation_maps`): the
    built-in methods through `evaluation_maps`, "captum:NAME" through mgkit.captum_methods."""
    if not method.startswith("captum:"):
        return evaluation_maps
    from mgkit.captum_methods import captum_pairs, parse_method

    parsed = parse_method(method)  # an unknown or refused name fails here, before any data is read

    def captum_maps(model, x, image_index, classes, *, method, layer, post, out_size, ig_steps):
        with torch.no_grad():
            logits = model(x)
        maps = captum_pairs(model, x, image_index, classes, parsed, layer, out_size, steps=ig_steps)
        # captum maps come at image size, so a post-processing choice applies there
        return post_process(maps, post, out_size), logits

    return captum_maps


def run_dir_of(path: str | Path, config: dict[str, Any]) -> str | None:
    """The run directory a checkpoint belongs to (runs/X/checkpoints/*.pt, runs/X/pareto/*.pt)."""
    p = Path(path)
    if p.parent.name in ("checkpoints", "pareto") and (p.parent.parent / "config.yaml").exists():
        return str(p.parent.parent)
    return config.get("out")


def _parent_sha(run: str | None) -> str | None:
    if run is None:
        return None
    prov = Run(run).provenance
    try:
        return json.loads(prov.read_text()).get("parent_sha256") if prov.exists() else None
    except (OSError, ValueError):
        return None


def checkpoint_identity(info: CheckpointInfo) -> dict[str, Any]:
    """Identity block of a checkpoint: its run's configuration and training data."""
    run = run_dir_of(info.path, info.config)
    data = info.data or {}
    return results.identity(info.config, family=info.family.name, data_hash=data.get("fingerprint"),
                            dataset=data.get("dataset"), task=data.get("task"), classes=info.classes,
                            bbox_frac=data.get("bbox_frac"), run=run, checkpoint=info.path, epoch=info.epoch,
                            parent_sha256=_parent_sha(run))


class Evaluator:
    """Scores checkpoints on one data file with one set of options (device and loaders built once)."""

    def __init__(self, opts: EvalOptions, ctx: DataFacts | None = None):
        opts.check()
        self.opts = opts
        self.ctx = ctx or read_facts(opts.data)
        self.ctx.require(opts.split)
        if opts.threshold_split is not None:
            self.ctx.require(opts.threshold_split, "--threshold-split")
        self.device = pick_device(opts.device, DistEnv())
        if opts.amp == "bf16" and self.device.type not in ("cuda", "cpu"):
            raise UsageError(f"--amp bf16 needs a CUDA device or the CPU, not {self.device.type}")

    def load(self, path: str | Path) -> tuple[GuidedModel, CheckpointInfo]:
        return model_from_checkpoint(path, device=self.device, expect_classes=self.ctx.classes,
                                     expect_image_size=self.ctx.image_size)

    def setting(self, model: GuidedModel, info: CheckpointInfo,
                attribution: str | None = None, layer: str | None = None) -> tuple[str, str, PostProcess]:
        own_attr, own_layer = info.own_setting()
        attribution = attribution or self.opts.attribution or own_attr
        layer = layer or self.opts.layer or own_layer
        if not attribution.startswith("captum:") and attribution not in model.supported_attributions:
            raise UsageError(f"--attribution {attribution} is not available for {model.name} "
                             f"({info.path}); it supports {', '.join(model.supported_attributions)}")
        post = PostProcess()
        loss = info.config.get("loss") if info.stage == "guide" else None
        if self.opts.maps == "reference" and loss is not None:
            post = PostProcess(*LOSS_POSTPROCESS[loss])
        return attribution, layer, post

    def pass_over(self, model: GuidedModel, split: str, attribution: str, layer: str, post: PostProcess,
                  chosen: float | None, description: str) -> dict[str, Any]:
        torch.manual_seed(self.opts.seed)
        loader = make_loader(H5Split(self.ctx.path, split, segmentation=True), self.opts.eval_batch_size,
                             shuffle=False, seed=self.opts.seed, workers=self.opts.workers,
                             pin=self.device.type == "cuda")
        with Reporter(quiet=self.opts.quiet) as rep:
            return evaluate(model, loader, device=self.device, attribution=attribution, layer=layer,
                            outside=self.ctx.outside, iou_threshold=self.opts.iou_threshold,
                            ig_steps=self.opts.ig_steps, group_names=self.ctx.group_names.get(split),
                            amp=self.opts.amp == "bf16", reporter=rep, description=description, post=post,
                            chosen_threshold=chosen, maps_fn=maps_for(attribution))

    def sections(self, model: GuidedModel, info: CheckpointInfo, split: str | None = None,
                 attribution: str | None = None, layer: str | None = None) -> dict[str, Any]:
        """`evaluation` plus the metric sections of one checkpoint on one split (threshold protocol included)."""
        split = split or self.opts.split
        self.ctx.require(split)
        attribution, layer, post = self.setting(model, info, attribution, layer)
        tsplit = self.opts.threshold_split
        chosen = None
        name = Path(info.path).name
        if tsplit is not None and tsplit != split:
            # The chosen threshold only needs the localization sweep of the threshold split.
            tres = self.pass_over(model, tsplit, attribution, layer, post, None, f"{name} {tsplit} (threshold)")
            chosen = tres["localization"]["best_threshold"]
        res = self.pass_over(model, split, attribution, layer, post, chosen, f"{name} {split}")
        if tsplit is not None and tsplit == split:
            chosen = res["localization"]["best_threshold"]
            res["localization"]["iou_chosen"] = res["localization"]["best_iou"]
        sec = result_sections(res, info.classes, self.ctx.group_names.get(split))
        if tsplit is None:
            sec["metrics"]["iou_chosen"] = None
        if not res["finite_logits"]:
            log(f"warning: {info.path} gives non-finite logits on {split}", quiet=self.opts.quiet)
        sec["evaluation"] = results.evaluation(
            split, attribution, layer, maps=self.opts.maps, iou_threshold=self.opts.iou_threshold,
            chosen_threshold=chosen, threshold_split=tsplit, data=self.ctx.path, data_hash=self.ctx.fingerprint,
            images=res["images"], seed=self.opts.seed)
        return sec

    def record(self, path: str | Path, baseline: str | Path | None = None) -> dict[str, Any]:
        """Kind "evaluation": one checkpoint; with `baseline`, the baseline scored at the same layer with
        the same attribution in section "baseline", and "delta" = model - baseline."""
        model, info = self.load(path)
        sec = self.sections(model, info)
        del model
        extra: dict[str, Any] = {}
        if baseline is not None:
            bmodel, binfo = self.load(baseline)
            ev = sec["evaluation"]
            bsec = self.sections(bmodel, binfo, attribution=ev["attribution"], layer=ev["layer"])
            extra["baseline"] = {"identity": checkpoint_identity(binfo), **bsec}
            extra["delta"] = delta(sec["metrics"], bsec["metrics"])
        return results.record("evaluation", checkpoint_identity(info), experiment=self.opts.experiment,
                              **sec, **extra)


def delta(metrics: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    """metrics - base for every headline metric (None where either is undefined)."""
    return {k: (None if metrics.get(k) is None or base.get(k) is None else float(metrics[k]) - float(base[k]))
            for k in HEADLINE_KEYS if k in metrics or k in base}


def pareto_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a guided run's validation Pareto front (runs/X/pareto/pareto.json)."""
    run = Run(run_dir)
    index = run.pareto_dir / "pareto.json"
    if not index.exists():
        raise MgkitError(f"{run_dir}: no Pareto front ({index} is missing; --pareto takes guided run directories)")
    try:
        entries = json.loads(index.read_text())["entries"]
        paths = [run.pareto_dir / e["checkpoint"] for e in entries]
    except (ValueError, KeyError, TypeError):
        raise MgkitError(f"{index}: not a Pareto index written by mgkit guide") from None
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise MgkitError(f"{index} lists {missing[0].name}, which is missing")
    if not paths:
        raise MgkitError(f"{index}: the front is empty")
    return paths


def merged_front(entries: list[dict[str, Any]], bin_width: float = 0.005) -> list[int]:
    """Indices of the non-dominated entries in (F1, EPG, IoU) on the evaluated split (the training
    front's 0.005 binning); entries with an undefined metric cannot be on it."""
    usable = [i for i, e in enumerate(entries) if all(e["metrics"].get(k) is not None for k in PARETO_KEYS)]
    keep = pareto_front([[entries[i]["metrics"][k] for k in PARETO_KEYS] for i in usable], bin_width)
    return sorted(usable[j] for j in keep)


def pareto_record(evaluator: Evaluator, run_dirs: list[str | Path]) -> dict[str, Any]:
    """Kind "pareto": every Pareto checkpoint of `run_dirs` evaluated, and the merged front."""
    if not run_dirs:
        raise UsageError("--pareto needs at least one run directory")
    paths = [p for d in run_dirs for p in pareto_checkpoints(d)]
    entries = [evaluator.record(p) for p in paths]
    ident = dict(entries[0]["identity"])
    # The pareto record stands for several runs: what differs between them is null at the top.
    for key in results.IDENTITY_KEYS:
        if any(e["identity"].get(key) != ident.get(key) for e in entries):
            ident[key] = None
    ident["checkpoint"] = None
    return results.record("pareto", ident, experiment=evaluator.opts.experiment,
                          evaluation=entries[0]["evaluation"], runs=[str(d) for d in run_dirs],
                          entries=entries, front=merged_front(entries))
