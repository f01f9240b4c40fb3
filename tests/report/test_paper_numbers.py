"""The paper's numbers beside ours: the table's values against hand computation on fabricated VOC and
Waterbirds records, nothing for synthetic data, and the citations the claims report can use."""

import csv

import pytest

from mgkit.report.analysis import Analysis
from mgkit.report.build import build
from mgkit.report.paper_numbers import NUMBERS, cite, describe, paper_tables, rows_for
from mgkit.report.records import load, to_points

from fabricate import main_records, pareto, record, shift, write

B, X = "bcos-resnet18", "xdnn-resnet18"
WB = ["landbird", "waterbird"]


def voc_records():
    v = dict(dataset="voc")
    return [record(B, None, f1=0.80, epg=0.40, iou=0.10, **v),
            pareto([record(B, "energy", f1=0.794, epg=0.70, iou=0.12, seconds_per_epoch=8.0, **v),
                    record(B, "energy", f1=0.77, epg=0.75, iou=0.13, seconds_per_epoch=9.0, **v)]),
            pareto([record(B, "l1", f1=0.79, epg=0.50, iou=0.20, seconds_per_epoch=100.0, **v)]),  # not Energy
            record(B, "energy", "mid2", eval_layer="input", f1=0.78, epg=0.6, iou=0.1, seconds_per_epoch=5.0,
                   experiment="depth", **v),
            record(X, None, f1=0.68, epg=0.50, iou=0.10, **v),
            pareto([record(X, "energy", f1=0.70, epg=0.60, iou=0.10, **v),    # +10.0 EPG at +2.0 F1
                    record(X, "l1", f1=0.69, epg=0.52, iou=0.10, **v),        # +2.0 EPG at +1.0 F1
                    record(X, "energy", f1=0.66, epg=0.90, iou=0.10, **v)])]  # F1 drops: not a gain in both


def wb_records():
    recs = [shift(None, 0.40, 0.70, 0, WB), shift(None, 0.46, 0.68, 1, WB), shift("energy", 0.60, 0.72, 0, WB)]
    for r in recs:
        r["identity"]["dataset"] = "waterbirds"
    return recs


@pytest.fixture
def analysis(tmp_path):
    write(tmp_path / "voc.json", voc_records())
    write(tmp_path / "wb.json", wb_records())
    points, _ = to_points(load([tmp_path]))
    return Analysis(points)


def test_values_against_hand_computation(analysis):
    rows = {r["key"]: r for r in rows_for(analysis, "voc")}
    best = rows["r4.bcos.input.energy.best_epg"]
    assert (best["ours"], best["ours_at"], best["n"]) == (0.75, 0.77, 2)
    assert best["diff"] == pytest.approx(0.75 - 0.717)
    assert (best["paper_text"], best["ours_text"], best["diff_text"]) == ("71.7 (F1 79.4)", "75.0 (F1 77.0)", "+3.3")
    gain = rows["r6.xdnn.input.epg_gain"]
    assert gain["ours"] == pytest.approx(0.10) and gain["ours_at"] == pytest.approx(0.02) and gain["n"] == 2
    assert gain["ours_text"] == "+10.0 (ΔF1 +2.0)" and gain["diff_text"] == "+2.8"
    xbest = rows["r4.xdnn.input.best_epg"]  # any loss: the F1-dropping energy model has the best EPG
    assert (xbest["ours"], xbest["ours_at"]) == (0.90, 0.66)
    speed = rows["r9.bcos.mid2.speedup"]  # mean(8, 9) s at the input / 5 s at mid2
    assert speed["ours"] == pytest.approx(1.7) and speed["ours_text"] == "1.70×" and speed["diff_text"] == "+0.00×"
    for missing in ("r4.vanilla.input.best_epg", "r6.xdnn.final.iou_gain"):
        assert rows[missing]["ours"] is None and rows[missing]["ours_text"] is None and rows[missing]["n"] == 0

    wb = {r["key"]: r for r in rows_for(analysis, "waterbirds")}
    base = wb["table1.conventional.baseline.worst_group"]
    assert base["ours"] == pytest.approx(0.43) and base["ours_spread"] == pytest.approx(0.0424264, abs=1e-6)
    assert base["paper_text"] == "43.4 (±2.4)" and base["ours_text"] == "43.0 (±4.2)" and base["diff_text"] == "-0.4"
    energy = wb["table1.conventional.energy.overall"]
    assert (energy["ours"], energy["ours_spread"], energy["n"]) == (0.72, None, 1)
    assert wb["table1.reversed.l1.overall"]["ours"] is None


def test_tables_only_for_real_data(tmp_path, analysis):
    assert [t.name for t in paper_tables(analysis)] == ["paper-voc", "paper-waterbirds"]
    write(tmp_path / "synth" / "s.json", main_records())
    points, _ = to_points(load([tmp_path / "synth"]))
    assert paper_tables(Analysis(points)) == []
    write(tmp_path / "coco" / "c.json", [record(B, None, f1=0.7, epg=0.3, iou=0.1, dataset="coco")])
    points, _ = to_points(load([tmp_path / "coco"]))
    (coco,) = paper_tables(Analysis(points))
    assert coco.name == "paper-coco" and coco.rows == [] and "states no COCO numbers" in coco.notes[-1]


def test_tables_command_writes_the_comparison(tmp_path):
    write(tmp_path / "res" / "voc.json", voc_records())
    summary = build([tmp_path / "res"], tmp_path / "out" / "tables", quiet=True, plots=False)
    best = next(r for r in summary["paper"] if r["key"] == "r4.bcos.input.energy.best_epg")
    assert (best["paper"], best["ours"], best["n"]) == (0.717, 0.75, 2)
    with open(tmp_path / "out" / "tables" / "paper-voc.csv") as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    assert rows["r4.bcos.input.energy.best_epg"]["paper"] == "0.717"
    assert rows["r4.bcos.input.energy.best_epg"]["ours"] == "0.75"
    report = (tmp_path / "out" / "paper-tables.md").read_text()
    assert "The paper's numbers beside ours — voc" in report and "| best EPG, B-cos, input, Energy | 71.7 (F1 79.4) |" in report


def test_every_number_is_sourced_and_claims_can_cite_them():
    assert all(n.source.startswith("[P §") and "paper spec §7" in n.source for n in NUMBERS)
    assert len({n.key for n in NUMBERS}) == len(NUMBERS)
    assert len(cite(10)) == 12 and {n.family for n in cite(4)} == {"bcos", "vanilla", "xdnn"}
    assert cite(1) == []
    text = describe(cite(6))
    assert "+23.0 (ΔF1 -0.3) [P §5.4]" in text and "+1.4 (ΔF1 -2.5)" in text


def test_tables_command_prints_the_comparison(tmp_path):
    from typer.testing import CliRunner

    from mgkit.cli import app

    write(tmp_path / "res" / "voc.json", voc_records())
    r = CliRunner().invoke(app, ["tables", str(tmp_path / "res"), "--out", str(tmp_path / "out"), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "best EPG, B-cos, input, Energy: paper 71.7 (F1 79.4), ours 75.0 (F1 77.0) (+3.3)" in r.output
    assert "best EPG, Vanilla (IxG), input: paper 55.8 (F1 69.0), ours not measured" in r.output
