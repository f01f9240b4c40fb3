"""The `mgkit` command line: parses options and calls one function per subcommand."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from mgkit import __version__
from mgkit.errors import MgkitError, UsageError

app = typer.Typer(
    name="mgkit",
    help="Model guidance: train classifiers whose explanations land on the objects that justify the label.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prepare_app = typer.Typer(help="Turn a raw data set into one compact HDF5 file.", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(fn: Callable) -> Callable:
    """Turn MgkitError into one line on stderr and an exit code (2 usage, 1 failed work)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # SIGTERM unwinds like Ctrl-C so atomic writers remove their temporary files.
        def _term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        try:
            previous = signal.signal(signal.SIGTERM, _term)
        except ValueError:  # not in the main thread (e.g. some test runners)
            previous = None
        try:
            return fn(*args, **kwargs)
        except UsageError as e:
            _fail(str(e), 2)
        except MgkitError as e:
            _fail(str(e), 1)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was written at the output path", 130)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """Print a result as JSON on stdout, or in human form."""
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        render(result)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mgkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Stages read and write files, so Make can chain them: prepare -> train -> guide -> evaluate -> tables."""


# ------------------------------------------------------------------------------------------------ prepare

OutOpt = typer.Option(..., "--out", help="Output HDF5 file (written to a temporary name, renamed when complete).")
BboxFracOpt = typer.Option(1.0, "--bbox-frac", min=0.0, max=1.0,
                           help="Fraction of training images whose boxes may be used for guidance.")
SeedOpt = typer.Option(0, "--seed", min=0, help="Seed for the --bbox-frac subsample (and any generated split).")
WorkersOpt = typer.Option(0, "--workers", min=0, help="Parallel image-decoding processes (0: in-process).")
ForceOpt = typer.Option(False, "--force", help="Overwrite an existing output file.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress output.")
JsonOpt = typer.Option(False, "--json", help="Print the summary as JSON on stdout.")
SkipBadOpt = typer.Option(False, "--skip-bad", help="Skip unreadable images or annotations and count them, instead of stopping.")


def _prepare(plan_fn: Callable[[], Any], out: Path, size: int, bbox_frac: float, seed: int, workers: int,
             force: bool, skip_bad: bool, quiet: bool, as_json: bool, options: dict[str, Any]) -> None:
    from mgkit.data.prepare import run_prepare
    from mgkit.progress import log

    out = Path(out)
    if out.exists() and not force:
        raise MgkitError(f"{out} already exists; pass --force to overwrite it")
    plan = plan_fn()
    for note in plan.notes:
        log(f"note: {note}", quiet=quiet)
    opts = {**options, "size": size, "bbox_frac": bbox_frac, "seed": seed, "skip_bad": skip_bad}
    summary = run_prepare(plan, out, size=size, bbox_frac=bbox_frac, seed=seed, workers=workers, force=force,
                          skip_bad=skip_bad, options=opts, quiet=quiet)

    def render(s: dict[str, Any]) -> None:
        typer.echo(f"wrote {s['out']} ({s['source']})")
        for split, c in s["splits"].items():
            extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in c.items()
                            if k not in ("images", "boxes", "annotated", "skipped_files") and v)
            typer.echo(f"  {split}: {c['images']} images, {c['boxes']} boxes, {c['annotated']} annotated{extra}")

    emit(summary, as_json, render)


@prepare_app.command("synthetic")
@handle_errors
def prepare_synthetic(
    out: Path = OutOpt,
    task: str = typer.Option("multilabel", "--task", help="multilabel (K shapes with spurious context cues) or birds (Waterbirds-100 analogue)."),
    num_classes: int = typer.Option(6, "--classes", min=2, max=12, help="Object classes for --task multilabel."),
    spurious: Optional[float] = typer.Option(None, "--spurious", min=0.0, max=1.0,
                                             help="Cue/class co-occurrence in train and val (default 0.9 multilabel, 1.0 birds)."),
    n_train: int = typer.Option(1500, "--train", min=1, help="Training images."),
    n_val: int = typer.Option(300, "--val", min=1, help="Validation images."),
    n_test: int = typer.Option(600, "--test", min=1, help="Test images (and as many in test_shifted)."),
    size: int = typer.Option(128, "--size", min=16, help="Square image size in pixels."),
    bbox_frac: float = BboxFracOpt, seed: int = SeedOpt, workers: int = WorkersOpt, force: bool = ForceOpt,
    quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Built-in procedural data (no download): shapes with spurious context cues, or a Waterbirds analogue.

    Example: [bold]mgkit prepare synthetic --out data/synth.h5[/bold]
    """
    from mgkit.data.sources import synthetic

    if task not in synthetic.TASKS:
        raise UsageError(f"--task must be one of {', '.join(synthetic.TASKS)}, got {task!r}")
    if spurious is None:
        spurious = synthetic.DEFAULT_SPURIOUS[task]
    opts = dict(task=task, num_classes=num_classes, spurious=spurious, n_train=n_train, n_val=n_val, n_test=n_test)
    _prepare(lambda: synthetic.plan(**opts, seed=seed), out, size, bbox_frac, seed, workers, force, False, quiet,
             as_json, {"source": "synthetic", **opts})


@prepare_app.command("voc")
@handle_errors
def prepare_voc(
    root: Path = typer.Option(..., "--root", help="The VOCdevkit folder (holding VOC2007/)."),
    year: str = typer.Option("2007", "--year", help="VOC year: the folder VOC{year} under --root."),
    out: Path = OutOpt,
    exclude_difficult: bool = typer.Option(False, "--exclude-difficult", help="Drop objects marked difficult (the reference keeps them)."),
    size: int = typer.Option(224, "--size", min=16, help="Square image size in pixels."),
    bbox_frac: float = BboxFracOpt, seed: int = SeedOpt, workers: int = WorkersOpt, force: bool = ForceOpt,
    skip_bad: bool = SkipBadOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """PASCAL VOC: train / val / test from ImageSets/Main, 20 classes, boxes and segmentation masks.

    Example: [bold]mgkit prepare voc --root ~/data/VOCdevkit --out data/voc2007.h5 --bbox-frac 0.01[/bold]
    """
    from mgkit.data.sources import voc

    opts = dict(root=str(root), year=year, exclude_difficult=exclude_difficult)
    _prepare(lambda: voc.plan(root, year=year, exclude_difficult=exclude_difficult), out, size, bbox_frac, seed,
             workers, force, skip_bad, quiet, as_json, {"source": "voc", **opts})


@prepare_app.command("coco")
@handle_errors
def prepare_coco(
    out: Path = OutOpt,
    root: Optional[Path] = typer.Option(None, "--root", help="COCO folder with annotations/ and train{year}/, val{year}/."),
    year: str = typer.Option("2014", "--year", help="COCO release year."),
    train_split_file: Optional[Path] = typer.Option(None, "--train-split-file", help="The reference's train2014_train_split.json."),
    val_split_file: Optional[Path] = typer.Option(None, "--val-split-file", help="The reference's train2014_val_split.json."),
    val_frac: float = typer.Option(0.1, "--val-frac", min=0.0, max=0.9, help="Seeded val share of train when no split files are given."),
    include_crowd: bool = typer.Option(True, "--include-crowd/--exclude-crowd", help="Count iscrowd annotations for labels and boxes (reference: included)."),
    train_ann_file: Optional[Path] = typer.Option(None, "--train-ann-file", help="instances JSON for train (overrides --root layout)."),
    train_image_dir: Optional[Path] = typer.Option(None, "--train-image-dir"),
    val_ann_file: Optional[Path] = typer.Option(None, "--val-ann-file", help="instances JSON for val (else val is split off train)."),
    val_image_dir: Optional[Path] = typer.Option(None, "--val-image-dir"),
    test_ann_file: Optional[Path] = typer.Option(None, "--test-ann-file", help="instances JSON for test (default: val{year})."),
    test_image_dir: Optional[Path] = typer.Option(None, "--test-image-dir"),
    size: int = typer.Option(224, "--size", min=16, help="Square image size in pixels."),
    bbox_frac: float = BboxFracOpt, seed: int = SeedOpt, workers: int = WorkersOpt, force: bool = ForceOpt,
    skip_bad: bool = SkipBadOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """MS COCO: train{year} split into train/val, val{year} as test, 80 categories.

    Example: [bold]mgkit prepare coco --root ~/data/coco --out data/coco2014.h5 --workers 8[/bold]
    """
    from mgkit.data.sources import coco

    opts = dict(root=root, year=year, train_split_file=train_split_file, val_split_file=val_split_file,
                val_frac=val_frac, include_crowd=include_crowd, train_ann_file=train_ann_file,
                train_image_dir=train_image_dir, val_ann_file=val_ann_file, val_image_dir=val_image_dir,
                test_ann_file=test_ann_file, test_image_dir=test_image_dir)
    _prepare(lambda: coco.plan(**opts, seed=seed), out, size, bbox_frac, seed, workers, force, skip_bad, quiet,
             as_json, {"source": "coco", **{k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()}})


@prepare_app.command("waterbirds")
@handle_errors
def prepare_waterbirds(
    root: Path = typer.Option(..., "--root", help="The Waterbirds folder holding metadata.csv."),
    out: Path = OutOpt,
    cub_root: Optional[Path] = typer.Option(None, "--cub-root", help="CUB_200_2011 folder, for bird boxes (without it: no boxes)."),
    task: str = typer.Option("bird", "--task", help="bird (landbird vs waterbird, mask inside the box) or place (land vs water, mask outside)."),
    size: int = typer.Option(224, "--size", min=16, help="Square image size in pixels."),
    bbox_frac: float = BboxFracOpt, seed: int = SeedOpt, workers: int = WorkersOpt, force: bool = ForceOpt,
    skip_bad: bool = SkipBadOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Waterbirds (e.g. Waterbirds-100 of GALS): metadata.csv splits, groups, CUB bird boxes.

    Example: [bold]mgkit prepare waterbirds --root ~/data/waterbird_1.0_forest2water2 --cub-root ~/data/CUB_200_2011 --bbox-frac 0.01 --out data/wb100.h5[/bold]
    """
    from mgkit.data.sources import waterbirds

    if task not in waterbirds.TASKS:
        raise UsageError(f"--task must be one of {', '.join(waterbirds.TASKS)}, got {task!r}")
    opts = dict(root=str(root), cub_root=str(cub_root) if cub_root else None, task=task)
    _prepare(lambda: waterbirds.plan(root, cub_root=cub_root, task=task), out, size, bbox_frac, seed, workers, force,
             skip_bad, quiet, as_json, {"source": "waterbirds", **opts})


@prepare_app.command("reference")
@handle_errors
def prepare_reference(
    root: Path = typer.Option(..., "--root", help="Folder with the reference implementation's train.pt, val.pt, test.pt."),
    out: Path = OutOpt,
    dataset: str = typer.Option(..., "--dataset", help="Which class list the files use: voc or coco."),
    bbox_frac: float = BboxFracOpt, seed: int = SeedOpt, force: bool = ForceOpt, quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Convert the reference implementation's preprocessed {train,val,test}.pt files.

    Example: [bold]mgkit prepare reference --root ~/Model-Guidance/datasets/VOC2007/processed --dataset voc --out data/voc.h5[/bold]
    """
    from mgkit.data.sources import reference

    if out.exists() and not force:  # before opening possibly huge .pt files
        raise MgkitError(f"{out} already exists; pass --force to overwrite it")
    plan = reference.plan(root, dataset=dataset)
    _prepare(lambda: plan, out, plan.native_size, bbox_frac, seed, 0, force, False, quiet, as_json,
             {"source": "reference", "root": str(root), "dataset": dataset})


# ------------------------------------------------------------------------------------------------ inspect


@app.command("inspect")
@handle_errors
def inspect_cmd(
    path: Path = typer.Argument(..., help="A data file made by `mgkit prepare`."),
    as_json: bool = JsonOpt,
) -> None:
    """Summarise and validate a prepared data file: splits, classes, boxes, groups, provenance.

    Example: [bold]mgkit inspect data/synth.h5 --json[/bold]
    """
    from mgkit.data.inspect import render_summary, summarize

    emit(summarize(path), as_json, render_summary)


# ------------------------------------------------------------------------------------------ train / guide

ConfigOpt = typer.Option(None, "--config", help="YAML file with any of these options (flags override it).")
DataOpt = typer.Option(None, "--data", help="Prepared data file (mgkit prepare).")
RunOutOpt = typer.Option(None, "--out", help="Run directory; re-running the same command resumes it.")
ModelOpt = typer.Option(None, "--model", help="resnet18 | resnet50 | bcos-resnet18 | bcos-resnet50 | xdnn-resnet18 | xdnn-resnet50.")
EpochsOpt = typer.Option(None, "--epochs", help="Epochs (default per model family, see README).")
LrOpt = typer.Option(None, "--lr", help="Adam learning rate, constant (default per model family).")
BatchOpt = typer.Option(None, "--batch-size", help="Global batch size over all processes (default per family).")
EvalBatchOpt = typer.Option(None, "--eval-batch-size", help="Batch size of the validation pass.")
RunSeedOpt = typer.Option(None, "--seed", min=0, help="Seed of initialisation, data order and target sampling.")
DeviceOpt = typer.Option(None, "--device", help="auto | cpu | cuda | mps.")
AmpOpt = typer.Option(None, "--amp", help="none | bf16 (CUDA only).")
ChannelsLastOpt = typer.Option(None, "--channels-last/--no-channels-last", help="channels_last memory format.")
LoaderWorkersOpt = typer.Option(None, "--workers", help="DataLoader worker processes.")
EvalEveryOpt = typer.Option(None, "--eval-every", help="Validate every k epochs (and after the last).")
MinF1Opt = typer.Option(None, "--min-f1", help="Stop when validation F1 falls below this (reference --min_fscore).")
EvalAttrOpt = typer.Option(None, "--eval-attribution", help="Attribution for validation EPG/IoU (default: the training one).")
EvalLayerOpt = typer.Option(None, "--eval-layer", help="Layer for validation EPG/IoU (default: the training one).")
IouThrOpt = typer.Option(None, "--iou-threshold", help="Fixed IoU threshold on min-max normalised maps (reference 0.5).")
RestartOpt = typer.Option(False, "--restart", help="Start over in an existing run directory instead of resuming.")


def _fit(stage: str, config: Optional[Path], values: dict[str, Any], restart: bool, as_json: bool) -> None:
    from mgkit.config import build_config
    from mgkit.engine.trainer import fit

    cfg = build_config(stage, values, config)
    summary = fit(cfg, restart=restart)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return

    def render(s: dict[str, Any]) -> None:
        final = s.get("final") or {}
        nums = " ".join(f"{k}={v:.4f}" for k, v in final.items() if v is not None)
        typer.echo(f"{s['stage']} finished: {s['run']} (best val F1 {s['best_f1']:.4f}; last epoch {nums})")

    emit(summary, as_json, render)


@app.command("train")
@handle_errors
def train_cmd(
    config: Optional[Path] = ConfigOpt, data: Optional[Path] = DataOpt, out: Optional[Path] = RunOutOpt,
    model: Optional[str] = ModelOpt,
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from ImageNet weights (local torch hub cache)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Start from a weights file."),
    epochs: Optional[int] = EpochsOpt, lr: Optional[float] = LrOpt, batch_size: Optional[int] = BatchOpt,
    eval_batch_size: Optional[int] = EvalBatchOpt, seed: Optional[int] = RunSeedOpt,
    device: Optional[str] = DeviceOpt, amp: Optional[str] = AmpOpt, channels_last: Optional[bool] = ChannelsLastOpt,
    workers: Optional[int] = LoaderWorkersOpt, eval_every: Optional[int] = EvalEveryOpt,
    min_f1: Optional[float] = MinF1Opt,
    eval_attribution: Optional[str] = EvalAttrOpt, eval_layer: Optional[str] = EvalLayerOpt,
    iou_threshold: Optional[float] = IouThrOpt,
    restart: bool = RestartOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Baseline training: BCE, Adam, constant learning rate (the reference's protocol).

    Example: [bold]mgkit train --data data/voc.h5 --model bcos-resnet50 --pretrained --out runs/bcos-base[/bold]
    """
    values = dict(data=data, out=out, model=model, pretrained=pretrained, weights=weights, epochs=epochs, lr=lr,
                  batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, device=device, amp=amp,
                  channels_last=channels_last, workers=workers, eval_every=eval_every, min_f1=min_f1,
                  eval_attribution=eval_attribution, eval_layer=eval_layer, iou_threshold=iou_threshold,
                  quiet=quiet or None)
    _fit("train", config, {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}, restart, as_json)


@app.command("guide")
@handle_errors
def guide_cmd(
    config: Optional[Path] = ConfigOpt, data: Optional[Path] = DataOpt, out: Optional[Path] = RunOutOpt,
    init_from: Optional[Path] = typer.Option(None, "--from", help="Checkpoint to fine-tune (e.g. runs/BASE/checkpoints/best_f1.pt)."),
    model: Optional[str] = ModelOpt,
    loss: Optional[str] = typer.Option(None, "--loss", help="energy | l1 | ppce | rrr | energy-size."),
    attribution: Optional[str] = typer.Option(None, "--attribution", help="ixg | bcos | gradcam | intgrad (default per family)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="input | mid1 | mid2 | mid3 | final."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="Weight of the localization loss (L = BCE + λ·L_loc)."),
    targets: Optional[str] = typer.Option(None, "--targets", help="random: one ground-truth class per image per step (reference); all."),
    dilate: Optional[float] = typer.Option(None, "--dilate", help="Grow each training box side by p·w and p·h."),
    loc_reduction: Optional[str] = typer.Option(None, "--loc-reduction", help="sum (reference) or mean over annotated images."),
    size_alpha: Optional[float] = typer.Option(None, "--size-alpha", help="α of energy-size: 1 − EPG / area^α."),
    ig_steps: Optional[int] = typer.Option(None, "--ig-steps", help="Riemann steps of IntGrad on non-X-DNN models."),
    epochs: Optional[int] = EpochsOpt, lr: Optional[float] = LrOpt, batch_size: Optional[int] = BatchOpt,
    eval_batch_size: Optional[int] = EvalBatchOpt, seed: Optional[int] = RunSeedOpt,
    device: Optional[str] = DeviceOpt, amp: Optional[str] = AmpOpt, channels_last: Optional[bool] = ChannelsLastOpt,
    workers: Optional[int] = LoaderWorkersOpt, eval_every: Optional[int] = EvalEveryOpt,
    min_f1: Optional[float] = MinF1Opt,
    eval_attribution: Optional[str] = EvalAttrOpt, eval_layer: Optional[str] = EvalLayerOpt,
    iou_threshold: Optional[float] = IouThrOpt,
    restart: bool = RestartOpt, quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Guided fine-tuning: L = BCE + λ · L_loc on attributions of one ground-truth class per image.

    Example: [bold]mgkit guide --from runs/base/checkpoints/best_f1.pt --data data/voc.h5 --loss energy --attribution bcos --layer input --lambda 1e-3 --out runs/energy-input[/bold]
    """
    values = dict(data=data, out=out, init_from=init_from, model=model, loss=loss, attribution=attribution,
                  layer=layer, lam=lam, targets=targets, dilate=dilate, loc_reduction=loc_reduction,
                  size_alpha=size_alpha, ig_steps=ig_steps, epochs=epochs, lr=lr, batch_size=batch_size,
                  eval_batch_size=eval_batch_size, seed=seed, device=device, amp=amp, channels_last=channels_last,
                  workers=workers, eval_every=eval_every, min_f1=min_f1, eval_attribution=eval_attribution,
                  eval_layer=eval_layer, iou_threshold=iou_threshold, quiet=quiet or None)
    _fit("guide", config, {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}, restart, as_json)


@app.command("export")
@handle_errors
def export_cmd(
    checkpoint: Path = typer.Argument(..., help="An mgkit checkpoint (best_f1.pt, a Pareto file, last.pt)."),
    out: Path = typer.Option(..., "--out", help="Where to write the plain state dict (e.g. model.pt)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a checkpoint's network as a plain torchvision / bcos state dict.

    Load it with `torchvision.models.resnet18(num_classes=K).load_state_dict(torch.load("model.pt",
    weights_only=True))` (or the bcos model of the same name with a K-class head).
    """
    from mgkit.engine.checkpoint import export_state_dict

    emit(export_state_dict(checkpoint, out), as_json,
         lambda s: typer.echo(f"wrote {s['out']}: {s['model']} with {len(s['classes'])} classes ({s['tensors']} tensors)"))


def _eval_options(**kw: Any):
    from mgkit.engine.assess import EvalOptions

    tsplit = kw.pop("threshold_split")
    kw["threshold_split"] = None if tsplit in (None, "none") else tsplit
    return EvalOptions(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


def _write_and_show(rec: dict[str, Any], out: Optional[Path], as_json: bool, show: Callable) -> None:
    from mgkit.results import dumps, write_record

    if out is not None:
        write_record(out, rec)
    if as_json:
        typer.echo(dumps(rec, indent=2))
    else:
        show(rec)
        if out is not None:
            typer.echo(f"wrote {out}")


EvalDataOpt = typer.Option(..., "--data", help="Prepared data file to evaluate on.")
EvalOutOpt = typer.Option(None, "--out", help="Result record to write (JSON, written atomically).")
ExperimentOpt = typer.Option(None, "--experiment", help="Experiment name stored in the record (mgkit tables groups by it).")
EvalAttributionOpt = typer.Option(None, "--attribution", help="ixg | bcos | gradcam | intgrad | captum:NAME (default: the run's own).")
EvalLayerOpt2 = typer.Option(None, "--layer", help="input | mid1 | mid2 | mid3 | final (default: the run's own).")
MapsOpt = typer.Option("raw", "--maps", help="raw: maps as the metrics define them; reference: the training loss's post-processing first (as the reference evaluates).")
EvalSeedOpt = typer.Option(0, "--seed", min=0, help="Seed (recorded; evaluation itself is deterministic).")
EvalDeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda | mps.")
EvalBatchOpt2 = typer.Option(64, "--eval-batch-size", min=1, help="Images per batch.")
EvalWorkersOpt = typer.Option(0, "--workers", min=0, help="DataLoader worker processes.")
EvalAmpOpt = typer.Option("none", "--amp", help="none | bf16: bf16 autocast for forward and attribution (CUDA only); maps and metrics stay float32, numbers may differ in the 3rd decimal.")
EvalIouOpt = typer.Option(0.5, "--iou-threshold", help="Fixed IoU threshold on min-max normalised maps.")
IgStepsOpt = typer.Option(16, "--ig-steps", min=1, help="Riemann steps of IntGrad on non-X-DNN models.")
BaselineOpt = typer.Option(None, "--baseline", help="Baseline checkpoint, scored with the same attribution and layer.")


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    checkpoints: Optional[list[Path]] = typer.Argument(None, help="Checkpoint(s) to evaluate (one record each)."),
    data: Path = EvalDataOpt,
    split: str = typer.Option("test", "--split", help="Split to report."),
    threshold_split: str = typer.Option("val", "--threshold-split", help="Split on which the IoU threshold is chosen (paper protocol); none: no chosen threshold."),
    attribution: Optional[str] = EvalAttributionOpt, layer: Optional[str] = EvalLayerOpt2, maps: str = MapsOpt,
    baseline: Optional[Path] = BaselineOpt,
    pareto: Optional[list[Path]] = typer.Option(None, "--pareto", help="Guided run directories: evaluate every Pareto checkpoint and write the merged front."),
    experiment: Optional[str] = ExperimentOpt, out: Optional[Path] = EvalOutOpt,
    seed: int = EvalSeedOpt, device: str = EvalDeviceOpt, eval_batch_size: int = EvalBatchOpt2,
    workers: int = EvalWorkersOpt, amp: str = EvalAmpOpt, iou_threshold: float = EvalIouOpt, ig_steps: int = IgStepsOpt,
    quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Score a checkpoint on a split: F1, mAP, EPG, IoU (fixed and chosen threshold), per class and box size.

    Example: [bold]mgkit evaluate runs/energy/checkpoints/best_f1.pt --data data/voc.h5 --split test --baseline runs/base/checkpoints/best_f1.pt --out results/energy.json[/bold]
    """
    from mgkit.engine.assess import Evaluator, pareto_record
    from mgkit.engine.show import show_evaluation, show_pareto

    checkpoints = [*(checkpoints or [])]
    pareto = [*(pareto or [])]
    if pareto and checkpoints:
        # typer puts run directories after --pareto RUN into the positional list
        pareto, checkpoints = pareto + checkpoints, []
    if not pareto and len(checkpoints) != 1:
        raise UsageError("mgkit evaluate takes one checkpoint (or --pareto RUN_DIR...)")
    if pareto and baseline is not None:
        raise UsageError("--baseline cannot be combined with --pareto")
    ev = Evaluator(_eval_options(data=data, split=split, threshold_split=threshold_split, attribution=attribution,
                                 layer=layer, maps=maps, experiment=experiment, seed=seed, device=device,
                                 eval_batch_size=eval_batch_size, workers=workers, amp=amp,
                                 iou_threshold=iou_threshold, ig_steps=ig_steps, quiet=quiet))
    if pareto:
        _write_and_show(pareto_record(ev, pareto), out, as_json, show_pareto)
    else:
        _write_and_show(ev.record(checkpoints[0], baseline), out, as_json, show_evaluation)


@app.command("shift")
@handle_errors
def shift_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint to test under distribution shift."),
    data: Path = EvalDataOpt, baseline: Optional[Path] = BaselineOpt,
    attribution: Optional[str] = EvalAttributionOpt, layer: Optional[str] = EvalLayerOpt2, maps: str = MapsOpt,
    experiment: Optional[str] = ExperimentOpt, out: Optional[Path] = EvalOutOpt,
    seed: int = EvalSeedOpt, device: str = EvalDeviceOpt, eval_batch_size: int = EvalBatchOpt2,
    workers: int = EvalWorkersOpt, amp: str = EvalAmpOpt, ig_steps: int = IgStepsOpt,
    quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Robustness to a spurious cue: per-group and worst-group accuracy (data with groups), and test vs
    test_shifted (synthetic data with inverted cues), next to a baseline.

    Example: [bold]mgkit shift runs/energy/checkpoints/best_f1.pt --data data/birds.h5 --baseline runs/base/checkpoints/best_f1.pt --out results/shift/energy.json[/bold]
    """
    from mgkit.engine.assess import Evaluator
    from mgkit.engine.shift import shift_record
    from mgkit.engine.show import show_shift

    ev = Evaluator(_eval_options(data=data, split="test", threshold_split=None, attribution=attribution,
                                 layer=layer, maps=maps, experiment=experiment, seed=seed, device=device,
                                 eval_batch_size=eval_batch_size, workers=workers, amp=amp, ig_steps=ig_steps,
                                 quiet=quiet))
    _write_and_show(shift_record(ev, checkpoint, baseline), out, as_json, show_shift)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
