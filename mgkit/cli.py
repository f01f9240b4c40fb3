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
from mgkit.options import Opt, options_of, parse

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


# ------------------------------------------------------------------------------------------ declared commands
# Every command's options are declared once, in mgkit.options (train/guide: mgkit.config.RunConfig). A
# command here is a function of the checked values; `_declared` turns it into what typer reads: a
# function with one keyword parameter per declared option. Every value reaches typer as text and is
# checked by options.coerce, so a bad value gets the same one-line message on every command (and in a
# YAML file) and typer's own range boxes never appear.


class OneLineErrors(TyperCommand):
    """Click's plain help layout (full option names at any width, defaults and choices in the text) and
    parsing errors (unknown option, missing value) in one line, pointing at --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["rich_markup_mode"] = None
        super().__init__(*args, **kwargs)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except ClickUsageError as e:
            where = f"{parent.info_name} {self.name}" if parent is not None and parent.parent is not None else self.name
            _fail(f"{' '.join(e.format_message().split())} (see mgkit {where} --help)", 2)


def _parameter(name: str, o: Opt, stage: str) -> inspect.Parameter:
    """The typer parameter of one declared option: text in, checked by options.coerce."""
    text = Optional[list[str]] if o.multiple else Optional[str]
    if o.argument:
        default = typer.Argument(... if o.required else None, metavar=o.flag, help=o.help_text(), show_default=False)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=text, default=default)
    help_text = o.help_text()
    shown = o.default_text(stage)
    if o.required:
        help_text += " [required]" if stage not in ("train", "guide") else " [required: here or in --config]"
    elif shown is not None and (o.kind != "bool" or o.negatable or o.off_flag):
        help_text += f" [default: {shown}]"
    if o.kind == "bool":
        off = o.off_flag or (f"--no-{o.key}" if o.negatable else None)
        decls = [f"{o.flag}/{off}"] if off else [o.flag, *([o.short] if o.short else [])]
        option = typer.Option(None, *decls, help=help_text, show_default=False)
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[bool], default=option)
    option = typer.Option(None, o.flag, help=help_text, metavar=o.metavar(), show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=text, default=option)


def _declared(command: str, group: typer.Typer = app, interrupted: str = INTERRUPTED, raw: bool = False,
              doc: str | None = None) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `fn` as `mgkit COMMAND`, its options those declared for COMMAND.

    `fn` receives the values checked and defaulted by options.parse as keyword arguments (or, with
    `raw`, the text as given, for train/guide whose values meet a YAML file first).
    """
    declared = options_of(command)
    sub = command.split()[-1]

    def decorator(fn: Callable[..., None]) -> Callable[..., None]:
        def run(**given: Any) -> None:
            fn(**(given if raw else parse(declared, given)))

        run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [_parameter(name, o, sub) for name, o in declared.items()])
        run.__doc__, run.__name__ = doc or fn.__doc__, fn.__name__
        group.command(sub, cls=OneLineErrors)(handle_errors(run, interrupted=interrupted))
        return fn

    return decorator


# ------------------------------------------------------------------------------------------------ prepare


def _prepare(plan_fn: Callable[[], Any], *, out: Path, size: int, bbox_frac: float, seed: int, force: bool,
             quiet: bool, as_json: bool, options: dict[str, Any], workers: int = 0, skip_bad: bool = False,
             inputs: tuple[Any, ...] = (), bbox_count: Optional[int] = None) -> dict[str, Any]:
    from mgkit.data.prepare_stage import prepare_stage, recorded, render_summary

    summary = prepare_stage(plan_fn, out, size=size, bbox_frac=bbox_frac, seed=seed, workers=workers, force=force,
                            skip_bad=skip_bad, quiet=quiet, options=recorded(options), inputs=inputs,
                            bbox_count=bbox_count)
    emit(summary, as_json, render_summary)
    return summary


@_declared("prepare synthetic", prepare_app)
def prepare_synthetic(*, task: str, num_classes: int, spurious: Optional[float], n_train: int, n_val: int,
                      n_test: int, **common: Any) -> None:
    """Built-in procedural data (no download): shapes with spurious context cues, or a Waterbirds analogue.

    \b
    Example:
      mgkit prepare synthetic --out data/synth.h5
    """
    from mgkit.data.sources import synthetic

    if spurious is None:
        spurious = synthetic.DEFAULT_SPURIOUS[task]
    opts = dict(task=task, num_classes=num_classes, spurious=spurious, n_train=n_train, n_val=n_val, n_test=n_test)
    _prepare(lambda: synthetic.plan(**opts, seed=common["seed"]), **common, options={"source": "synthetic", **opts})


@_declared("prepare voc", prepare_app)
def prepare_voc(*, root: Path, year: str, exclude_difficult: bool, **common: Any) -> None:
    """PASCAL VOC: train / val / test from ImageSets/Main, 20 classes, boxes and segmentation masks.

    \b
    Example:
      mgkit prepare voc --root ~/data/VOCdevkit --out data/voc2007.h5 --bbox-frac 0.01
    """
    from mgkit.data.sources import voc

    _prepare(lambda: voc.plan(root, year=year, exclude_difficult=exclude_difficult), **common, inputs=(root,),
             options={"source": "voc", "root": root, "year": year, "exclude_difficult": exclude_difficult})


@_declared("prepare coco", prepare_app)
def prepare_coco(*, root: Optional[Path], year: str, train_split_file: Optional[Path],
                 val_split_file: Optional[Path], val_frac: float, include_crowd: bool,
                 train_ann_file: Optional[Path], train_image_dir: Optional[Path], val_ann_file: Optional[Path],
                 val_image_dir: Optional[Path], test_ann_file: Optional[Path], test_image_dir: Optional[Path],
                 **common: Any) -> None:
    """MS COCO: train{year} split into train/val, val{year} as test, 80 categories.

    \b
    Example:
      mgkit prepare coco --root ~/data/coco --out data/coco2014.h5 --workers 8
    """
    from mgkit.data.sources import coco

    opts = dict(root=root, year=year, train_split_file=train_split_file, val_split_file=val_split_file,
                val_frac=val_frac, include_crowd=include_crowd, train_ann_file=train_ann_file,
                train_image_dir=train_image_dir, val_ann_file=val_ann_file, val_image_dir=val_image_dir,
                test_ann_file=test_ann_file, test_image_dir=test_image_dir)
    _prepare(lambda: coco.plan(**opts, seed=common["seed"]), **common, options={"source": "coco", **opts},
             inputs=(train_split_file, val_split_file, train_ann_file, val_ann_file, test_ann_file))


@_declared("prepare waterbirds", prepare_app)
def prepare_waterbirds(*, root: Path, cub_root: Optional[Path], task: str, **common: Any) -> None:
    """Waterbirds (e.g. Waterbirds-100 of GALS): metadata.csv splits, groups, CUB bird boxes.

    No Waterbirds folder? Build one from CUB and Places with mgkit prepare waterbirds-build.

    \b
    Example:
      mgkit prepare waterbirds --root ~/data/waterbird_1.0_forest2water2 \\
          --cub-root ~/data/CUB_200_2011 --bbox-frac 0.01 --out data/wb100.h5
    """
    from mgkit.data.sources import waterbirds

    _prepare(lambda: waterbirds.plan(root, cub_root=cub_root, task=task), **common,
             options={"source": "waterbirds", "root": root, "cub_root": cub_root, "task": task})


@_declared("prepare waterbirds-build", prepare_app)
def prepare_waterbirds_build(*, cub_root: Path, places_root: Optional[Path], correlation: float,
                             segmentations: Optional[Path], land_category: list[str], water_category: list[str],
                             land_dir: list[Path], water_dir: list[Path], val_frac: float, task: str,
                             export: Optional[Path], **common: Any) -> None:
    """Build Waterbirds from CUB-200-2011 and Places (Sagawa et al.'s recipe): birds pasted on forest or water.

    \b
    Example:
      mgkit prepare waterbirds-build --cub-root ~/data/CUB_200_2011 --places-root ~/data/places365 \\
          --correlation 1.0 --bbox-frac 0.01 --out data/wb100.h5
    """
    from mgkit.data.sources import waterbirds_build as wb
    from mgkit.progress import log

    opts = dict(places_root=places_root, segmentations=segmentations, correlation=correlation, val_frac=val_frac,
                task=task, land_categories=land_category or wb.LAND_CATEGORIES,
                water_categories=water_category or wb.WATER_CATEGORIES, land_dirs=land_dir, water_dirs=water_dir,
                export=export)
    rows: list[tuple] = []

    def plan_fn() -> Any:
        plan, metadata = wb.plan(cub_root, seed=common["seed"], **opts)
        rows.extend(metadata)
        return plan

    if export is not None and (export / "metadata.csv").exists() and not common["force"]:
        raise MgkitError(f"{export / 'metadata.csv'} already exists; pass --force to overwrite the export")
    _prepare(plan_fn, **common, options={"source": "waterbirds-build", "cub_root": cub_root, **opts})
    if export is not None:
        kept = wb.export_metadata(common["out"], export, rows)
        log(f"exported {kept} images and {export / 'metadata.csv'}", quiet=common["quiet"] or common["as_json"])


@_declared("prepare reference", prepare_app)
def prepare_reference(*, root: Path, out: Path, dataset: str, force: bool, **common: Any) -> None:
    """Convert the reference implementation's preprocessed {train,val,test}.pt files.

    \b
    Example:
      mgkit prepare reference --root ~/Model-Guidance/datasets/VOC2007/processed --dataset voc \\
          --out data/voc.h5
    """
    from mgkit.data.prepare_stage import check_request
    from mgkit.data.sources import reference

    check_request(out, force=force)  # before opening possibly huge .pt files
    plan = reference.plan(root, dataset=dataset)
    _prepare(lambda: plan, out=out, size=plan.native_size, force=force, **common,
             options={"source": "reference", "root": root, "dataset": dataset})


# ------------------------------------------------------------------------------------------------ inspect


@_declared("inspect")
def inspect_cmd(*, path: Path, as_json: bool) -> None:
    """Summarise and validate a prepared data file: splits, classes, boxes, groups, provenance.

    \b
    Example:
      mgkit inspect data/synth.h5 --json
    """
    from mgkit.data.inspect import render_summary, summarize

    emit(summarize(path), as_json, render_summary)


# ------------------------------------------------------------------------------------------ train / guide

RESUME_HINT = "interrupted; the run directory keeps the last completed epoch: re-run the same command to resume"
_RUN_EPILOG = """
Options come from the command line, else from --config FILE, else from the defaults shown (per model
family where marked). Exit codes: 0 done, 2 bad usage (nothing written), 1 bad data or failed work.
"""


def _fit(stage: str, given: dict[str, Any]) -> None:
    from mgkit.config import build_config
    from mgkit.options import RUN_CONFIG, RUN_TAIL

    extras = parse({"config": RUN_CONFIG, **RUN_TAIL}, {k: given.pop(k) for k in ("config", *RUN_TAIL)})
    # Every option is checked before any data file is opened, network built or run directory written:
    # the flags here, the model-dependent rules by fit() right after reading the --from checkpoint.
    cfg = build_config(stage, given, extras["config"])

    from mgkit.engine.trainer import fit

    summary = fit(cfg, restart=extras["restart"])
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return

    def render(s: dict[str, Any]) -> None:
        final = s.get("final") or {}
        nums = " ".join(f"{k}={v:.4f}" for k, v in final.items() if v is not None)
        typer.echo(f"{s['stage']} finished: {s['run']} (best val F1 {s['best_f1']:.4f}; last epoch {nums})")

    emit(summary, extras["as_json"], render)


@_declared("train", interrupted=RESUME_HINT, raw=True, doc="""\
Baseline training: BCE, Adam, constant learning rate (the reference's protocol).
""" + _RUN_EPILOG + """
\b
Example:
  mgkit train --data data/voc.h5 --model bcos-resnet50 --pretrained \\
      --out runs/bcos-base
""")
def train_cmd(**given: Any) -> None:
    _fit("train", given)


@_declared("guide", interrupted=RESUME_HINT, raw=True, doc="""\
Guided fine-tuning: L = BCE + λ · L_loc on attributions of one ground-truth class per image.
""" + _RUN_EPILOG + """
\b
Example:
  mgkit guide --from runs/base/checkpoints/best_f1.pt --data data/voc.h5 \\
      --loss energy --layer input --lambda 1e-3 --out runs/energy-input
""")
def guide_cmd(**given: Any) -> None:
    _fit("guide", given)


# ------------------------------------------------------------------------------------------------- export


@_declared("export")
def export_cmd(*, checkpoint: Path, out: Path, as_json: bool) -> None:
    """Write a checkpoint's network as a plain torchvision / bcos state dict.

    Load it with torchvision.models.resnet18(num_classes=K).load_state_dict(torch.load("model.pt",
    weights_only=True)) (or the bcos model of the same name with a K-class head).
    """
    from mgkit.engine.checkpoint import export_state_dict

    emit(export_state_dict(checkpoint, out), as_json, lambda s: typer.echo(
        f"wrote {s['out']}: {s['model']} with {len(s['classes'])} classes ({s['tensors']} tensors)"))


# ------------------------------------------------------------------------------------------------ weights
weights_app = typer.Typer(help="ImageNet weights in the torch hub cache ($TORCH_HOME/hub/checkpoints).",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


def _show_weights(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        state = f"cached, {r['bytes'] / 2**20:.1f} MiB" if r["cached"] else "missing"
        typer.echo(f"{r['model']:<14} {state:<20} {r['path']}\n{'':<14} from {r['url']} ({r['source']})")


@_declared("weights list", weights_app)
def weights_list_cmd(*, as_json: bool) -> None:
    """Each model's ImageNet weights file: where it comes from, where it goes, whether it is there."""
    from mgkit.weights import describe

    rows = describe()
    emit({"weights": rows}, as_json, lambda s: _show_weights(s["weights"]))


@_declared("weights download", weights_app)
def weights_download_cmd(*, models: list[str], everything: bool, force: bool, quiet: bool, as_json: bool) -> None:
    """Fetch ImageNet weights ahead of time (e.g. on a cluster's login node), checking published hashes.

    \b
    Example:
      mgkit weights download --all
    """
    from mgkit.weights import download_many

    rows = download_many(models, everything=everything, force=force, quiet=quiet)
    emit({"weights": rows}, as_json, lambda s: _show_weights(s["weights"]))


# ------------------------------------------------------------------------------------------------- tables


@_declared("tables")
def tables_cmd(*, results: list[Path], out: Path, report: Optional[Path], split: str, plots: bool,
               timings: list[Path], quiet: bool, as_json: bool) -> None:
    """Paper tables, Pareto plots and a claim-by-claim report (Markdown, and the same as one HTML page) from
    result records.

    \b
    Example:
      mgkit tables results/*.json --out results/tables
    """
    from mgkit.report.build import build

    summary = build(results, out, report, split=split, quiet=quiet, plots=plots, timings=timings)

    def render(s: dict[str, Any]) -> None:
        typer.echo(f"wrote {len(s['files'])} files under {s['out']}; report {s['report']}")
        for c in s["claims"]:
            typer.echo(f"  claim {c['claim']}: {c['status']}")

    emit(summary, as_json, render)


# ------------------------------------------------------------------------------------------------ explain


@_declared("explain")
def explain_cmd(*, checkpoint: Path, compare: list[Path], as_json: bool, **opts: Any) -> None:
    """Figure: images with their boxes and each model's attribution map of every ground-truth class.

    \b
    Example:
      mgkit explain runs/base/checkpoints/best_f1.pt --compare runs/energy/checkpoints/best_f1.pt \\
          --data data/synth.h5 --out figs/explain.png
    """
    from mgkit.explain.stage import explain

    result = explain([checkpoint, *compare], **opts)

    def render(r: dict[str, Any]) -> None:
        epg = ", ".join(f"{m['label']} {m['mean_epg']:.3f}" if m["mean_epg"] is not None else f"{m['label']} -"
                        for m in r["models"])
        typer.echo(f"wrote {', '.join(r['figures'])} and {r['sidecar']}: {len(r['images'])} images, "
                   f"mean EPG of the drawn pairs: {epg}")

    emit({k: v for k, v in result.items() if k != "provenance"}, as_json, render)


# ------------------------------------------------------------------------------------------ evaluate / shift


def _evaluator(data: Path, quiet: bool, inputs: list[Any], out: Optional[Path], **opts: Any):
    """The Evaluator of evaluate and shift, once --out is known to be writable (before any pass)."""
    from mgkit.artifacts import check_output
    from mgkit.engine.evaluate_stage import EvalOptions, Evaluator

    if out is not None:
        check_output(out, inputs=[data, *inputs])
    return Evaluator(EvalOptions(data=str(data), quiet=quiet, **opts))


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


@_declared("evaluate")
def evaluate_cmd(*, checkpoints: list[Path], pareto: list[Path], baseline: Optional[Path], threshold_split: str,
                 out: Optional[Path], as_json: bool, **opts: Any) -> None:
    """Score a checkpoint on a split: F1, mAP, EPG, IoU (fixed and chosen threshold), per class and box size.

    \b
    Example:
      mgkit evaluate runs/energy/checkpoints/best_f1.pt --data data/voc.h5 --split test \\
          --baseline runs/base/checkpoints/best_f1.pt --out results/energy.json
    """
    from mgkit.engine.evaluate_stage import checked_pareto_record
    from mgkit.report.terminal import show_evaluation, show_pareto

    if pareto and checkpoints:
        # typer puts run directories after --pareto RUN into the positional list
        pareto, checkpoints = pareto + checkpoints, []
    if not pareto and len(checkpoints) != 1:
        raise UsageError("mgkit evaluate takes one checkpoint (or --pareto RUN_DIR...)")
    if pareto and baseline is not None:
        raise UsageError("--baseline cannot be combined with --pareto")
    ev = _evaluator(inputs=[*checkpoints, *pareto, baseline], out=out,
                    threshold_split=None if threshold_split == "none" else threshold_split, **opts)
    if pareto:
        _write_and_show(checked_pareto_record(ev, pareto), out, as_json, show_pareto)
    else:
        _write_and_show(ev.record(checkpoints[0], baseline), out, as_json, show_evaluation)


@_declared("shift")
def shift_cmd(*, checkpoint: Path, baseline: Optional[Path], out: Optional[Path], as_json: bool, **opts: Any) -> None:
    """Robustness to a spurious cue: per-group and worst-group accuracy (data with groups), and test vs
    test_shifted (synthetic data with inverted cues), next to a baseline.

    \b
    Example:
      mgkit shift runs/energy/checkpoints/best_f1.pt --data data/birds.h5 \\
          --baseline runs/base/checkpoints/best_f1.pt --out results/shift/energy.json
    """
    from mgkit.engine.shift import shift_record
    from mgkit.report.terminal import show_shift

    ev = _evaluator(inputs=[checkpoint, baseline], out=out, split="test", threshold_split=None, **opts)
    _write_and_show(shift_record(ev, checkpoint, baseline), out, as_json, show_shift)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
