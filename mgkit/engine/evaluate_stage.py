"""`mgkit evaluate`: score checkpoints on a split of a prepared data file as result-schema records.

One checkpoint gives a record of kind "evaluation" (optionally with the baseline scored the same way);
several guided runs (`--pareto`) give kind "pareto": the checkpoints of their validation Pareto fronts
merged into one front on VALIDATION metrics (the paper's selection), each scored on the evaluated split.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mgkit import results
from mgkit.attribution import PostProcess, evaluation_maps, post_process
from mgkit.data.facts import DataFacts, read_facts
from mgkit.data.loader import H5Split, default_workers, make_loader
from mgkit.engine.checkpoint import CheckpointInfo, model_from_checkpoint
from mgkit.engine.distributed import DistEnv, pick_device
from mgkit.engine.rundir import Run
from mgkit.engine.split_metrics import evaluate, result_sections
from mgkit.errors import MgkitError, UsageError
from mgkit.fronts import pareto_front
from mgkit.losses import LOSS_POSTPROCESS
from mgkit.models import GuidedModel
from mgkit.progress import Reporter, log
from mgkit.results import HEADLINE_KEYS, PARETO_KEYS


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
    workers: int | None = None  # None: loader.default_workers for the device
    amp: str = "none"
    iou_threshold: float = 0.5
    ig_steps: int = 16
    quiet: bool = False

    def check(self) -> None:
        """Every value against its declaration in mgkit.options (what `mgkit evaluate` checks)."""
        from mgkit.options import EVALUATE, coerce

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in EVALUATE and value is not None:
                coerce(EVALUATE[f.name], value)


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
        if opts.workers is None:
            self.opts = opts = dataclasses.replace(opts, workers=default_workers(self.device))
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
        sec = result_sections(res, info.classes, self.ctx.group_names.get(split), keep_per_image=True)
        if tsplit is None:
            sec["metrics"]["iou_chosen"] = None
        if not res["finite_logits"]:
            log(f"warning: {info.path} gives non-finite logits on {split}", quiet=self.opts.quiet)
        sec["evaluation"] = results.evaluation(
            split, attribution, layer, maps=self.opts.maps, iou_threshold=self.opts.iou_threshold,
            chosen_threshold=chosen, threshold_split=tsplit, data=self.ctx.path, data_hash=self.ctx.fingerprint,
            images=res["images"], seed=self.opts.seed)
        return sec

    def check_checkpoints(self, paths: list[str | Path]) -> None:
        """Refuse, before any pass, a checkpoint that does not fit the data or the attribution and layer."""
        for path in paths:
            self.setting(*self.load(path))

    def check_baseline(self, path: str | Path, baseline: str | Path) -> None:
        """Refuse, before any pass, a baseline that does not fit the data or cannot be scored with the
        model's attribution and layer (e.g. a B-cos attribution for a vanilla baseline)."""
        model, info = self.load(path)
        bmodel, binfo = self.load(baseline)
        attribution, layer, _ = self.setting(model, info)
        self.setting(bmodel, binfo, attribution, layer)

    def record(self, path: str | Path, baseline: str | Path | None = None) -> dict[str, Any]:
        """Kind "evaluation": one checkpoint; with `baseline`, the baseline scored at the same layer with
        the same attribution in section "baseline", and "delta" = model - baseline."""
        if baseline is not None:
            self.check_baseline(path, baseline)
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


@dataclass(frozen=True)
class Candidate:
    """One checkpoint of a run's validation Pareto front, with the validation metrics it was kept for."""

    run: str
    path: Path
    epoch: int | None
    metrics: dict[str, float]  # F1, EPG, IoU on the selection split
    split: str
    bin_width: float


def pareto_candidates(run_dir: str | Path) -> list[Candidate]:
    """The checkpoints of a guided run's validation Pareto front (runs/X/pareto/pareto.json), each with
    the validation metrics the index records for it."""
    run = Run(run_dir)
    index = run.pareto_dir / "pareto.json"
    if not index.exists():
        raise MgkitError(f"{run_dir}: no Pareto front ({index} is missing; --pareto takes guided run directories)")
    try:
        doc = json.loads(index.read_text())
        # indexes written before the split was recorded were kept on validation too
        split, width = str(doc.get("split", "val")), float(doc.get("bin_width", 0.005))
        out = [Candidate(str(run_dir), run.pareto_dir / e["checkpoint"], e.get("epoch"),
                         {k: e[k] for k in PARETO_KEYS}, split, width) for e in doc["entries"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise MgkitError(f"{index}: not a Pareto index written by mgkit guide") from None
    missing = [c.path for c in out if not c.path.exists()]
    if missing:
        raise MgkitError(f"{index} lists {missing[0].name}, which is missing")
    if not out:
        raise MgkitError(f"{index}: the front is empty")
    return out


def merged_front(entries: list[dict[str, Any]], bin_width: float = 0.005) -> list[int]:
    """Indices of the non-dominated entries in (F1, EPG, IoU) of their "metrics" (the training front's
    0.005 binning); entries with an undefined metric cannot be on it."""
    usable = [i for i, e in enumerate(entries) if all(e["metrics"].get(k) is not None for k in PARETO_KEYS)]
    keep = pareto_front([[entries[i]["metrics"][k] for k in PARETO_KEYS] for i in usable], bin_width)
    return sorted(usable[j] for j in keep)


def select_on_validation(run_dirs: list[str | Path]) -> tuple[list[Candidate], dict[str, Any]]:
    """The paper's selection (§4 "Selecting the best models"): the checkpoints of all runs' validation
    fronts (the λ runs of one configuration) merged into one front on their VALIDATION metrics.

    Returns the selected candidates and the "selection" section: split, bin width, pool size, and per run
    how many of its checkpoints survived. Nothing here looks at the split being evaluated."""
    pool = [c for d in run_dirs for c in pareto_candidates(d)]
    splits = {c.split for c in pool}
    widths = {c.bin_width for c in pool}
    if len(splits) > 1 or len(widths) > 1:
        raise MgkitError(f"the runs' Pareto fronts were kept on different splits or bins ({sorted(splits)}, "
                         f"{sorted(widths)}); they cannot be merged into one front")
    width = widths.pop()
    keep = merged_front([{"metrics": c.metrics} for c in pool], width)
    chosen = [pool[i] for i in keep]
    section = {"split": splits.pop(), "metrics": list(PARETO_KEYS), "bin_width": width, "pool": len(pool),
               "selected": len(chosen),
               "per_run": {str(d): sum(c.run == str(d) for c in chosen) for d in dict.fromkeys(run_dirs)}}
    return chosen, section


def checked_pareto_record(evaluator: Evaluator, run_dirs: list[str | Path]) -> dict[str, Any]:
    """`pareto_record`, once every selected checkpoint is known to fit the data and the attribution (a
    mismatch is refused before the first pass, not after evaluating the others)."""
    if run_dirs:
        evaluator.check_checkpoints([c.path for c in select_on_validation(run_dirs)[0]])
    return pareto_record(evaluator, run_dirs)


def pareto_record(evaluator: Evaluator, run_dirs: list[str | Path]) -> dict[str, Any]:
    """Kind "pareto": the checkpoints selected on validation from all `run_dirs` together
    (`select_on_validation`), each evaluated on the evaluator's split. The test values are reported,
    never used to select: `front` lists every entry, and each entry keeps its validation metrics."""
    if not run_dirs:
        raise UsageError("--pareto needs at least one run directory")
    chosen, selection = select_on_validation(run_dirs)
    entries = []
    for c in chosen:
        rec = evaluator.record(c.path)
        rec["selection"] = {"split": c.split, "run": c.run, "epoch": c.epoch, "metrics": c.metrics}
        entries.append(rec)
    ident = dict(entries[0]["identity"])
    # The pareto record stands for several runs: what differs between them is null at the top.
    for key in results.IDENTITY_KEYS:
        if any(e["identity"].get(key) != ident.get(key) for e in entries):
            ident[key] = None
    ident["checkpoint"] = None
    return results.record("pareto", ident, experiment=evaluator.opts.experiment,
                          evaluation=entries[0]["evaluation"], runs=[str(d) for d in run_dirs],
                          selection=selection, entries=entries, front=list(range(len(entries))))
