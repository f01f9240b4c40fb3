"""Typed run configuration for `train` and `guide`: per-family defaults < YAML file < CLI flags.

Each option is declared once, as a field of `RunConfig` with an `Opt` record of `mgkit.options` (flag,
kind, allowed values, range, help, stages); options other commands share (`--seed`, `--iou-threshold`,
...) are the shared records of `mgkit.options`. The CLI builds its `train` and `guide` options from these
records, YAML files and command-line strings go through the same `coerce`, and every value is checked
here, before any data file is opened, network built or run directory written. `None` means "the
per-family default"; there are no "0 means default" values.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from mgkit import options, registry
from mgkit.errors import UsageError
from mgkit.options import Opt
from mgkit.options import fmt as _fmt

TRAIN, GUIDE = "train", "guide"
STAGES = (TRAIN, GUIDE)
BOTH = frozenset(STAGES)
ONLY_GUIDE = frozenset({GUIDE})
ONLY_TRAIN = frozenset({TRAIN})

# Options that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = frozenset({"quiet", "workers", "device", "epochs", "eval_batch_size"})


def _family(model_name: str):
    """The registry's Family record of a model (lazy: importing torch is slow and --help need not pay)."""
    from mgkit.models import family_of

    return family_of(model_name)


# ------------------------------------------------------------------------------------------ declarations


def _opt(default: Any, flag: str, help: str, kind: str, **kw: Any) -> Any:
    """A RunConfig field declared by a new Opt (both commands unless `stages` says otherwise)."""
    o = Opt(flag=flag, kind=kind, help=help, default=default, **{"stages": BOTH, **kw})
    return field(default=default, metadata={"opt": o})


def _field(o: Opt, **changes: Any) -> Any:
    """A RunConfig field declared by a shared Opt of mgkit.options (changed as given)."""
    o = dataclasses.replace(o, **{"stages": BOTH, **changes})
    return field(default=o.default, metadata={"opt": o})


def _per_family(key: str) -> str:
    """'per model family: 1e-4 B-cos, 1e-5 others' from the registry's family facts."""
    by_value: dict[Any, list[str]] = {}
    for facts in registry.FAMILIES.values():
        by_value.setdefault(facts.training_defaults()[key], []).append(facts.label)
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
    model: str | None = _opt(None, "--model", "Network.", "choice", choices=registry.MODEL_NAMES,
                             default_help={TRAIN: registry.TRAIN_DEFAULT_MODEL, GUIDE: "the --from checkpoint's model"})
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
    eval_batch_size: int = _field(options.EVAL_BATCH_SIZE, help="Batch size of the validation pass.")
    seed: int = _field(options.SEED)
    device: str = _field(options.DEVICE)
    amp: str = _field(options.AMP, help=options.AMP.help + " Training: CUDA only.")
    channels_last: bool = _opt(False, "--channels-last", "channels_last memory format.", "bool", negatable=True)
    workers: int | None = _field(options.WORKERS)
    eval_every: int = _opt(1, "--eval-every", "Validate every k epochs (and after the last).", "int", lo=1)
    min_f1: float | None = _opt(None, "--min-f1", "Stop when validation F1 falls below this (reference --min_fscore).",
                                "float", lo=0, hi=1, default_help="none: never stop early")
    # guidance
    loss: str | None = _opt(None, "--loss", "Localization loss.", "choice", choices=registry.LOSSES, stages=ONLY_GUIDE,
                            required=True)
    attribution: str | None = _field(options.ATTRIBUTION, help="Attribution the loss is computed on.",
                                     stages=ONLY_GUIDE, default_help=_per_family("attribution"),
                                     recorded=BOTH)  # train: the family's, which validation uses by default
    layer: str = _field(options.LAYER, help="Layer whose attributions are guided.", default="input",
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
    ig_steps: int = _field(options.IG_STEPS)
    allow_unannotated: bool = _opt(False, "--allow-unannotated", "Guide even when the data file marks no training "
                                   "image as annotated (refused otherwise).", "bool", stages=ONLY_GUIDE,
                                   negatable=True)
    # evaluation during training
    eval_attribution: str | None = _opt(None, "--eval-attribution", "Attribution for validation EPG/IoU.", "choice",
                                        choices=registry.ATTRIBUTIONS,
                                        default_help={TRAIN: _per_family("attribution"),
                                                      GUIDE: "the --attribution"})
    eval_layer: str | None = _opt(None, "--eval-layer", "Layer for validation EPG/IoU.", "choice",
                                  choices=registry.LAYERS, default_help={TRAIN: "input", GUIDE: "the --layer"})
    iou_threshold: float = _field(options.IOU_THRESHOLD)
    quiet: bool = _field(options.QUIET)

    def with_defaults(self, d: dict[str, Any]) -> "RunConfig":
        """Fill the fields left at None from one family's defaults `d` (`FamilyFacts.training_defaults()`)."""
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
DEFAULTS: dict[str, Any] = {name: o.default for name, o in OPTIONS.items()}


def options_for(stage: str) -> dict[str, Opt]:
    """The options of one command, in declaration order."""
    return {n: o for n, o in OPTIONS.items() if stage in o.stages}


def default_text(name: str, stage: str) -> str | None:
    """The default as --help shows it."""
    return OPTIONS[name].default_text(stage)


def _lookup(key: str) -> str | None:
    """Field name for a YAML key written as the flag ("batch-size", "lambda") or the field ("batch_size")."""
    for name, o in OPTIONS.items():
        if key in (o.key, o.key.replace("-", "_"), name):
            return name
    return None


# ------------------------------------------------------------------------------------------ coercion


def coerce(name: str, value: Any, where: str) -> Any:
    """Convert a CLI string or YAML value to the declared type and check it; `where` names it in messages."""
    return options.coerce(OPTIONS[name], value, where)


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
                raise UsageError(f"mgkit guide needs --loss ({', '.join(registry.LOSSES)})")
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
    model = cfg.model or parent_model or (registry.TRAIN_DEFAULT_MODEL if cfg.stage == TRAIN else None)
    if model is None:
        raise ValueError("resolve() of a guide configuration without --model needs parent_model")
    if model not in registry.MODELS:
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
