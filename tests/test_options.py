"""Every command's options come from one declaration (mgkit.options, RunConfig for train/guide): the CLI
refuses each value outside a declared range or choice list in one `error:` line with exit 2, before any
work; `--help` lists every declared option and names no flag the command lacks."""

from __future__ import annotations

import math
import re

import pytest
from typer.testing import CliRunner

from mgkit import options
from mgkit.cli import app
from mgkit.options import Opt, coerce, options_of, parse
from mgkit.errors import UsageError

runner = CliRunner()
COMMANDS = [*options.COMMANDS, "train", "guide"]
MISSING = "never-read"  # no required path exists: a refusal naming it would mean work had started


def _required_argv(command: str, skip: str) -> list[str]:
    """Values for every required option but `skip`: enough for the parse to reach every option."""
    argv: list[str] = []
    for name, o in options_of(command).items():
        if name == skip or not o.required:
            continue
        value = o.choices[0] if o.kind == "choice" else f"{MISSING}.{name}"
        argv += [value] if o.argument else [o.flag, value]
    return argv


def _outside(o: Opt) -> list[str]:
    """Values just outside what `o` declares (empty for options without bounds or choices)."""
    if o.kind == "choice":
        return ["nosuch"]
    if o.kind not in ("int", "float"):
        return []
    bad = []
    if o.lo is not None:
        bad.append(o.lo if o.lo_open else o.lo - (1 if o.kind == "int" else 0.5))
    if o.hi is not None:
        bad.append(o.hi + 1)
    if o.kind == "float":
        bad.append(math.nan)
    return [str(int(v)) if o.kind == "int" else str(v) for v in bad]


CASES = [(command, name, value) for command in COMMANDS for name, o in options_of(command).items()
         if not o.argument for value in _outside(o)]


def test_the_cases_cover_every_command_and_the_issues_examples():
    assert {c for c, _, _ in CASES} == set(COMMANDS) - {"inspect", "export", "tables", "weights list",
                                                        "weights download"}  # no bounded option there
    assert ("evaluate", "iou_threshold", "2") in CASES and ("explain", "ig_steps", "0") in CASES


@pytest.mark.parametrize("command,name,value", CASES, ids=[f"{c}:{n}={v}" for c, n, v in CASES])
def test_the_cli_refuses_a_value_outside_the_declaration(command, name, value, tmp_path):
    o = options_of(command)[name]
    argv = [*command.split(), *_required_argv(command, name), o.flag, value]
    r = runner.invoke(app, argv)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {o.flag} must be {o.allowed()}, got '{value}'"), lines
    assert MISSING not in r.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_every_declared_option_and_no_foreign_flag(command):
    r = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    declared = options_of(command).values()
    flags = {"--help"} | {o.flag for o in declared if not o.argument}
    flags |= {o.off_flag or f"--no-{o.key}" for o in declared if o.kind == "bool"}
    for o in declared:
        assert (o.flag if not o.argument else o.flag) in r.stdout, o.flag
    # flags of another program named just before them ("mgkit train --weights", "bench_train.py --one")
    text = re.sub(r"(mgkit [a-z-]+|\S+\.py) --[a-z][a-z0-9-]*", "", " ".join(r.stdout.split()))
    foreign = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?!\w)", text)) - flags
    assert not foreign, foreign


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "x.pt", "--data", "d.h5", "--no-such-flag"], "No such option: --no-such-flag"),
    (["evaluate", "x.pt", "--data"], "requires an argument"),
    (["tables"], "Missing argument 'RESULTS'"),
    (["prepare", "voc", "--roots", "r"], "No such option: --roots"),
])
def test_parser_errors_are_one_line(argv, message):
    r = runner.invoke(app, argv)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.output


def test_shared_options_are_declared_once():
    """--iou-threshold, --ig-steps, --seed ... carry the same bounds wherever they appear."""
    for flag, shared in [("--iou-threshold", options.IOU_THRESHOLD), ("--ig-steps", options.IG_STEPS),
                         ("--seed", options.SEED), ("--size", options.SIZE), ("--eval-batch-size",
                                                                               options.EVAL_BATCH_SIZE)]:
        for command in COMMANDS:
            for o in options_of(command).values():
                if o.flag == flag:
                    assert (o.kind, o.lo, o.lo_open, o.hi, o.choices) == \
                        (shared.kind, shared.lo, shared.lo_open, shared.hi, shared.choices), (command, flag)


def test_parse_defaults_types_and_required():
    declared = options.EVALUATE
    values = parse(declared, {"data": "d.h5", "iou_threshold": "0.25", "pareto": ["a", "b"]})
    assert values["iou_threshold"] == 0.25 and values["eval_batch_size"] == 64 and values["layer"] is None
    assert [str(p) for p in values["pareto"]] == ["a", "b"] and values["checkpoints"] == []
    assert values["attribution"] is None
    assert parse(declared, {"data": "d.h5", "attribution": "captum:Saliency"})["attribution"] == "captum:Saliency"
    with pytest.raises(UsageError, match="--data is required"):
        parse(declared, {})
    with pytest.raises(UsageError, match="--attribution must be one of ixg, bcos, gradcam, intgrad or captum:NAME"):
        coerce(declared["attribution"], "captum:")
