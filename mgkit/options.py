"""Every command's options, each declared once: flag, type, allowed values, range, default and help.

An `Opt` record is the one place an option's facts live. The CLI builds each command's parameters from
these records (`mgkit.cli`), `config.py` builds `train`/`guide` (`RunConfig`) and their YAML files from
them, `--help` prints their help and defaults, and `coerce` checks every value, as typed on the command
line or written in a YAML file, before any work starts. Options several commands share (`--size`,
`--seed`, `--iou-threshold`, ...) are declared once below and reused, changing at most the default or a
stage-specific sentence of help (`dataclasses.replace`).

Light to import (no torch, no numpy): `--help` builds its text from here.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mgkit.errors import UsageError
from mgkit.registry import (ATTRIBUTIONS, CAPTUM_PREFIX, DEVICES, LAYERS, REFERENCE_DATASETS, SYNTHETIC_SPURIOUS,
                             SYNTHETIC_TASKS, WATERBIRDS_TASKS)


@dataclass(frozen=True)
class Opt:
    """How one option is spelled, typed, limited, defaulted and explained."""

    flag: str  # as the user writes it: "--lambda"; for an argument, its metavar: "CKPT"
    kind: str  # int | float | choice | path | text | bool
    help: str
    default: Any = None  # None: not given (a per-family or derived default, or nothing)
    stages: frozenset[str] = frozenset()  # train/guide only: the commands that take it
    choices: tuple[str, ...] | None = None
    open_prefix: str | None = None  # choice: values starting with it are accepted too ("captum:")
    lo: float | None = None  # lower bound
    lo_open: bool = False  # lower bound excluded (> instead of >=)
    hi: float | None = None  # upper bound (included)
    default_help: str | dict[str, str] | None = None  # shown for a None default; per stage if a dict
    short: str | None = None  # e.g. "-q"
    negatable: bool = False  # bool flags: --x/--no-x
    off_flag: str | None = None  # bool flags: the spelling that turns it off, when not --no-x
    required: bool = False
    multiple: bool = False  # repeatable option (or an argument taking several values): a list
    argument: bool = False  # positional
    recorded: frozenset[str] | None = None  # stages whose config.yaml records it (default: `stages`)

    @property
    def key(self) -> str:
        """The YAML spelling: the flag without dashes ("lambda", "batch-size")."""
        return self.flag.lstrip("-")

    def allowed(self) -> str:
        """What a valid value looks like, for messages."""
        if self.kind == "choice":
            extra = f" or {self.open_prefix}NAME" if self.open_prefix else ""
            return "one of " + ", ".join(self.choices or ()) + extra
        if self.kind == "bool":
            return "true or false"
        if self.kind == "path":
            return "a path"
        if self.kind == "text":
            return "a non-empty text"
        what = "an integer" if self.kind == "int" else "a number"
        if self.lo is not None and self.hi is not None and not self.lo_open:
            return f"{what} between {fmt(self.lo)} and {fmt(self.hi)}"
        bounds = []
        if self.lo is not None:
            bounds.append(f"{'>' if self.lo_open else '≥'} {fmt(self.lo)}")
        if self.hi is not None:
            bounds.append(f"≤ {fmt(self.hi)}")
        return f"{what} {' and '.join(bounds)}".strip() if bounds else what

    def metavar(self) -> str:
        if self.argument:
            return self.flag
        if self.kind == "choice":
            listed = "[" + "|".join(self.choices or ()) + "]"
            # Long lists would push the line past 80 columns: then a name here, the list in the help.
            if len(self.flag) + len(listed) <= 44 and not self.open_prefix:
                return listed
            return self.key.upper().replace("-", "_")
        return {"int": "INTEGER", "float": "NUMBER", "path": "PATH", "text": "TEXT"}.get(self.kind, "")

    def help_text(self) -> str:
        """The help, with the allowed values when the metavar does not list them."""
        if self.kind == "choice" and not self.metavar().startswith("["):
            return f"{self.help} One of: {', '.join(self.choices or ())}" + \
                (f", or {self.open_prefix}NAME." if self.open_prefix else ".")
        return self.help

    def default_text(self, stage: str | None = None) -> str | None:
        """The default as --help shows it (None: show none)."""
        if self.default_help is not None:
            return self.default_help[stage] if isinstance(self.default_help, dict) else self.default_help
        if self.required or self.argument or self.default is None or self.multiple:
            return None
        if self.kind == "bool":
            return "on" if self.default else "off"
        return fmt(self.default)


def fmt(v: Any) -> str:
    """1e-4 rather than 0.0001; 64 rather than 64.0."""
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if 0 < abs(v) < 1e-2:
            mantissa, exp = f"{v:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return f"{v:g}"
    return str(v)


# ------------------------------------------------------------------------------------------ coercion


def _kind_of(value: Any) -> str:
    return {list: "a list", dict: "a mapping", bool: "a boolean", type(None): "nothing"}.get(type(value), repr(value))


def coerce(o: Opt, value: Any, where: str | None = None) -> Any:
    """Convert a CLI string or YAML value to `o`'s type and check it; `where` names it in messages.

    Paths come back as str (a run configuration stores them so); `parse` makes them Paths.
    """
    where = where or o.flag

    def bad(detail: str = "") -> UsageError:
        shown = f"{value!r}" if isinstance(value, str) else _kind_of(value)
        return UsageError(f"{where} must be {o.allowed()}, got {shown}{detail}")

    if o.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad()
    if o.kind in ("choice", "path", "text"):
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise bad()
        if o.kind == "choice" and value not in (o.choices or ()):
            if o.open_prefix and value.startswith(o.open_prefix) and len(value) > len(o.open_prefix):
                return value
            close = difflib.get_close_matches(value, o.choices or (), n=1)
            raise bad(f" (did you mean {close[0]}?)" if close else "")
        return value
    return _number(o, value, bad)


def _number(o: Opt, value: Any, bad: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise bad()
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise bad() from None
    if isinstance(number, float) and not math.isfinite(number):
        raise bad(" (not a finite number)")
    if o.kind == "int":
        if isinstance(number, float):
            if not number.is_integer():
                raise bad()
            number = int(number)
        if isinstance(value, str):
            try:  # keep "12345678901234567890" exact
                number = int(value.strip())
            except ValueError:
                pass
    else:
        number = float(number)
    if o.lo is not None and (number < o.lo or (o.lo_open and number == o.lo)):
        raise bad()
    if o.hi is not None and number > o.hi:
        raise bad()
    return number


def parse(options: dict[str, Opt], given: dict[str, Any]) -> dict[str, Any]:
    """Every option of a command, checked: `given` holds what the command line gave (None: not given);
    the rest takes its declared default. Paths become Path objects, repeated options lists."""
    values: dict[str, Any] = {}
    for name, o in options.items():
        raw = given.get(name)
        if raw is None or (o.multiple and len(raw) == 0):
            if o.required:
                raise UsageError(f"{o.flag} is required")
            values[name] = [] if o.multiple else o.default
            continue
        items = [coerce(o, v) for v in raw] if o.multiple else [coerce(o, raw)]
        if o.kind == "path":
            items = [Path(v) for v in items]
        values[name] = items if o.multiple else items[0]
    return values


# ------------------------------------------------------------------------------------------ shared options
# Declared once; commands reuse them, changing at most the default or a stage's sentence of help.

SEED = Opt("--seed", "int", "Seed of initialisation, data order and target sampling.", default=0, lo=0)
DEVICE = Opt("--device", "choice", "auto: CUDA, else MPS, else CPU.", default="auto", choices=DEVICES)
AMP = Opt("--amp", "choice", "Mixed precision: bf16 autocast for forward and attribution; maps and metrics stay "
          "float32.", default="none", choices=("none", "bf16"))
WORKERS = Opt("--workers", "int", "DataLoader worker processes (0: load in the main process).", lo=0,
              default_help="0 on the CPU, up to 8 on CUDA")
EVAL_BATCH_SIZE = Opt("--eval-batch-size", "int", "Images per evaluation batch.", default=64, lo=1)
IOU_THRESHOLD = Opt("--iou-threshold", "float", "Fixed IoU threshold on min-max normalised maps (reference 0.5).",
                    default=0.5, lo=0, hi=1)
IG_STEPS = Opt("--ig-steps", "int", "Riemann steps of IntGrad on non-X-DNN models.", default=16, lo=1)
_IG_STEPS_CAPTUM = replace(IG_STEPS, help=IG_STEPS.help.rstrip(".") + " (and of captum path methods).")
ATTRIBUTION = Opt("--attribution", "choice", "Attribution method.", choices=ATTRIBUTIONS)
LAYER = Opt("--layer", "choice", "Layer whose attributions are used.", choices=LAYERS)
QUIET = Opt("--quiet", "bool", "No progress output.", default=False, short="-q")
JSON = Opt("--json", "bool", "Print the summary as JSON on stdout.", default=False)
FORCE = Opt("--force", "bool", "Overwrite an existing output file.", default=False)
SIZE = Opt("--size", "int", "Square image size in pixels (the paper uses 224).", default=224, lo=16)
TASK_HELP_BIRDS = "bird (landbird vs waterbird, mask inside the box) or place (land vs water, mask outside)."

# ------------------------------------------------------------------------------------------ prepare

_H5_OUT = Opt("--out", "path", "Output HDF5 file (written to a temporary name, renamed when complete).",
              required=True)
_PREPARE_COMMON = {
    "bbox_frac": Opt("--bbox-frac", "float", "Fraction of training images whose boxes may be used for guidance.",
                     default=1.0, lo=0, hi=1),
    "seed": replace(SEED, help="Seed for the --bbox-frac subsample (and any generated split)."),
    "workers": replace(WORKERS, help="Parallel image-decoding processes (0: in-process).", default=0,
                       default_help=None),
    "force": FORCE,
}
_SKIP_BAD = Opt("--skip-bad", "bool", "Skip unreadable images or annotations and count them, instead of stopping.",
                default=False)
_TAIL = {"quiet": QUIET, "as_json": JSON}


def _prepare(**options: Opt) -> dict[str, Opt]:
    return {**options, **_PREPARE_COMMON, **_TAIL}


PREPARE_SYNTHETIC = _prepare(
    out=_H5_OUT,
    task=Opt("--task", "choice", "multilabel: K shapes with spurious context cues; birds: a Waterbirds-100 "
             "analogue; birds-place: its reversed task; pretrain: the shapes without cues, for a backbone that "
             "mgkit train --weights loads.", default="multilabel", choices=SYNTHETIC_TASKS),
    num_classes=Opt("--classes", "int", "Object classes for --task multilabel.", default=6, lo=2, hi=12),
    spurious=Opt("--spurious", "float", "Cue/class co-occurrence in train and val.", lo=0, hi=1,
                 default_help="per --task: " + ", ".join(f"{v:g} {k}" for k, v in SYNTHETIC_SPURIOUS.items())),
    n_train=Opt("--train", "int", "Training images.", default=1500, lo=1),
    n_val=Opt("--val", "int", "Validation images.", default=300, lo=1),
    n_test=Opt("--test", "int", "Test images (multilabel: as many again in test_decorrelated and in test_shifted).",
               default=600, lo=1),
    size=replace(SIZE, default=128),
    bbox_count=Opt("--bbox-count", "int", "Annotate exactly this many training images (an absolute budget: the "
                   "paper's 1 % of VOC is about 25 images); --bbox-frac then names the condition it stands for.",
                   lo=0),
)
PREPARE_VOC = _prepare(
    root=Opt("--root", "path", "The VOCdevkit folder (holding VOC2007/).", required=True),
    year=Opt("--year", "text", "VOC year: the folder VOC{year} under --root.", default="2007"),
    out=_H5_OUT,
    exclude_difficult=Opt("--exclude-difficult", "bool", "Drop objects marked difficult (the reference keeps them).",
                          default=False),
    size=SIZE, skip_bad=_SKIP_BAD,
)
PREPARE_COCO = _prepare(
    out=_H5_OUT,
    root=Opt("--root", "path", "COCO folder with annotations/ and train{year}/, val{year}/."),
    year=Opt("--year", "text", "COCO release year.", default="2014"),
    train_split_file=Opt("--train-split-file", "path", "The reference's train2014_train_split.json."),
    val_split_file=Opt("--val-split-file", "path", "The reference's train2014_val_split.json."),
    val_frac=Opt("--val-frac", "float", "Seeded val share of train when no split files are given.", default=0.1,
                 lo=0, hi=0.9),
    include_crowd=Opt("--include-crowd", "bool", "Count iscrowd annotations for labels and boxes (reference: "
                      "included).", default=True, off_flag="--exclude-crowd"),
    train_ann_file=Opt("--train-ann-file", "path", "instances JSON for train (overrides --root layout)."),
    train_image_dir=Opt("--train-image-dir", "path", "Image folder of --train-ann-file."),
    val_ann_file=Opt("--val-ann-file", "path", "instances JSON for val (else val is split off train)."),
    val_image_dir=Opt("--val-image-dir", "path", "Image folder of --val-ann-file."),
    test_ann_file=Opt("--test-ann-file", "path", "instances JSON for test (default: val{year})."),
    test_image_dir=Opt("--test-image-dir", "path", "Image folder of --test-ann-file."),
    size=SIZE, skip_bad=_SKIP_BAD,
)
_WB_TASK = Opt("--task", "choice", TASK_HELP_BIRDS, default="bird", choices=WATERBIRDS_TASKS)
PREPARE_WATERBIRDS = _prepare(
    root=Opt("--root", "path", "The Waterbirds folder holding metadata.csv.", required=True),
    out=_H5_OUT,
    cub_root=Opt("--cub-root", "path", "CUB_200_2011 folder, for bird boxes (without it: no boxes)."),
    task=_WB_TASK, size=SIZE, skip_bad=_SKIP_BAD,
)
PREPARE_WATERBIRDS_BUILD = _prepare(
    cub_root=Opt("--cub-root", "path", "CUB_200_2011 folder (images.txt, train_test_split.txt, images/).",
                 required=True),
    places_root=Opt("--places-root", "path", "Places365 folder holding data_large/ (or data_256/)."),
    out=_H5_OUT,
    correlation=Opt("--correlation", "float", "Share of training birds on their own habitat: 1.0 Waterbirds-100, "
                    "0.95 the released Waterbirds.", default=1.0, lo=0, hi=1),
    segmentations=Opt("--segmentations", "path", "CUB segmentations folder.",
                      default_help="segmentations/ in or beside --cub-root"),
    land_category=Opt("--land-category", "text", "Places category for land (repeatable; default bamboo_forest, "
                      "forest/broadleaf).", multiple=True),
    water_category=Opt("--water-category", "text", "Places category for water (repeatable; default ocean, "
                       "lake/natural).", multiple=True),
    land_dir=Opt("--land-dir", "path", "A land background folder (repeatable; replaces the land categories).",
                 multiple=True),
    water_dir=Opt("--water-dir", "path", "A water background folder (repeatable; replaces the water categories).",
                  multiple=True),
    val_frac=Opt("--val-frac", "float", "Share of CUB's training images used for val (recipe: 0.2).", default=0.2,
                 lo=0, hi=0.9),
    task=_WB_TASK,
    export=Opt("--export", "path", "Also write a standard Waterbirds folder here: full-size JPEGs and metadata.csv."),
    size=SIZE, skip_bad=_SKIP_BAD,
)
PREPARE_WATERBIRDS_BUILD["seed"] = replace(SEED, help="Seed of the val split, the places, the backgrounds and "
                                           "--bbox-frac.")
PREPARE_REFERENCE = {
    "root": Opt("--root", "path", "Folder with the reference implementation's train.pt, val.pt, test.pt.",
                required=True),
    "out": _H5_OUT,
    "dataset": Opt("--dataset", "choice", "Which class list the files use.", choices=REFERENCE_DATASETS,
                   required=True),
    "bbox_frac": _PREPARE_COMMON["bbox_frac"], "seed": _PREPARE_COMMON["seed"], "force": FORCE, **_TAIL,
}

INSPECT = {
    "path": Opt("PATH", "path", "A data file made by `mgkit prepare`.", required=True, argument=True),
    "as_json": JSON,
}

# ------------------------------------------------------------------------------------------ evaluate, shift

_EVAL_DATA = Opt("--data", "path", "Prepared data file to evaluate on.", required=True)
_BASELINE = Opt("--baseline", "path", "Baseline checkpoint, scored with the same attribution and layer.")
_EVAL_SHARED = {
    "attribution": replace(ATTRIBUTION, open_prefix=CAPTUM_PREFIX, default_help="the run's own"),
    "layer": replace(LAYER, default_help="the run's own"),
    "maps": Opt("--maps", "choice", "raw: maps as the metrics define them; reference: the training loss's "
                "post-processing first (as the reference evaluates).", default="raw", choices=("raw", "reference")),
    "experiment": Opt("--experiment", "text", "Experiment name stored in the record (mgkit tables groups by it)."),
    "out": Opt("--out", "path", "Result record to write (JSON, written atomically; .jsonl: one line)."),
    "seed": replace(SEED, help="Seed (recorded; evaluation itself is deterministic)."),
    "device": DEVICE,
    "eval_batch_size": EVAL_BATCH_SIZE,
    "workers": WORKERS,
    "amp": replace(AMP, help=AMP.help + " bf16 runs on CUDA, or a CPU with AMX / AVX-512 BF16 (about 1.5x as "
                   "fast there); numbers may differ in the 2nd-3rd decimal."),
}

EVALUATE = {
    "checkpoints": Opt("CKPT", "path", "The checkpoint to evaluate (none with --pareto).", argument=True,
                       multiple=True),
    "data": _EVAL_DATA,
    "split": Opt("--split", "text", "Split to report.", default="test"),
    "threshold_split": Opt("--threshold-split", "text", "Split on which the IoU threshold is chosen (paper "
                           "protocol); none: no chosen threshold.", default="val"),
    "attribution": _EVAL_SHARED["attribution"], "layer": _EVAL_SHARED["layer"], "maps": _EVAL_SHARED["maps"],
    "baseline": _BASELINE,
    "pareto": Opt("--pareto", "path", "Guided run directories (the λ runs of one configuration): their validation "
                  "Pareto fronts merged into one on validation metrics, and that set evaluated.", multiple=True),
    **{k: _EVAL_SHARED[k] for k in ("experiment", "out", "seed", "device", "eval_batch_size", "workers", "amp")},
    "iou_threshold": IOU_THRESHOLD,
    "ig_steps": _IG_STEPS_CAPTUM,
    **_TAIL,
}
SHIFT = {
    "checkpoint": Opt("CKPT", "path", "Checkpoint to test under distribution shift.", required=True, argument=True),
    "data": _EVAL_DATA,
    "baseline": _BASELINE,
    **_EVAL_SHARED,
    "ig_steps": _IG_STEPS_CAPTUM,
    **_TAIL,
}

# ------------------------------------------------------------------------------------------ explain, export, tables

EXPLAIN = {
    "checkpoint": Opt("CKPT", "path", "Checkpoint to explain (e.g. runs/X/checkpoints/best_f1.pt).", required=True,
                      argument=True),
    "data": Opt("--data", "path", "Prepared data file (mgkit prepare) with the same classes.", required=True),
    "out": Opt("--out", "path", "Figure file, .png or .pdf; a .json sidecar goes beside it.", required=True),
    "compare": Opt("--compare", "path", "Another checkpoint drawn beside the first (repeatable), e.g. the guided "
                   "model.", multiple=True),
    "split": Opt("--split", "text", "Split to take the images from.", default="test"),
    "n": Opt("--n", "int", "The first N images (file order) that have at least one box.", default=16, lo=1),
    "ids": Opt("--ids", "text", "Comma list of image ids as stored in the split, or #INDEX (overrides --n)."),
    "attribution": replace(ATTRIBUTION, open_prefix=CAPTUM_PREFIX, default_help="each run's training attribution"),
    "layer": replace(LAYER, default_help="the run's training layer"),
    "max_classes": Opt("--max-classes", "int", "Ground-truth classes explained per image (at most).", default=4,
                       lo=1),
    "pdf": Opt("--pdf", "bool", "Also write a PDF beside a PNG --out.", default=False),
    "ig_steps": _IG_STEPS_CAPTUM,
    "device": DEVICE,
    "seed": replace(SEED, help="Seed of sampling attribution methods (captum)."),
    **_TAIL,
}
EXPORT = {
    "checkpoint": Opt("CKPT", "path", "An mgkit checkpoint (best_f1.pt, a Pareto file, last.pt).", required=True,
                      argument=True),
    "out": Opt("--out", "path", "Where to write the plain state dict (e.g. model.pt).", required=True),
    "as_json": JSON,
}
TABLES = {
    "results": Opt("RESULTS", "path", "Result files (mgkit evaluate / shift JSON) or directories of them.",
                   required=True, argument=True, multiple=True),
    "out": Opt("--out", "path", "Directory for the tables (md, tex, csv) and plots (png, pdf).",
               default="results/tables"),
    "report": Opt("--report", "path", "Claims report.", default_help="OUT/../paper-tables.md"),
    "split": Opt("--split", "text", "Evaluation split the tables compare (shift records keep their splits).",
                 default="test"),
    "plots": Opt("--plots", "bool", "Also draw the Pareto plots (PNG and PDF).", default=True, negatable=True),
    "timings": Opt("--timings", "path", "JSON lines of benchmarks/bench_train.py --one guided/<fam>/<layer> --json, "
                   "timed alone (claim 9's speed); repeatable.", multiple=True),
    "lambdas": Opt("--lambdas", "path", "λ calibration file (RESULTS/lambda.yaml of `make paper-tables` at "
                   "SCALE=paper): the report cites each grid value with its source."),
    **_TAIL,
}

# ------------------------------------------------------------------------------------------ train, guide
# Their options are `config.RunConfig`'s fields (shared with YAML files and config.yaml); these few
# belong to the command line only.

RUN_CONFIG = Opt("--config", "path", "YAML file with any of these options, keys spelled as the flags without dashes "
                 "(e.g. lambda: 1e-3); flags given here override it.")
RUN_TAIL = {
    "restart": Opt("--restart", "bool", "Start over in an existing run directory instead of resuming.", default=False),
    "as_json": JSON,
}

WEIGHTS_LIST = {"as_json": JSON}
WEIGHTS_DOWNLOAD = {
    "models": Opt("MODEL", "text", "Model names (see `mgkit weights list`).", argument=True, multiple=True),
    "everything": Opt("--all", "bool", "Every known weights file.", default=False),
    "force": Opt("--force", "bool", "Download again even when the file is cached.", default=False),
    **_TAIL,
}

COMMANDS: dict[str, dict[str, Opt]] = {
    "prepare synthetic": PREPARE_SYNTHETIC,
    "prepare voc": PREPARE_VOC,
    "prepare coco": PREPARE_COCO,
    "prepare waterbirds": PREPARE_WATERBIRDS,
    "prepare waterbirds-build": PREPARE_WATERBIRDS_BUILD,
    "prepare reference": PREPARE_REFERENCE,
    "inspect": INSPECT,
    "evaluate": EVALUATE,
    "shift": SHIFT,
    "explain": EXPLAIN,
    "export": EXPORT,
    "tables": TABLES,
    "weights list": WEIGHTS_LIST,
    "weights download": WEIGHTS_DOWNLOAD,
}
"""The options of every command but train and guide, whose options are `config.RunConfig`'s fields."""


def options_of(command: str) -> dict[str, Opt]:
    """The options of one command ("evaluate", "prepare voc", "train", ...), in declaration order."""
    if command in ("train", "guide"):
        from mgkit.config import options_for

        return {"config": RUN_CONFIG, **options_for(command), **RUN_TAIL}
    return COMMANDS[command]
