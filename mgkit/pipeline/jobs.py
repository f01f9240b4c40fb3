"""Jobs: one output file, its inputs, its command. The experiments add jobs to a `Plan`; the planner
writes each as one Make rule. Paths keep Make's directory variables ($(DATA_DIR), $(RUNS), $(RESULTS)),
so one generated file serves any location; commands keep $(MGKIT) and $(RUN_FLAGS)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mgkit.errors import UsageError
from mgkit.pipeline.scale import Config, Scale, word

# The kinds that go through the launcher (GPU work); the others run where make runs.
LAUNCHED = ("train", "guide", "evaluate", "shift", "explain", "calibrate")


@dataclass
class Job:
    kind: str                 # prepare | train | guide | evaluate | shift | explain | calibrate | lambda | tables
    target: str               # the file the rule makes
    deps: list[str]
    command: str              # after $(MGKIT): e.g. "train --data ..."
    header: str               # the progress line (after "[GOAL +elapsed] ")
    log: str                  # the log file the stage's stderr is appended to
    label: str                # prefix of the streamed progress lines
    name: str                 # the run's name (SLURM job name, launch record)
    record: str               # where the launcher writes which machine / GPU ran it
    after: list[str] = field(default_factory=list)   # recipe lines after the command
    order_only: list[str] = field(default_factory=list)
    number: int = 0           # training jobs: n of "job n of N"
    experiments: set[str] = field(default_factory=set)
    program: str = "$(MGKIT)"  # what runs `command` (the rule runs "PROGRAM COMMAND")

    @property
    def run_dir(self) -> str | None:
        return self.target.rsplit("/", 1)[0] if self.kind in ("train", "guide") else None


class Plan:
    """The jobs of a scale and data set, in the order they were declared, each target once."""

    def __init__(self, scale: Scale, dataset: str):
        self.scale = scale
        self.dataset = dataset
        self.jobs: dict[str, Job] = {}
        self.results: dict[str, list[str]] = {}   # experiment -> result/figure files, in order
        self.runs = 0

    # --------------------------------------------------------------------------- bookkeeping
    def _add(self, job: Job, experiment: str | None) -> Job:
        if job.target in self.jobs:
            job = self.jobs[job.target]
        else:
            if job.kind in ("train", "guide"):
                self.runs += 1
                job.number = self.runs
            self.jobs[job.target] = job
        if experiment:
            job.experiments.add(experiment)
        return job

    def result(self, experiment: str, job: Job) -> str:
        job.experiments.add(experiment)
        self.results.setdefault(experiment, [])
        if job.target not in self.results[experiment]:
            self.results[experiment].append(job.target)
        return job.target

    # ---------------------------------------------------------------------------------- data
    def data(self, task: str, frac: str, experiment: str | None = None, count: int | None = None,
             sizes: dict | None = None) -> str:
        """$(DATA_DIR)/TASK-fFRAC[-nCOUNT].h5 (task multilabel | birds | birds-place | pretrain). COUNT: an
        absolute number of annotated training images standing for the fraction FRAC (built-in data only);
        SIZES: the built-in data's split sizes and cue agreement (train, val, test, spurious) where they
        differ from the scale's `data`."""
        s = self.scale
        d = {**s["data"], **(sizes or {})}
        synthetic = self.dataset == "synthetic"
        count = count if synthetic else None
        out = f"$(DATA_DIR)/{task}-f{frac}{f'-n{count}' if count is not None else ''}.h5"
        if synthetic:
            cmd = (f"prepare synthetic --task {task} --size {d['size']} --train {d['train']} --val {d['val']} "
                   f"--test {d['test']}" + (f" --spurious {word(d['spurious'])}" if "spurious" in d else "")
                   + (f" --bbox-count {count}" if count is not None else ""))
        elif task.startswith("birds"):
            # $(WATERBIRDS) (pipelines/common.mk): read from WB_ROOT, or built from CUB_ROOT and PLACES_ROOT
            cmd = f"prepare $(WATERBIRDS) --task {'place' if task == 'birds-place' else 'bird'} --size {d['size']}"
        else:
            root = {"voc": "$(VOC_ROOT)", "coco": "$(COCO_ROOT)"}.get(self.dataset, "$(DATA_ROOT)")
            cmd = f"prepare {self.dataset} --root {root} --size {d['size']}"
        cmd += f" --bbox-frac {frac} --seed {d['seed']} --out {out} --force"
        what = f"{count} annotated images for {frac}" if count is not None else f"{frac} of training boxes"
        self._add(Job("prepare", out, [], cmd, f"prepare {task} data, {what} -> {out}",
                      f"{out}.log", f"{task} data", out[:-3].replace("$(DATA_DIR)", "data"), "",
                      after=[f"rm -f {out}.log.out"], order_only=["$(STAMP)"]), experiment)
        return out

    # ---------------------------------------------------------------------------------- runs
    def train(self, run: str, data: str, family: str, seed, epochs=None, experiment: str | None = None,
              weights: str | None = None, root: str = "$(RUNS)") -> str:
        """A baseline run in ROOT/RUN, from scratch, ImageNet weights (the family's `pretrained`) or the
        best_f1.pt of the run in directory WEIGHTS; returns its directory."""
        fam = self.scale.families[family]
        epochs = fam.base_epochs if epochs is None else epochs
        d = f"{root}/{run}"
        start = (f" --weights {weights}/checkpoints/best_f1.pt" if weights
                 else " --pretrained" if fam.pretrained else "")
        cmd = (f"train --data {data} --model {fam.model}{start} --epochs {epochs} "
               f"--lr {word(fam.lr)} --batch-size {fam.batch} --seed {seed} $(RUN_FLAGS) --out {d} --json")
        deps = [data] + ([f"{weights}/summary.json"] if weights else [])
        self._add(Job("train", f"{d}/summary.json", deps, cmd,
                      f"train {family} {'baseline' if root == '$(RUNS)' else 'backbone'} ({fam.model}, "
                      f"{epochs} epochs) -> {d}", f"{d}/log.txt", "", run,
                      f"{d}/launch.json", after=[f"mv {d}/log.txt.out {d}/summary.json"]), experiment)
        return d

    def guide(self, run: str, base: str, data: str, config: Config, loss: str, layer: str, lam: str, seed,
              extra: str = "", experiment: str | None = None) -> str:
        """A guided run in $(RUNS)/RUN from BASE's best_f1.pt; returns its directory."""
        fam = self.scale.family(config)
        d = f"$(RUNS)/{run}"
        cmd = (f"guide --from {base}/checkpoints/best_f1.pt --data {data} --loss {loss} "
               f"--attribution {config.attribution} --layer {layer} --lambda {lam} --epochs {fam.guide_epochs} "
               f"--lr {word(fam.lr)} --batch-size {fam.batch} --seed {seed} {extra} $(RUN_FLAGS) --out {d} --json")
        self._add(Job("guide", f"{d}/summary.json", [f"{base}/summary.json", data], " ".join(cmd.split()),
                      f"guide {config.name} {loss}/{layer} λ={lam} {extra} -> {d}", f"{d}/log.txt", "", run,
                      f"{d}/launch.json",
                      after=[f"mv {d}/log.txt.out {d}/summary.json",
                             f"$(if $(filter 1,$(PRUNE)),@rm -f {d}/checkpoints/last.pt)"]), experiment)
        return d

    # ----------------------------------------------------------------------------- results
    def _result_job(self, kind: str, out: str, deps: list[str], cmd: str, header: str, group: str,
                    label: str | None = None) -> str:
        """A job writing one result file OUT (log, launch record next to it), listed among GROUP's results;
        LABEL prefixes its streamed lines (default: OUT's name)."""
        stem = out.rsplit(".", 1)[0]
        name = stem.replace("$(RESULTS)/", "results/")
        job = self._add(Job(kind, out, deps, cmd, header, f"{stem}.log", label or stem.rsplit("/", 1)[1], name,
                            f"{stem}.launch.json", after=[f"rm -f {stem}.log.out"]), group)
        return self.result(group, job)

    def evaluate(self, out: str, args: str, deps: list[str], experiment: str, group: str | None = None) -> str:
        """`mgkit evaluate ARGS` on the test split (thresholds from val) into OUT, listed among GROUP's
        results (default: the experiment's)."""
        cmd = f"evaluate {args} --split test --threshold-split val --experiment {experiment} --out {out}"
        return self._result_job("evaluate", out, deps, cmd, f"evaluate -> {out}", group or experiment)

    def shift(self, out: str, run: str, data: str, baseline: str | None, group: str = "shift") -> str:
        cmd = (f"shift {run}/checkpoints/best_f1.pt --data {data}"
               + (f" --baseline {baseline}/checkpoints/best_f1.pt" if baseline else "")
               + f" --experiment shift --out {out}")
        return self._result_job("shift", out, [f"{run}/summary.json"], cmd, f"shift -> {out}", group)

    def explain(self, out: str, run: str, compare: str, data: str, experiment: str) -> str:
        cmd = (f"explain {run}/checkpoints/best_f1.pt --data {data} --split test --n {self.scale['explain']['n']} "
               f"--compare {compare}/checkpoints/best_f1.pt --out {out}")
        return self._result_job("explain", out, [f"{run}/summary.json", f"{compare}/summary.json"], cmd,
                                f"explain -> {out}", experiment, label="explain")

    def calibrate(self, config: Config, base: str, data: str, layers: list[str], losses: list[str]) -> str:
        """pipelines/calibrate_lambda.py on BASE's best-F1 checkpoint: CONFIG's λ* per loss and layer."""
        c = self.scale.raw["calibrate"]
        out = f"$(RESULTS)/calibration/{config.name}.json"
        cmd = (f"{base}/checkpoints/best_f1.pt --data {data} --attribution {config.attribution} "
               f"--layers {' '.join(layers)} --losses {' '.join(losses)} "
               f"--ratios {' '.join(word(r) for r in c.get('ratios', [0.1, 1.0, 10.0]))} "
               f"--batches {c.get('batches', 2)} --batch-size {c.get('batch_size', 32)} --device $(DEVICE) "
               f"--config {config.name} --out {out}")
        stem = out[:-5]
        self._add(Job("calibrate", out, [f"{base}/summary.json", data], cmd, f"calibrate λ of {config.name} -> {out}",
                      f"{stem}.log", f"calibrate {config.name}", stem.replace("$(RESULTS)/", "results/"),
                      f"{stem}.launch.json", after=[f"rm -f {stem}.log.out"],
                      program="$(BIN)/python pipelines/calibrate_lambda.py"), "calibrate")
        return out

    def lambda_file(self, parts: list[str]) -> str:
        """$(RESULTS)/lambda.yaml: the calibrated grids, each value with its source."""
        out = "$(RESULTS)/lambda.yaml"
        cmd = f"$(SCALE_YAML) {' '.join(parts)} --out {out}"
        self._add(Job("lambda", out, list(parts) + ["$(SCALE_YAML)"], cmd, f"λ grids -> {out}", f"{out[:-5]}.log",
                      "λ grids", "results/lambda", "", after=[f"rm -f {out[:-5]}.log.out"],
                      program="$(BIN)/python -m mgkit.pipeline.calibration"), "calibrate")
        return out

    def timings(self, out: str, after: list[str]) -> str | None:
        """Claim 9's per-step timings: benchmarks/bench_train.py --one guided/FAM/LAYER per the scale's
        `timings`, one JSON line each, into OUT. It runs once every job in AFTER (Make variables) is done,
        and the tables wait for it, so nothing shares the machine with it. None without `timings`."""
        t = self.scale.section("timings", ("families", "layers", "size", "batch", "steps", "threads"))
        if not t:
            return None
        unknown = [f for f in t["families"] if f not in self.scale.families]
        if unknown:
            raise UsageError(f"{self.scale.source}: timings names family {unknown[0]!r}, which is not under `family:`")
        # each family's own model at this scale (bcos-resnet18 in the demo, bcos-resnet50 in the paper's)
        runs = [(f"guided/{f}/{y}", self.scale.families[f].model) for f in t["families"] for y in t["layers"]]
        configs = " ".join(c for c, _ in runs)
        flags = (f"--size {t['size']} --batch {t['batch']} --steps {t['steps']} --warmup 1 --threads {t['threads']}"
                 f" --json $(if $(filter cuda,$(DEVICE)),--device cuda)")
        cmd = " && ".join(f"$(BIN)/python benchmarks/bench_train.py --one {c} --model {m} {flags} | tail -n 1"
                        for c, m in runs)
        stem = out.rsplit(".", 1)[0]
        # a shell list of its own, grouped so that the rule's redirection covers it whole
        self._add(Job("timings", out, [f"$({v})" for v in after], f"{cmd}; }}",
                      f"time one guided step per layer, alone ({configs}) -> {out}", f"{stem}.log", "timings",
                      "timings", "", after=[f"mv {stem}.log.out {out}"], program="{"), None)
        return out

    def tables(self, report: str, inputs_var: str, tables_dir: str, goal: str, timings: str | None = None) -> Job:
        """The tables, plots and claims report of a goal from the files in Make variable INPUTS_VAR (with
        the calibrated λ grids where there are any, and claim 9's TIMINGS file)."""
        stem = report[:-3]
        lambdas = [j.target for j in self.jobs.values() if j.kind == "lambda"]
        cmd = (f"tables $({inputs_var}) --out {tables_dir} --report {report}"
               + "".join(f" --lambdas {f}" for f in lambdas) + (f" --timings {timings}" if timings else ""))
        deps = [f"$({inputs_var})", *lambdas] + ([timings] if timings else [])
        return self._add(Job("tables", report, deps, cmd, f"tables -> {tables_dir}/, {report}",
                             f"{stem}.log", "tables", goal, "", after=[f"rm -f {stem}.log.out"]), None)

    # ------------------------------------------------------------------------------ helpers
    def runs_of(self, kind: str) -> list[str]:
        return [j.run_dir for j in self.jobs.values() if j.kind == kind]
