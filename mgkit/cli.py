"""The `mgkit` command line: parses options and calls one function per subcommand."""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from typer.core import TyperCommand

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import UsageError as ClickUsageError

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


INTERRUPTED = "interrupted; nothing was written at the output path"


def handle_errors(fn: Callable | None = None, *, interrupted: str = INTERRUPTED) -> Any:
    """Turn errors meant for people into one line on stderr and an exit code (2 usage, 1 failed work).

    Use as `@handle_errors` or `@handle_errors(interrupted="...")`: `interrupted` is what Ctrl-C or
    SIGTERM prints (exit code 130), e.g. that a run can be resumed.
    """
    if fn is None:
        return functools.partial(handle_errors, interrupted=interrupted)

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
            _fail(interrupted, 130)
        except OSError as e:  # the file system refused (permissions, full disk, a file where a folder should be)
            where = f"{e.filename}: " if e.filename else ""
            _fail(f"{where}{e.strerror or e}", 1)
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


def _check_out(out: Path, force: bool) -> None:
    """Refuse an --out that cannot become the output file, before any work is done."""
    from mgkit.artifacts import remove_stale_tmp

    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give the path of the .h5 file to write")
    if out.exists() and not force:
        raise MgkitError(f"{out} already exists; pass --force to overwrite it")
    folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), Path("."))
    if not folder.is_dir():
        raise UsageError(f"--out {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MgkitError(f"cannot write in {folder}: permission denied (choose another --out)")
    remove_stale_tmp(out)  # leftovers of a killed earlier run


def _prepare(plan_fn: Callable[[], Any], out: Path, size: int, bbox_frac: float, seed: int, workers: int,
             force: bool, skip_bad: bool, quiet: bool, as_json: bool, options: dict[str, Any]) -> None:
    from mgkit.data.prepare import MAX_SIZE, run_prepare
    from mgkit.progress import log

    out = Path(out)
    if size > MAX_SIZE:
        raise UsageError(f"--size {size} is too large (at most {MAX_SIZE} pixels; the paper uses 224)")
    _check_out(out, force)
    plan = plan_fn()
    for note in plan.notes:
        log(f"note: {note}", quiet=quiet)
    # Warnings show even with --quiet (the file may not be what was meant); the source's before the
    # long run, those found while writing (empty splits) after it.
    for warning in plan.warnings:
        typer.echo(f"warning: {warning}", err=True)
    opts = {**options, "size": size, "bbox_frac": bbox_frac, "seed": seed, "skip_bad": skip_bad}
    try:
        summary = run_prepare(plan, out, size=size, bbox_frac=bbox_frac, seed=seed, workers=workers, force=force,
                              skip_bad=skip_bad, options=opts, quiet=quiet)
    except OSError as e:  # disk full, folder removed meanwhile, ...: the temporary file is already gone
        reason = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MgkitError(f"{e.filename or out}: writing the data set failed ({reason}); nothing was written") from None
    for warning in summary["warnings"][len(plan.warnings):]:
        typer.echo(f"warning: {warning}", err=True)

    def render(s: dict[str, Any]) -> None:
        typer.echo(f"wrote {s['out']} ({s['source']})")
        for split, c in s["splits"].items():
            extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in c.items()
                            if k not in ("images", "boxes", "annotated", "skipped_files") and v)
            typer.echo(f"  {split}: {c['images']} images, {c['boxes']} boxes, {c['annotated']} annotated{extra}")
        for key, value in s["source_stats"].items():
            if value:
                typer.echo(f"  source: {key.replace('_', ' ')} {value}")
        if s["warnings"]:
            typer.echo(f"  {len(s['warnings'])} warning(s), see above")

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

    No Waterbirds folder? Build one from CUB and Places with [bold]mgkit prepare waterbirds-build[/bold].

    Example: [bold]mgkit prepare waterbirds --root ~/data/waterbird_1.0_forest2water2 --cub-root ~/data/CUB_200_2011 --bbox-frac 0.01 --out data/wb100.h5[/bold]
    """
    from mgkit.data.sources import waterbirds

    if task not in waterbirds.TASKS:
        raise UsageError(f"--task must be one of {', '.join(waterbirds.TASKS)}, got {task!r}")
    opts = dict(root=str(root), cub_root=str(cub_root) if cub_root else None, task=task)
    _prepare(lambda: waterbirds.plan(root, cub_root=cub_root, task=task), out, size, bbox_frac, seed, workers, force,
             skip_bad, quiet, as_json, {"source": "waterbirds", **opts})


@prepare_app.command("waterbirds-build")
@handle_errors
def prepare_waterbirds_build(
    cub_root: Path = typer.Option(..., "--cub-root", help="CUB_200_2011 folder (images.txt, train_test_split.txt, images/)."),
    places_root: Optional[Path] = typer.Option(None, "--places-root", help="Places365 folder holding data_large/ (or data_256/)."),
    out: Path = OutOpt,
    correlation: float = typer.Option(1.0, "--correlation", min=0.0, max=1.0, help="Share of training birds on their own habitat: 1.0 Waterbirds-100, 0.95 the released Waterbirds."),
    segmentations: Optional[Path] = typer.Option(None, "--segmentations", help="CUB segmentations folder (default: segmentations/ in or beside --cub-root)."),
    land_category: Optional[list[str]] = typer.Option(None, "--land-category", help="Places category for land (repeatable; default bamboo_forest, forest/broadleaf)."),
    water_category: Optional[list[str]] = typer.Option(None, "--water-category", help="Places category for water (repeatable; default ocean, lake/natural)."),
    land_dir: Optional[list[Path]] = typer.Option(None, "--land-dir", help="A land background folder (repeatable; replaces the land categories)."),
    water_dir: Optional[list[Path]] = typer.Option(None, "--water-dir", help="A water background folder (repeatable; replaces the water categories)."),
    val_frac: float = typer.Option(0.2, "--val-frac", min=0.0, max=0.9, help="Share of CUB's training images used for val (recipe: 0.2)."),
    task: str = typer.Option("bird", "--task", help="bird (landbird vs waterbird, mask inside the box) or place (land vs water, mask outside)."),
    export: Optional[Path] = typer.Option(None, "--export", help="Also write a standard Waterbirds folder here: full-size JPEGs and metadata.csv."),
    size: int = typer.Option(224, "--size", min=16, help="Square image size in pixels."),
    bbox_frac: float = BboxFracOpt,
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the val split, the places, the backgrounds and --bbox-frac."),
    workers: int = WorkersOpt, force: bool = ForceOpt, skip_bad: bool = SkipBadOpt, quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Build Waterbirds from CUB-200-2011 and Places (Sagawa et al.'s recipe): birds pasted on forest or water.

    Example: [bold]mgkit prepare waterbirds-build --cub-root ~/data/CUB_200_2011 --places-root ~/data/places365 --correlation 1.0 --bbox-frac 0.01 --out data/wb100.h5[/bold]
    """
    from mgkit.data.sources import waterbirds_build as wb

    opts = dict(places_root=places_root, segmentations=segmentations, correlation=correlation, val_frac=val_frac,
                task=task, land_categories=land_category or wb.LAND_CATEGORIES,
                water_categories=water_category or wb.WATER_CATEGORIES, land_dirs=land_dir or (),
                water_dirs=water_dir or (), export=export)
    rows: list[tuple] = []

    def plan_fn() -> Any:
        plan, metadata = wb.plan(cub_root, seed=seed, **opts)
        rows.extend(metadata)
        return plan

    if export is not None and (export / "metadata.csv").exists() and not force:
        raise MgkitError(f"{export / 'metadata.csv'} already exists; pass --force to overwrite the export")
    recorded = {k: ([str(x) for x in v] if isinstance(v, (list, tuple)) else str(v) if isinstance(v, Path) else v)
                for k, v in opts.items()}
    _prepare(plan_fn, out, size, bbox_frac, seed, workers, force, skip_bad, quiet, as_json,
             {"source": "waterbirds-build", "cub_root": str(cub_root), **recorded})
    if export is not None:
        from mgkit.data.format import open_dataset
        from mgkit.progress import log

        with open_dataset(out) as f:
            written = {i for s in f.splits for i in f.split(s)["ids"].asstr()[:]}
        kept = wb.write_metadata(export, rows, written)
        log(f"exported {kept} images and {export / 'metadata.csv'}", quiet=quiet or as_json)


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

    _check_out(out, force)  # before opening possibly huge .pt files
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
# The options of train and guide are built from the declarations in mgkit.config (one per option, shared
# with YAML files and checkpoints): every value reaches config.coerce as the user typed it, so a bad value
# gets the same one-line message on the command line and in a YAML file.

RESUME_HINT = "interrupted; the run directory keeps the last completed epoch: re-run the same command to resume"


class PlainHelpCommand(TyperCommand):
    """Click's plain help layout: full option names at any width, defaults and choices in the text, and
    parsing errors in one line. Other commands can use it too: `@app.command("x", cls=PlainHelpCommand)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        # Unknown options and missing values: one line too, pointing at --help.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as e:
            _fail(f"{' '.join(e.format_message().split())} (see mgkit {self.name} --help)", 2)


def _option_parameter(name: str, stage: str) -> inspect.Parameter:
    from mgkit.config import OPTIONS, default_text

    o = OPTIONS[name]
    extra = {"metavar": o.metavar(), "show_default": False}
    help_text = o.help_text()
    if o.kind == "bool":
        decls = [f"{o.flag}/--no-{o.key}"] if o.negatable else [o.flag, *([o.short] if o.short else [])]
        annotation: Any = Optional[bool]
        extra = {"show_default": False}
        if o.negatable:
            help_text += f" [default: {default_text(name, stage)}]"
    else:
        decls = [o.flag]
        annotation = Optional[str]
        help_text += (" [required: here or in --config]" if o.required
                      else f" [default: {default_text(name, stage)}]")
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(None, *decls, help=help_text, **extra))


def _run_command(stage: str, doc: str) -> Callable[..., None]:
    """A typer command whose options are the declared options of `stage`."""
    from mgkit.config import options_for

    def command(config: Optional[str] = None, restart: bool = False, as_json: bool = False, **values: Any) -> None:
        _fit(stage, config, values, restart, as_json)

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("config", kw, annotation=Optional[str], default=typer.Option(
        None, "--config", metavar="FILE", help="YAML file with any of these options, keys spelled as the flags "
        "without dashes (e.g. lambda: 1e-3); flags given here override it."))]
    params += [_option_parameter(name, stage) for name in options_for(stage)]
    params += [
        inspect.Parameter("restart", kw, annotation=bool, default=typer.Option(
            False, "--restart", help="Start over in an existing run directory instead of resuming.")),
        inspect.Parameter("as_json", kw, annotation=bool, default=typer.Option(
            False, "--json", help="Print the summary as JSON on stdout.")),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    command.__name__ = f"{stage}_cmd"
    return handle_errors(command, interrupted=RESUME_HINT)


def _fit(stage: str, config: Optional[str], values: dict[str, Any], restart: bool, as_json: bool) -> None:
    from mgkit.config import build_config

    # Every option is checked before any data file is opened, network built or run directory written:
    # the flags here, the model-dependent rules by fit() right after reading the --from checkpoint.
    cfg = build_config(stage, values, config)

    from mgkit.engine.trainer import fit

    summary = fit(cfg, restart=restart)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return

    def render(s: dict[str, Any]) -> None:
        final = s.get("final") or {}
        nums = " ".join(f"{k}={v:.4f}" for k, v in final.items() if v is not None)
        typer.echo(f"{s['stage']} finished: {s['run']} (best val F1 {s['best_f1']:.4f}; last epoch {nums})")

    emit(summary, as_json, render)


train_cmd = app.command("train", cls=PlainHelpCommand)(_run_command("train", """\
Baseline training: BCE, Adam, constant learning rate (the reference's protocol).

Options come from the command line, else from --config FILE, else from the defaults shown (per model
family where marked). Exit codes: 0 done, 2 bad usage (nothing written), 1 bad data or failed work.

\b
Example:
  mgkit train --data data/voc.h5 --model bcos-resnet50 --pretrained \\
      --out runs/bcos-base
"""))

guide_cmd = app.command("guide", cls=PlainHelpCommand)(_run_command("guide", """\
Guided fine-tuning: L = BCE + λ · L_loc on attributions of one ground-truth class per image.

Options come from the command line, else from --config FILE, else from the defaults shown (per model
family where marked). Exit codes: 0 done, 2 bad usage (nothing written), 1 bad data or failed work.

\b
Example:
  mgkit guide --from runs/base/checkpoints/best_f1.pt --data data/voc.h5 \\
      --loss energy --layer input --lambda 1e-3 --out runs/energy-input
"""))


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


# ------------------------------------------------------------------------------------------------- tables


@app.command("tables")
@handle_errors
def tables_cmd(
    results: list[Path] = typer.Argument(..., help="Result files (mgkit evaluate / shift JSON) or directories of them."),
    out: Path = typer.Option(Path("results/tables"), "--out", help="Directory for the tables (md, tex, csv) and plots (png, pdf)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Claims report (default: OUT/../paper-tables.md)."),
    split: str = typer.Option("test", "--split", help="Evaluation split the tables compare (shift records keep their splits)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Also draw the Pareto plots (PNG and PDF)."),
    quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Paper tables, Pareto plots and a claim-by-claim report from result records.

    Example: [bold]mgkit tables results/*.json --out results/tables[/bold]
    """
    from mgkit.report.build import build

    summary = build(results, out, report, split=split, quiet=quiet, plots=plots)

    def render(s: dict[str, Any]) -> None:
        typer.echo(f"wrote {len(s['files'])} files under {s['out']}; report {s['report']}")
        for c in s["claims"]:
            typer.echo(f"  claim {c['claim']}: {c['status']}")

    emit(summary, as_json, render)


# ------------------------------------------------------------------------------------------------ explain


@app.command("explain")
@handle_errors
def explain_cmd(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="Checkpoint to explain (e.g. runs/X/checkpoints/best_f1.pt)."),
    data: Path = typer.Option(..., "--data", help="Prepared data file (mgkit prepare) with the same classes."),
    out: Path = typer.Option(..., "--out", help="Figure file, .png or .pdf; a .json sidecar goes beside it."),
    compare: Optional[list[Path]] = typer.Option(None, "--compare", metavar="CKPT2", help="Another checkpoint drawn beside the first (repeatable), e.g. the guided model."),
    split: str = typer.Option("test", "--split", help="Split to take the images from."),
    n: int = typer.Option(16, "--n", help="The first N images (file order) that have at least one box."),
    ids: Optional[str] = typer.Option(None, "--ids", help="Comma list of image ids as stored in the split, or #INDEX (overrides --n)."),
    attribution: Optional[str] = typer.Option(None, "--attribution", help="ixg | bcos | gradcam | intgrad | captum:NAME (default: each run's training attribution)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="input | mid1 | mid2 | mid3 | final (default: the run's training layer)."),
    max_classes: int = typer.Option(4, "--max-classes", help="Ground-truth classes explained per image (at most)."),
    pdf: bool = typer.Option(False, "--pdf", help="Also write a PDF beside a PNG --out."),
    ig_steps: int = typer.Option(16, "--ig-steps", help="Riemann steps of intgrad (and captum path methods)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of sampling attribution methods (captum)."),
    quiet: bool = QuietOpt, as_json: bool = JsonOpt,
) -> None:
    """Figure: images with their boxes and each model's attribution map of every ground-truth class.

    Example: [bold]mgkit explain runs/base/checkpoints/best_f1.pt --compare runs/energy/checkpoints/best_f1.pt --data data/synth.h5 --out figs/explain.png[/bold]
    """
    from mgkit.explain.stage import explain

    result = explain([checkpoint, *(compare or [])], data, out, split=split, n=n, ids=ids, attribution=attribution,
                     layer=layer, max_classes=max_classes, pdf=pdf, device=device, seed=seed, ig_steps=ig_steps,
                     quiet=quiet)

    def render(r: dict[str, Any]) -> None:
        epg = ", ".join(f"{m['label']} {m['mean_epg']:.3f}" if m["mean_epg"] is not None else f"{m['label']} -"
                        for m in r["models"])
        typer.echo(f"wrote {', '.join(r['figures'])} and {r['sidecar']}: {len(r['images'])} images, "
                   f"mean EPG of the drawn pairs: {epg}")

    emit({k: v for k, v in result.items() if k != "provenance"}, as_json, render)


def _eval_options(**kw: Any):
    from mgkit.engine.evaluate_stage import EvalOptions

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
EvalAmpOpt = typer.Option("none", "--amp", help="none | bf16: bf16 autocast for forward and attribution (CUDA, or a CPU with AMX / AVX-512 BF16, where it is about 1.5x as fast); maps and metrics stay float32, numbers may differ in the 2nd-3rd decimal.")
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
    from mgkit.engine.evaluate_stage import Evaluator, pareto_record
    from mgkit.report.terminal import show_evaluation, show_pareto

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
    from mgkit.engine.evaluate_stage import Evaluator
    from mgkit.engine.shift import shift_record
    from mgkit.report.terminal import show_shift

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
