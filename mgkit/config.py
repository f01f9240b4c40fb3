"""Typed run configuration for `train` and `guide`: per-family defaults < YAML file < CLI flags.

Each option is declared once, as a field of `RunConfig` with an `Opt` record (flag, kind, allowed values,
range, help, stages). The CLI builds its `train` and `guide` options from these records, YAML files and
command-line strings go through the same `coerce`, and every value is checked here, before any data
file is opened, network built or run directory written. `None` means "the per-family default"; there
are no "0 means default" values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mgkit.errors import UsageError

TRAIN, GUIDE = "train", "guide"
STAGES = (TRAIN, GUIDE)
BOTH = frozenset(STAGES)
ONLY_GUIDE = frozenset({GUIDE})
ONLY_TRAIN = frozenset({TRAIN})

# Allowed values. Kept here (light to import: the CLI builds its --help from them without importing
# torch); tests/test_config.py checks that they equal the registries in mgkit.models, mgkit.losses and
# mgkit.attribution.
MODELS = ("resnet18", "resnet50", "bcos-resnet18", "bcos-resnet50", "xdnn-resnet18", "xdnn-resnet50")
LOSSES = ("energy", "l1", "ppce", "rrr", "energy-size")
ATTRIBUTIONS = ("ixg", "bcos", "gradcam", "intgrad")
LAYERS = ("input", "mid1", "mid2", "mid3", "final")
DEVICES = ("auto", "cpu", "cuda", "mps")

# Per-family training defaults, for --help only: the model registry's Family records
# (mgkit.models.FAMILIES) are the source, and resolving a configuration reads them there. They are
# mirrored here so that `--help` needs no torch import; tests/test_config.py checks the two agree.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "bcos": {"lr": 1e-4, "batch_size": 64, "train_epochs": 300, "guide_epochs": 50, "attribution": "bcos"},
    "vanilla": {"lr": 1e-5, "batch_size": 16, "train_epochs": 100, "guide_epochs": 50, "attribution": "ixg"},
    "xdnn": {"lr": 1e-5, "batch_size": 16, "train_epochs": 100, "guide_epochs": 50, "attribution": "intgrad"},
}
FAMILY_LABELS = {"bcos": "B-cos", "vanilla": "vanilla", "xdnn": "X-DNN"}
TRAIN_DEFAULT_MODEL = "resnet50"

# Options that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset({"quiet", "workers", "device", "epochs", "eval_batch_size"})


def _family(model_name: str):
    """The registry's Family record of a model (lazy: importing torch is slow and --help need not pay)."""
    from mgkit.models import family_of

    return family_of(model_name)


# ------------------------------------------------------------------------------------------ declarations


@dataclass(frozen=True)
class Opt:
    """How one option is spelled, typed, limited and explained."""

    flag: str  # as the user writes it: "--lambda"
    kind: str  # int | float | choice | path | bool
    help: str
    stages: frozenset[str] = BOTH
    choices: tuple[str, ...] | None = None
    lo: float | None = None  # lower bound
    lo_open: bool = False  # lower bound excluded (> instead of >=)
    hi: float | None = None  # upper bound (included)
    default_help: str | dict[str, str] | None = None  # shown for a None default; per stage if a dict
    short: str | None = None  # e.g. "-q"
    negatable: bool = False  # bool flags: --x/--no-x
    required: bool = False
    recorded: frozenset[str] | None = None  # stages whose config.yaml records it (default: `stages`)

    @property
    def key(self) -> str:
        """The YAML spelling: the flag without dashes ("lambda", "batch-size")."""
        return self.flag.lstrip("-")

    def allowed(self) -> str:
        """What a valid value looks like, for messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices or ())
        if self.kind == "bool":
            return "true or false"
        if self.kind == "path":
            return "a path"
        what = "an integer" if self.kind == "int" else "a number"
        bounds = []
        if self.lo is not None and self.hi is not None and not self.lo_open:
            return f"{what} between {_fmt(self.lo)} and {_fmt(self.hi)}"
        if self.lo is not None:
            bounds.append(f"{'>' if self.lo_open else '≥'} {_fmt(self.lo)}")
        if self.hi is not None:
            bounds.append(f"≤ {_fmt(self.hi)}")
        return f"{what} {' and '.join(bounds)}".strip() if bounds else what

    def metavar(self) -> str:
        if self.kind == "choice":
            listed = "[" + "|".join(self.choices or ()) + "]"
            # Long lists would push the line past 80 columns: then a name here, the list in the help.
            return listed if len(self.flag) + len(listed) <= 44 else self.key.upper().replace("-", "_")
        return {"int": "INTEGER", "float": "NUMBER", "path": "PATH"}.get(self.kind, "")

    def help_text(self) -> str:
        """The help, with the allowed values when the metavar does not list them."""
        if self.kind == "choice" and not self.metavar().startswith("["):
            return f"{self.help} One of: {', '.join(self.choices or ())}."
        return self.help


def _opt(default: Any, flag: str, help: str, kind: str, **kw: Any) -> Any:
    return field(default=default, metadata={"opt": Opt(flag=flag, kind=kind, help=help, **kw)})


def _fmt(v: Any) -> str:
    """1e-4 rather than 0.0001; 64 rather than 64.0."""
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if 0 < abs(v) < 1e-2:
            mantissa, exp = f"{v:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return f"{v:g}"
    return str(v)


def _per_family(key: str) -> str:
    """'per model family: 1e-4 B-cos, 1e-5 others' from FAMILY_DEFAULTS."""
    by_value: dict[Any, list[str]] = {}
    for family, d in FAMILY_DEFAULTS.items():
        by_value.setdefault(d[key], []).append(FAMILY_LABELS[family])
    if len(by_value) == 1:
        return _fmt(next(iter(by_value)))
    common = max(by_value, key=lambda v: len(by_value[v]))
    if len(by_value[common]) == 1:
        return "per model family: " + ", ".join(f"{_fmt(v)} {', '.join(n)}" for v, n in by_value.items())
    parts = [f"{_fmt(v)} {', '.join(names)}" for v, names in by_value.items() if v != common]
    return "per model family: " + ", ".join(parts + [f"{_fmt(common)} others"])


@dataclass
class RunConfig:
    """Everything that determines a training or guidance run; written to runs/NAME/config.yaml."""

    stage: str  # "train" or "guide" (the command, not an option)
    data: str = _opt(None, "--data", "Prepared data file (mgkit prepare).", "path", required=True)
    out: str = _opt(None, "--out", "Run directory; re-running the same command resumes it.", "path",
                    required=True)
    model: str | None = _opt(None, "--model", "Network.", "choice", choices=MODELS,
                             default_help={TRAIN: TRAIN_DEFAULT_MODEL, GUIDE: "the --from checkpoint's model"})
    init_from: str | None = _opt(None, "--from", "Checkpoint to fine-tune (e.g. runs/BASE/checkpoints/best_f1.pt).",
                                 "path", stages=ONLY_GUIDE, required=True)
    pretrained: bool = _opt(False, "--pretrained", "Start from ImageNet weights (local torch hub cache).", "bool",
                            stages=ONLY_TRAIN, negatable=True)
    weights: str | None = _opt(None, "--weights", "Start from a weights file.", "path", stages=ONLY_TRAIN,
                               default_help="none")
    epochs: int | None = _opt(None, "--epochs", "Epochs to train.", "int", lo=1,
                              default_help={TRAIN: _per_family("train_epochs"), GUIDE: _per_family("guide_epochs")})
    lr: float | None = _opt(None, "--lr", "Adam learning rate, constant.", "float", lo=0, lo_open=True,
                            default_help=_per_family("lr"))
    batch_size: int | None = _opt(None, "--batch-size", "Global batch size over all processes.", "int", lo=1,
                                  default_help=_per_family("batch_size"))
    eval_batch_size: int = _opt(64, "--eval-batch-size", "Batch size of the validation pass.", "int", lo=1)
    seed: int = _opt(0, "--seed", "Seed of initialisation, data order and target sampling.", "int", lo=0)
    device: str = _opt("auto", "--device", "auto: CUDA, else MPS, else CPU.", "choice", choices=DEVICES)
    amp: str = _opt("none", "--amp", "Mixed precision (bf16: CUDA only).", "choice", choices=("none", "bf16"))
    channels_last: bool = _opt(False, "--channels-last", "channels_last memory format.", "bool", negatable=True)
    workers: int | None = _opt(None, "--workers", "DataLoader worker processes (0: load in the main process).",
                               "int", lo=0, default_help="0 on the CPU, up to 8 on CUDA")
    eval_every: int = _opt(1, "--eval-every", "Validate every k epochs (and after the last).", "int", lo=1)
    min_f1: float | None = _opt(None, "--min-f1", "Stop when validation F1 falls below this (reference --min_fscore).",
                                "float", lo=0, hi=1, default_help="none: never stop early")
    # guidance
    loss: str | None = _opt(None, "--loss", "Localization loss.", "choice", choices=LOSSES, stages=ONLY_GUIDE,
                            required=True)
    attribution: str | None = _opt(None, "--attribution", "Attribution the loss is computed on.", "choice",
                                   choices=ATTRIBUTIONS, stages=ONLY_GUIDE, default_help=_per_family("attribution"),
                                   recorded=BOTH)  # train: the family's, which validation uses by default
    layer: str = _opt("input", "--layer", "Layer whose attributions are guided.", "choice", choices=LAYERS,
                      stages=ONLY_GUIDE)
    lam: float = _opt(1e-3, "--lambda", "Weight of the localization loss (L = BCE + λ·L_loc).", "float", lo=0,
                      stages=ONLY_GUIDE)
    targets: str = _opt("random", "--targets", "random: one ground-truth class per image per step (reference); "
                        "all: every present class.", "choice", choices=("random", "all"), stages=ONLY_GUIDE)
    dilate: float = _opt(0.0, "--dilate", "Grow each training box side by p·w and p·h.", "float", lo=0,
                         stages=ONLY_GUIDE)
    loc_reduction: str = _opt("sum", "--loc-reduction", "sum (reference) or mean over annotated images.", "choice",
                              choices=("sum", "mean"), stages=ONLY_GUIDE)
    size_alpha: float = _opt(0.5, "--size-alpha", "α of energy-size: 1 − EPG / area^α.", "float", lo=0,
                             stages=ONLY_GUIDE)
    ig_steps: int = _opt(16, "--ig-steps", "Riemann steps of IntGrad on non-X-DNN models.", "int", lo=1)
    allow_unannotated: bool = _opt(False, "--allow-unannotated", "Guide even when the data file marks no training "
                                   "image as annotated (refused otherwise).", "bool", stages=ONLY_GUIDE,
                                   negatable=True)
    # evaluation during training
    eval_attribution: str | None = _opt(None, "--eval-attribution", "Attribution for validation EPG/IoU.", "choice",
                                        choices=ATTRIBUTIONS,
                                        default_help={TRAIN: _per_family("attribution"),
                                                      GUIDE: "the --attribution"})
    eval_layer: str | None = _opt(None, "--eval-layer", "Layer for validation EPG/IoU.", "choice", choices=LAYERS,
                                  default_help={TRAIN: "input", GUIDE: "the --layer"})
    iou_threshold: float = _opt(0.5, "--iou-threshold", "Fixed IoU threshold on min-max normalised maps "
                                "(reference 0.5).", "float", lo=0, hi=1)
    quiet: bool = _opt(False, "--quiet", "No progress output.", "bool", short="-q")

    def with_defaults(self, d: dict[str, Any]) -> "RunConfig":
        """Fill the fields left at None from one family's defaults `d` (a FAMILY_DEFAULTS record)."""
        attribution = self.attribution if self.attribution is not None else d["attribution"]
        return dataclasses.replace(
            self,
            epochs=self.epochs if self.epochs is not None else d[f"{self.stage}_epochs"],
            lr=self.lr if self.lr is not None else d["lr"],
            batch_size=self.batch_size if self.batch_size is not None else d["batch_size"],
            attribution=attribution,
            eval_attribution=self.eval_attribution if self.eval_attribution is not None else attribution,
            eval_layer=self.eval_layer if self.eval_layer is not None else self.layer,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stage_dict(self) -> dict[str, Any]:
        """The fields that belong to this stage (what config.yaml records)."""
        d = self.to_dict()
        return {"stage": self.stage, **{n: d[n] for n, o in OPTIONS.items() if self.stage in (o.recorded or o.stages)}}

    def _differing(self, other: "RunConfig") -> list[str]:
        a, b = self.stage_dict(), other.stage_dict()
        return [k for k in a if k != "stage" and k not in RESUMABLE_CHANGES and a[k] != b.get(k)]

    def differences(self, other: "RunConfig") -> list[str]:
        """Options whose values differ, as flags ("--lambda"), ignoring those a resumption may change."""
        if self.stage != other.stage:
            return [f"mgkit {self.stage} vs mgkit {other.stage}"]
        return [OPTIONS[k].flag for k in self._differing(other)]

    def difference_details(self, other: "RunConfig") -> list[str]:
        """Like differences(), with both values: "--lr 0.001 (now 0.5)"."""
        if self.stage != other.stage:
            return self.differences(other)
        a, b = self.to_dict(), other.to_dict()
        return [f"{OPTIONS[k].flag} {_fmt(a[k])} (now {_fmt(b[k])})" for k in self._differing(other)]


OPTIONS: dict[str, Opt] = {f.name: f.metadata["opt"] for f in fields(RunConfig) if "opt" in f.metadata}
FIELD_NAMES = {f.name for f in fields(RunConfig)}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunConfig) if f.name in OPTIONS}


def options_for(stage: str) -> dict[str, Opt]:
    """The options of one command, in declaration order."""
    return {n: o for n, o in OPTIONS.items() if stage in o.stages}


def default_text(name: str, stage: str) -> str:
    """The default as --help shows it."""
    o = OPTIONS[name]
    if o.default_help is not None:
        return o.default_help[stage] if isinstance(o.default_help, dict) else o.default_help
    value = DEFAULTS[name]
    if o.kind == "bool":
        return "off" if not value else "on"
    return _fmt(value)


def _lookup(key: str) -> str | None:
    """Field name for a YAML key written as the flag ("batch-size", "lambda") or the field ("batch_size")."""
    for name, o in OPTIONS.items():
        if key in (o.key, o.key.replace("-", "_"), name):
            return name
    return None


# ------------------------------------------------------------------------------------------ coercion


def _kind_of(value: Any) -> str:
    return {list: "a list", dict: "a mapping", bool: "a boolean", type(None): "nothing"}.get(type(value), repr(value))


def coerce(name: str, value: Any, where: str) -> Any:
    """Convert a CLI string or YAML value to the declared type and check it; `where` names it in messages."""
    o = OPTIONS[name]

    def bad(detail: str = "") -> UsageError:
        shown = value if isinstance(value, str) else _kind_of(value)
        shown = f"{shown!r}" if isinstance(value, str) else shown
        return UsageError(f"{where} must be {o.allowed()}, got {shown}{detail}")

    if o.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad()
    if o.kind in ("choice", "path"):
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise bad()
        if o.kind == "choice" and value not in (o.choices or ()):
            close = difflib.get_close_matches(value, o.choices or (), n=1)
            raise bad(f" (did you mean {close[0]}?)" if close else "")
        return value
    # numbers
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


# ------------------------------------------------------------------------------------------ building


def load_yaml(path: str | Path, stage: str | None = None) -> dict[str, Any]:
    """Read a config file into {field: coerced value}; every problem names the file and the key."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"--config {path}: no such file")
    if path.is_dir():
        raise UsageError(f"--config {path}: is a directory, not a YAML file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping of option names to values")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key == "stage":  # a run's config.yaml may be reused as --config
            if stage is not None and value != stage:
                raise UsageError(f"--config {path}: 'stage: {value}' is a configuration for mgkit {value}, "
                                 f"not mgkit {stage}")
            continue
        name = _lookup(key)
        if name is None:
            close = difflib.get_close_matches(key, [o.key for o in OPTIONS.values()], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UsageError(f"--config {path}: unknown option '{key}'{hint}")
        o = OPTIONS[name]
        if stage is not None and stage not in o.stages and stage in (o.recorded or ()):
            continue  # recorded in a run's config.yaml but derived, not set, for this stage
        if stage is not None and stage not in o.stages:
            other = " and ".join(f"mgkit {s}" for s in sorted(o.stages))
            raise UsageError(f"--config {path}: '{key}' is an option of {other}, not of mgkit {stage}")
        if value is None:  # `lr: null` / `lr:` means "not given"
            continue
        out[name] = coerce(name, value, f"--config {path}: {key}")
    return out


def build_config(stage: str, cli: dict[str, Any], config_file: str | Path | None) -> RunConfig:
    """Merge YAML and CLI values (CLI wins; a None CLI value means 'not given') and check them all.

    Nothing is opened but the YAML file: the returned configuration still holds None for the
    per-family defaults; `resolve` fills them once the model is known.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    values: dict[str, Any] = load_yaml(config_file, stage) if config_file else {}
    for name, value in cli.items():
        if value is None:
            continue
        if name not in OPTIONS:
            raise UsageError(f"unknown option {name!r}")
        o = OPTIONS[name]
        if stage not in o.stages:
            raise UsageError(f"{o.flag} is an option of mgkit {' and '.join(sorted(o.stages))}, not of mgkit {stage}")
        values[name] = coerce(name, value, o.flag)
    for name, o in options_for(stage).items():
        if o.required and values.get(name) is None:
            if name == "loss":
                raise UsageError(f"mgkit guide needs --loss ({', '.join(LOSSES)})")
            if name == "init_from":
                raise UsageError("mgkit guide needs --from CHECKPOINT (e.g. runs/BASE/checkpoints/best_f1.pt)")
            raise UsageError(f"{o.flag} is required (on the command line or in --config)")
    cfg = RunConfig(stage=stage, **values)
    _check_static(cfg)
    return cfg


def _check_static(cfg: RunConfig) -> None:
    """Checks across options that need no model, data or checkpoint."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; a run directory is needed (choose another --out)")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is a file, so no run directory can be made there")
    if cfg.amp == "bf16" and cfg.device in ("cpu", "mps"):
        raise UsageError(f"--amp bf16 needs a CUDA device, but --device is {cfg.device}")
    if cfg.weights is not None and cfg.pretrained:
        raise UsageError("--weights and --pretrained both choose starting weights; pass one of them")


def check(cfg: RunConfig) -> None:
    """Checks that depend on the model (its family and the attributions it supports)."""
    if cfg.model is None:
        raise ValueError("check() needs a resolved configuration")
    supported = _family(cfg.model).attributions
    for flag, value in (("--attribution", cfg.attribution), ("--eval-attribution", cfg.eval_attribution)):
        if value is not None and value not in supported:
            raise UsageError(f"{flag} {value} is not available for {cfg.model} (choose {', '.join(supported)})")
    # Riemann IntGrad replicates the batch along the path; in train mode BatchNorm would mix the path
    # points, so guided IntGrad uses X-DNN, where it is exact in one pass (the paper's choice).
    if cfg.stage == GUIDE and cfg.attribution == "intgrad" and not _family(cfg.model).exact_intgrad:
        raise UsageError("--attribution intgrad for guidance needs an xdnn model "
                         "(elsewhere use it with --eval-attribution)")


def resolve(cfg: RunConfig, parent_model: str | None = None) -> RunConfig:
    """Fill the model (train: resnet50; guide: the parent checkpoint's) and the per-family defaults, then check.

    For guide without --model, pass the parent checkpoint's model name as `parent_model`.
    """
    model = cfg.model or parent_model or (TRAIN_DEFAULT_MODEL if cfg.stage == TRAIN else None)
    if model is None:
        raise ValueError("resolve() of a guide configuration without --model needs parent_model")
    if model not in MODELS:
        raise UsageError(f"--from {cfg.init_from} holds a {model} model, which this version of mgkit does not know")
    cfg = dataclasses.replace(cfg, model=model)
    cfg = cfg.with_defaults(_family(model).training_defaults())
    check(cfg)
    return cfg


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    from mgkit.artifacts import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.stage_dict(), sort_keys=False))


def config_from_dict(d: dict[str, Any]) -> RunConfig:
    return RunConfig(**{k: v for k, v in d.items() if k in FIELD_NAMES})
