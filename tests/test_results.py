"""Result schema v1: strict JSON, identity from a run config, one-line refusals of foreign files."""

import json
import math

import pytest

from mgkit.errors import FormatError
from mgkit.results import (IDENTITY_KEYS, SCHEMA, SCHEMA_VERSION, by_name, dumps, identity, read_records, record,
                           write_record)

CFG = {"stage": "guide", "data": "data/synth.h5", "out": "runs/g", "model": "resnet18", "loss": "energy",
       "layer": "input", "attribution": "ixg", "lam": 0.01, "dilate": 0.1, "seed": 3,
       "init_from": "runs/b/checkpoints/best_f1.pt"}


def _ident(**kw):
    return identity(kw.pop("config", CFG), family="vanilla", data_hash="0123456789abcdef", dataset="synthetic",
                    task="multilabel", classes=["circle", "square"], bbox_frac=0.5, **kw)


def test_identity_names_the_run_and_train_has_no_guidance():
    ident = _ident(checkpoint="runs/g/checkpoints/best_f1.pt", epoch=2, parent_sha256="ab")
    assert set(ident) == set(IDENTITY_KEYS) | {"targets"}
    assert (ident["loss"], ident["layer"], ident["attribution"], ident["lambda"]) == ("energy", "input", "ixg", 0.01)
    assert _ident(config={**CFG, "targets": "all"})["targets"] == "all"
    assert (ident["run"], ident["parent"], ident["seed"], ident["bbox_frac"]) == ("runs/g", CFG["init_from"], 3, 0.5)
    train = _ident(config={**CFG, "stage": "train"})
    assert (train["loss"], train["layer"], train["attribution"], train["lambda"], train["parent"], train["targets"]) == \
        (None, None, None, 0.0, None, None)


def test_records_are_strict_json_and_round_trip(tmp_path):
    rec = record("evaluation", _ident(), metrics={"f1": float("nan"), "epg": float("inf"), "iou": 0.25},
                 per_class=by_name([0.5, float("nan")], ["circle", "square"]))
    assert rec["schema"] == SCHEMA and rec["schema_version"] == SCHEMA_VERSION
    assert rec["metrics"] == {"f1": None, "epg": None, "iou": 0.25}
    assert rec["per_class"] == {"circle": 0.5, "square": None}
    text = dumps(rec)
    assert "NaN" not in text and "Infinity" not in text
    write_record(tmp_path / "r.json", rec)
    lines = tmp_path / "m.jsonl"
    lines.write_text(dumps(record("epoch", _ident(), metrics={"f1": 1.0})) + "\n\n" + dumps(rec) + "\n")
    got = read_records([tmp_path / "r.json", lines])
    assert [r["kind"] for r in got] == ["evaluation", "epoch", "evaluation"]
    assert got[0]["metrics"] == rec["metrics"]


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ('{"f1": NaN}', "not valid JSON"),
    ('{"f1": 1}', "not an mgkit result"),
    ("[1, 2]", "not a JSON object"),
])
def test_foreign_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=message) as e:
        read_records([path])
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_wrong_version_kind_and_missing_identity_are_refused(tmp_path):
    rec = record("run", _ident())
    for change, message in (({"schema_version": 2}, "version 2"), ({"kind": "nope"}, "unknown kind"),
                            ({"identity": {"model": "resnet18"}}, "identity lacks")):
        path = tmp_path / "x.jsonl"
        path.write_text(json.dumps({**rec, **change}) + "\n")
        with pytest.raises(FormatError, match=f"x.jsonl:1: .*{message}"):
            read_records([path])
    with pytest.raises(FormatError, match="no such result file"):
        read_records([tmp_path / "missing.json"])
    with pytest.raises(ValueError):
        by_name([1.0], ["a", "b"])
    assert math.isfinite(rec["identity"]["lambda"])


def test_a_jsonl_record_is_written_as_json_lines(tmp_path):
    """`--out r.jsonl` gives one line that `mgkit tables` (records_in) reads back, not indented JSON."""
    rec = record("evaluation", _ident(), metrics={"f1": 0.5, "epg": 0.25, "iou": 0.1})
    write_record(tmp_path / "r.jsonl", rec)
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == rec
    assert read_records([tmp_path / "r.jsonl"]) == [rec]
