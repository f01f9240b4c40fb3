"""The study's experiments, each declared once: the jobs it needs as a function of the scale file (a
`plan` function), and how the report shows its results (title, table condition, plotted metrics).

Adding an experiment = one `Experiment` here (its `plan` adds runs and result jobs to the `Plan`) and,
if its knobs are new, a key in pipelines/scales/*.yaml. README "Adding an experiment"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from mgkit.pipeline.calibration import calibrates, calibration_layers, grid_keys
from mgkit.pipeline.jobs import Plan
from mgkit.pipeline.scale import Config, word


# ------------------------------------------------------------------------ paths shared by experiments
def base_run(family: str) -> str:
    return f"base/{family}"


def main_run(c: Config, layer: str, loss: str, lam: str) -> str:
    return f"main/{c.name}/{layer}/{loss}/lam{lam}"


def main_data(p: Plan) -> str:
    return p.data("multilabel", "1.0")


def pretrained_backbone(p: Plan, family: str) -> str | None:
    """The family's backbone pretrained on the built-in cue-free shapes (the scale's `pretrain`), the
    stand-in for the paper's ImageNet start: a normal `train` run cached under $(DATA_DIR), so that a
    new $(RUNS) reuses it. None on real data sets, or when the scale does not pretrain this family."""
    pre = p.scale.section("pretrain", ("train", "val", "test", "epochs", "families"))
    if p.dataset != "synthetic" or not pre or family not in pre["families"]:
        return None
    data = p.data("pretrain", "1.0", sizes={k: pre[k] for k in ("train", "val", "test")})
    return p.train(f"pretrain/{family}", data, family, p.scale["data"]["seed"], pre["epochs"], root="$(DATA_DIR)")


def baseline(p: Plan, family: str) -> str:
    return p.train(base_run(family), main_data(p), family, p.scale["data"]["seed"],
                   weights=pretrained_backbone(p, family))


def bbox_count(frac: str, counts: dict | None) -> int | None:
    """The absolute number of annotated images the scale gives for fraction FRAC (None: the fraction)."""
    return next((int(n) for f, n in (counts or {}).items() if word(float(f)) == frac), None)


def main_guided(p: Plan, c: Config, layer: str, loss: str, lam: str, experiment: str | None = None) -> str:
    """The main comparison's run of (configuration, layer, loss, lambda), declared where first needed."""
    return p.guide(main_run(c, layer, loss, lam), baseline(p, c.family), main_data(p), c, loss, layer, lam,
                   p.scale["data"]["seed"], experiment=experiment)


def eval_args(data: str, c: Config, layer: str, runs: list[str] | None = None, ckpt: str | None = None) -> str:
    """`mgkit evaluate` arguments: a Pareto merge over RUNS, or one checkpoint."""
    what = f"--pareto {' '.join(runs)}" if runs else ckpt
    return f"{what} --data {data} --attribution {c.attribution} --layer {layer}"


# ------------------------------------------------------------------------------------ experiments
@dataclass(frozen=True)
class Experiment:
    name: str
    title: str                  # section heading of the report
    label: str                  # table caption
    plan: Callable[[Plan], None]
    condition: str | None = None      # the swept condition's column (annotations: boxes (%), ...)
    percent: bool = False             # the condition is a fraction shown in percent
    unit: str = ""                    # the condition's unit in plot legends (" % boxes")
    metrics: tuple[str, ...] = ("epg", "iou")   # localisation metrics of its tables
    plotted: tuple[str, ...] = ("epg", "iou")   # metrics plotted against F1 (none: no plot)
    merged: bool = False              # plots: one curve per loss over every run (no condition)
    timed: bool = False               # tables: seconds per epoch and speed-up against the main layer
    table: str = "comparison"         # comparison | shift (the Table 1 layout)
    condition_field: str | None = None    # the result point's field the condition is (bbox_frac, dilate, glayer)
    # the main comparison's points that are this experiment's reference condition (e.g. 100 % boxes)
    main_reference: Callable[[Any], bool] | None = None
    main_metric: str | None = None    # main-comparison points that have this metric join its tables
    strict_hash: bool = True          # its points come from one data file (not: annotations, dilation)
    plot_prefix: str | None = None    # file-name prefix of its plots (default: the name)

    @property
    def plot_stem(self) -> str:
        """The file-name prefix of its plots."""
        return self.plot_prefix or self.name


def plan_main(p: Plan) -> None:
    """Paper 7.1: losses x configurations x layers x lambda grid, one baseline per family; per
    (configuration, layer, loss) the Pareto front over the lambda runs, evaluated on test; the unguided
    baselines at each configuration's attribution and layer; figures Energy vs L1 at the ablation index."""
    s = p.scale
    for fam in sorted({c.family for c in s.configs} | {s.ablation_config.family}):
        p.jobs[f"{baseline(p, fam)}/summary.json"].experiments.add("main")
        backbone = pretrained_backbone(p, fam)
        if backbone:  # counted with the main baselines by `make plan`
            p.jobs[f"{backbone}/summary.json"].experiments.add("main")
    for c in s.configs:
        for y in s.layers_of(c):
            for loss in s["losses"]:
                for lam in s.grid(c, loss, y):
                    main_guided(p, c, y, loss, lam, "main")
    main_results(p, s.configs, None, s["losses"])
    for c in s.configs:
        for y in s.layers_of(c):
            figure(p, c, y, "figures")


def main_results(p: Plan, configs: list[Config], layers: list[str] | None, losses: list[str],
                 group: str = "main") -> None:
    """Per configuration and layer (default: the configuration's own layers): the baseline evaluated
    alone, then each loss's Pareto merge."""
    data = main_data(p)
    for c in configs:
        for y in layers or p.scale.layers_of(c):
            base = baseline(p, c.family)
            p.evaluate(f"$(RESULTS)/main/base-{c.name}-{y}.json",
                       eval_args(data, c, y, ckpt=f"{base}/checkpoints/best_f1.pt"), [f"{base}/summary.json"],
                       "main", group)
            for loss in losses:
                runs = [main_guided(p, c, y, loss, lam, group) for lam in p.scale.grid(c, loss, y)]
                p.evaluate(f"$(RESULTS)/main/{c.name}-{y}-{loss}.json", eval_args(data, c, y, runs),
                           [f"{r}/summary.json" for r in runs], "main", group)


def figure(p: Plan, c: Config, layer: str, experiment: str) -> str | None:
    """Energy against L1 at the ablation lambda index, explained side by side on test images (none
    unless the scale has both losses' grids)."""
    s = p.scale
    if not all(s.has_grid(c, loss, layer) for loss in ("energy", "l1")):
        return None
    runs = [main_guided(p, c, layer, loss, s.lam_at(c, loss, layer)) for loss in ("energy", "l1")]
    return p.explain(f"$(RESULTS)/figures/{c.name}-{layer}-energy-vs-l1.png", runs[0], runs[1], main_data(p),
                     experiment)


def _ablation(p: Plan, sub: str, values: list, flag: Callable[[str], tuple[str, str, str]], zero: str,
              zero_first: bool) -> None:
    """An ablation of the ablation configuration/layer over VALUES, each a Pareto merge over the
    ablation's lambdas (`ablation.lambdas`, as the paper compares fronts); ZERO: the main runs' point.
    flag(value) -> (data file, run name suffix, extra guide flags)."""
    s = p.scale
    c, y = s.ablation_config, s["ablation"]["layer"]
    data = main_data(p)
    for loss in s["ablation"]["losses"]:
        for v in values:
            train_data, suffix, extra = flag(v)
            runs = [p.guide(f"{sub}/{loss}/{suffix}-lam{lam}", baseline(p, c.family), train_data, c, loss, y, lam,
                            s["data"]["seed"], extra, experiment=sub) for lam in s.ablation_lambdas(loss)]
            p.evaluate(f"$(RESULTS)/{sub}/{c.name}-{y}-{loss}-{suffix}.json", eval_args(data, c, y, runs),
                       [f"{r}/summary.json" for r in runs], sub)
    for loss in s["ablation"]["losses"]:
        runs = [main_guided(p, c, y, loss, lam, sub) for lam in s.ablation_lambdas(loss)]
        p.evaluate(f"$(RESULTS)/{sub}/{c.name}-{y}-{loss}-{zero}.json", eval_args(data, c, y, runs),
                   [f"{r}/summary.json" for r in runs], sub)
    # the report lists, per loss, the swept values then the main run's point
    order = {f"-{loss}-": i for i, loss in enumerate(s["ablation"]["losses"])}
    p.results[sub].sort(key=lambda r: (next(i for k, i in order.items() if k in r),
                                       0 if r.endswith(f"-{zero}.json") == zero_first else 1))


def plan_annotations(p: Plan) -> None:
    """Paper 7.2: the ablation configuration guided when only a fraction of training images has boxes;
    the 100 % point is the main run."""
    counts = p.scale.raw.get("annotation_counts")
    _ablation(p, "annotations", [word(f) for f in p.scale["annotations"]],
              lambda f: (p.data("multilabel", f, count=bbox_count(f, counts)), f"f{f}", ""), "f1.0",
              zero_first=False)


def plan_dilation(p: Plan) -> None:
    """Paper 7.3: training boxes grown by p (`--dilate`), evaluated on the original boxes; p = 0 is the
    main run."""
    _ablation(p, "dilation", [word(d) for d in p.scale["dilation"]],
              lambda d: (main_data(p), f"d{d}", f"--dilate {d}"), "d0", zero_first=True)


def plan_depth(p: Plan) -> None:
    """Paper 7.5: the ablation configuration guided at deeper layers, evaluated at the input, each layer
    a Pareto merge over its lambdas (`depth.lambdas`); the input point is the main runs'."""
    s = p.scale
    c, loss = s.ablation_config, s["depth"]["loss"]
    data = main_data(p)
    for y in s["depth"]["layers"]:
        runs = [p.guide(f"depth/{loss}/{y}-lam{lam}", baseline(p, c.family), data, c, loss, y, lam, s["data"]["seed"],
                        f"--eval-layer input --eval-attribution {c.attribution}", experiment="depth")
                for lam in s.depth_lambdas(y)]
        p.evaluate(f"$(RESULTS)/depth/{c.name}-{loss}-{y}.json", eval_args(data, c, "input", runs),
                   [f"{r}/summary.json" for r in runs], "depth")
    runs = [main_guided(p, c, "input", loss, lam, "depth") for lam in s.depth_lambdas("input")]
    p.evaluate(f"$(RESULTS)/depth/{c.name}-{loss}-input.json", eval_args(data, c, "input", runs),
               [f"{r}/summary.json" for r in runs], "depth")
    # input first, as the report reads depth top-down
    p.results["depth"].insert(0, p.results["depth"].pop())


def shift_set(p: Plan, c: Config, task: str, seed, group: str = "shift") -> None:
    """Paper 7.6: on the birds task, a baseline and its guided runs for one seed, each evaluated for
    worst-group accuracy (guided runs against the baseline)."""
    s = p.scale
    sh = s["shift"]
    frac = word(sh["bbox_frac"])
    data = p.data(task, frac, count=sh.get("bbox_count"), sizes=sh.get("data"))
    base = p.train(f"shift/{c.name}/{task}/base-s{seed}", data, c.family, seed, sh["base_epochs"], group)
    p.shift(f"$(RESULTS)/shift/{c.name}-{task}-base-s{seed}.json", base, data, None, group)
    for loss in sh["losses"]:
        lam = s.lam_at(c, loss, sh["layer"])
        run = p.guide(f"shift/{c.name}/{task}/{loss}-s{seed}-lam{lam}", base, data, c, loss, sh["layer"], lam, seed,
                      experiment=group)
        p.shift(f"$(RESULTS)/shift/{c.name}-{task}-{loss}-s{seed}.json", run, data, base, group)


def plan_shift(p: Plan) -> None:
    s = p.scale
    for task in s["shift"]["tasks"]:
        for seed in s["shift"]["seeds"]:
            shift_set(p, s.shift_config, task, seed)


def plan_segmentation(p: Plan) -> None:
    """Paper 7.4: on-object energy of Energy- against L1-guided models per configuration and layer, from
    each run at the ablation lambda index (best-F1 checkpoint)."""
    s = p.scale
    data = main_data(p)
    for c in s.configs:
        for y in s.layers_of(c):
            for loss in [x for x in ("energy", "l1") if s.has_grid(c, x, y)]:
                run = main_guided(p, c, y, loss, s.lam_at(c, loss, y), "segmentation")
                p.evaluate(f"$(RESULTS)/segmentation/{c.name}-{y}-{loss}.json",
                           eval_args(data, c, y, ckpt=f"{run}/checkpoints/best_f1.pt"), [f"{run}/summary.json"],
                           "segmentation")


def plan_targets(p: Plan) -> None:
    """Claim 11: the scale's `targets` configuration guided with every ground-truth class per step
    (`--targets all`) over its lambda grid, Pareto-merged like the main runs, whose one-sampled-class
    runs (`--targets random`) are the reference. Nothing without a `targets` key."""
    t = p.scale.section("targets", ("config", "layer", "losses"))
    if not t:
        return
    c, y = p.scale.config(t["config"]), t["layer"]
    data = main_data(p)
    for loss in t["losses"]:
        runs = [p.guide(f"targets/{c.name}/{y}/{loss}/all-lam{lam}", baseline(p, c.family), data, c, loss, y, lam,
                        p.scale["data"]["seed"], "--targets all", experiment="targets")
                for lam in p.scale.grid(c, loss, y)]
        p.evaluate(f"$(RESULTS)/targets/{c.name}-{y}-{loss}-all.json", eval_args(data, c, y, runs),
                   [f"{r}/summary.json" for r in runs], "targets")
        # the reference: the main comparison's front of the same configuration, layer and loss
        ref = [main_guided(p, c, y, loss, lam, "targets") for lam in p.scale.grid(c, loss, y)]
        p.evaluate(f"$(RESULTS)/main/{c.name}-{y}-{loss}.json", eval_args(data, c, y, ref),
                   [f"{r}/summary.json" for r in ref], "main")


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("main", "1. Main comparison (§7.1)", "Main comparison", plan_main, merged=True, plot_prefix="pareto"),
    Experiment("annotations", "2. Limited annotations (§7.2)", "Limited annotations", plan_annotations,
               condition="boxes (%)", percent=True, unit=" % boxes", condition_field="bbox_frac",
               main_reference=lambda p: p.bbox_frac == 1.0, strict_hash=False),
    Experiment("dilation", "3. Dilated boxes (§7.3)", "Dilated boxes", plan_dilation, condition="dilation (%)",
               percent=True, unit=" % dilation", condition_field="dilate", main_reference=lambda p: p.dilate == 0.0,
               strict_hash=False),
    Experiment("depth", "4. Guidance depth (§7.5)", "Guidance depth", plan_depth, condition="guided at", timed=True,
               condition_field="glayer", main_reference=lambda p: p.glayer == p.elayer),
    Experiment("shift", "5. Distribution shift (§7.6, Table 1)", "Distribution shift", plan_shift, metrics=(),
               plotted=(), table="shift"),
    Experiment("segmentation", "6. On-object energy (§7.4)", "On-object energy (segmentation masks)",
               plan_segmentation, metrics=("on_object", "epg"), plotted=("on_object",), merged=True,
               main_metric="on_object"),
    Experiment("targets", "7. One sampled class or all classes per step (claim 11)", "Guided classes per step",
               plan_targets, condition="classes per step", condition_field="targets",
               main_reference=lambda p: p.targets == "random"),
)
BY_NAME = {e.name: e for e in EXPERIMENTS}
# Needs Waterbirds (WB_ROOT, CUB_ROOT) on real data sets: skipped without them.
NEEDS_WATERBIRDS = ("shift",)

# `make demo`: one configuration, Energy vs L1 at the input and final layer, one birds shift set.
DEMO = {"config": "vanilla-ixg", "layers": ["input", "final"], "losses": ["energy", "l1"], "shift_task": "birds"}


def plan_demo(p: Plan) -> None:
    """The demo's results (group "demo") and figures ("demo-figures"), declared from jobs most of which the
    experiments already hold."""
    s = p.scale
    demo = {**DEMO, **(s.raw.get("demo") or {})}
    c = s.config(demo["config"])
    seeds = s["shift"]["seeds"]
    if not all(s.has_grid(c, loss, y) for loss in demo["losses"] for y in demo["layers"]):
        return  # a scale without the demo's grids (a test's miniature) has no demo
    main_results(p, [c], demo["layers"], demo["losses"], "demo")
    if seeds:
        shift_set(p, c, demo["shift_task"], seeds[0], "demo")
    for y in demo["layers"]:
        figure(p, c, y, "demo-figures")


def plan_calibration(p: Plan) -> None:
    """A scale with `calibrate:` (SCALE=paper): every configuration's λ* measured on its family's baseline,
    merged into $(RESULTS)/lambda.yaml, which the planner reads for the guided runs' grids once it exists
    (`make paper-tables` makes it first, then re-plans: Makefile)."""
    s = p.scale
    if not calibrates(s) or p.dataset == "waterbirds":  # Waterbirds alone: no multilabel baselines to measure
        return
    configs = list({c.name: c for c, _, _ in grid_keys(s)}.values())
    p.lambda_file([p.calibrate(c, baseline(p, c.family), main_data(p), calibration_layers(s, c), s["losses"])
                   for c in configs])


def build(scale, dataset: str) -> Plan:
    """The calibration step (if the scale has one), every experiment's jobs, then the demo's (which
    reuse them)."""
    p = Plan(scale, dataset)
    plan_calibration(p)
    for e in EXPERIMENTS:
        p.results.setdefault(e.name, [])
        e.plan(p)
    plan_demo(p)
    return p
