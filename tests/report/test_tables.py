"""Tables from small fabricated record sets, checked against hand computation."""

import csv
import json

import pytest

from mgkit.errors import FormatError, UsageError
from mgkit.report.build import build
from mgkit.report.records import load, to_points

from fabricate import main_records, other_records, record, write


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def row(rows, **match):
    hits = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0]


@pytest.fixture(scope="module")
def main_out(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("main")
    recs = main_records() + [record("bcos-resnet18", "rrr", f1=0.60, epg=0.90, iou=0.5)]
    write(tmp_path / "res" / "main.json", recs)
    build([tmp_path / "res"], tmp_path / "results" / "tables", quiet=True, plots=False)
    return tmp_path / "results"


def test_main_table_numbers(main_out):
    rows = read_csv(main_out / "tables" / "main-synthetic.csv")
    base = row(rows, model="bcos-resnet18", loss="baseline")
    assert (base["base_f1"], base["base_epg"], base["base_iou"], base["n"]) == ("80.0", "40.0", "10.0", "1")
    # Energy candidates (F1, EPG, IoU): (79.5, 70, 12), (77, 75, 13), (70, 80, 14); baseline F1 80.
    e = row(rows, model="bcos-resnet18", loss="energy")
    assert e["n"] == "3"
    assert (e["epg_at_1"], e["f1_epg_at_1"]) == ("70.0", "79.5")  # only F1 >= 79 qualifies
    assert (e["epg_at_5"], e["f1_epg_at_5"]) == ("75.0", "77.0")  # F1 >= 75
    assert (e["iou_at_1"], e["iou_at_5"]) == ("12.0", "13.0")
    # L1 at F1 exactly 79.0 sits on the 1-point boundary and counts.
    l1 = row(rows, model="bcos-resnet18", loss="l1")
    assert (l1["epg_at_1"], l1["f1_epg_at_1"], l1["iou_at_5"]) == ("55.0", "79.0", "30.0")
    # RRR's only candidate is 20 points below the baseline: nothing qualifies.
    rrr = row(rows, model="bcos-resnet18", loss="rrr")
    assert rrr["epg_at_1"] == rrr["epg_at_5"] == rrr["f1_epg_at_5"] == ""
    md = (main_out / "tables" / "main-synthetic.md").read_text()
    assert "| bcos-resnet18 | bcos | input | rrr | 1 | — | — | — | — | — | — | — |" in md
    assert "75.0 (77.0)" in md
    tex = (main_out / "tables" / "main-synthetic.tex").read_text()
    assert r"\begin{tabular}" in tex and "75.0 (77.0)" in tex and r"\toprule" in tex
    assert r"@ $\leq$5pt" in tex and "≤" not in tex and "—" not in tex
    # Baseline matched at the same evaluation layer: vanilla final.
    v = row(rows, model="resnet18", loss="energy")
    assert (v["epg_at_1"], v["f1_epg_at_1"], v["iou_at_5"]) == ("45.0", "71.0", "22.0")


def test_missing_experiments_are_reported_not_measured(main_out):
    report = (main_out / "paper-tables.md").read_text()
    assert "### 2. Limited annotations (§7.2)\n\nNot measured" in report
    assert "### 5. Distribution shift (§7.6, Table 1)\n\nNot measured" in report
    assert not (main_out / "tables" / "shift-waterbirds-test.csv").exists()


def test_other_experiments(tmp_path):
    a = write(tmp_path / "a.json", main_records())
    b = write(tmp_path / "b.json", other_records())
    summary = build([a, b], tmp_path / "out" / "tables", quiet=True, plots=False)
    t = tmp_path / "out" / "tables"
    ann = read_csv(t / "annotations-synthetic.csv")
    assert [(r["loss"], r["condition"], r["epg_at_1"]) for r in ann] == [
        ("baseline", "", ""), ("energy", "1", "60.0"), ("energy", "10", "69.0"), ("energy", "100", "70.0")]
    dil = read_csv(t / "dilation-synthetic.csv")
    assert row(dil, loss="l1", condition="50")["epg_at_5"] == "45.0"
    depth = read_csv(t / "depth-synthetic.csv")
    mid2 = row(depth, loss="energy", condition="mid2")
    assert mid2["epg_at_5"] == "65.0" and float(mid2["seconds_per_epoch"]) == 5.0
    assert float(mid2["speedup"]) == pytest.approx(9.0 / 5.0)
    seg = read_csv(t / "segmentation-synthetic.csv")
    assert row(seg, loss="energy")["on_object_at_5"] == "80.0"
    assert row(seg, loss="baseline")["base_on_object"] == "50.0"
    # Table 1: worst group over seeds 0.40, 0.44 -> 42.0 ± 2.8 (sample std); Energy 0.55, 0.57 -> 56.0 ± 1.4.
    sh = read_csv(t / "shift-waterbirds-test.csv")
    b, e = row(sh, loss="baseline"), row(sh, loss="energy")
    assert (b["conventional_worst_mean"], b["conventional_worst_std"], b["conventional_n"]) == ("42.0", "2.8", "2")
    assert (e["reversed_worst_mean"], e["reversed_worst_std"], e["reversed_overall_mean"]) == ("56.0", "1.4", "71.0")
    md = (t / "shift-waterbirds-test.md").read_text()
    assert "Conv. worst" in md and "Rev. overall" in md and "56.0 (±1.4)" in md
    # the Waterbirds shift records are real data: the paper's Table 1 is printed beside them
    assert sorted(summary["experiments"]) == ["annotations", "depth", "dilation", "main", "paper", "segmentation",
                                              "shift", "targets"]
    assert summary["experiments"]["targets"] == []  # no --targets all records: not measured


def test_mixed_data_sets_refused(tmp_path):
    recs = main_records() + [record("bcos-resnet18", "l1", f1=0.7, epg=0.5, iou=0.1, classes=["a", "b", "c"])]
    path = write(tmp_path / "r.json", recs)
    with pytest.raises(FormatError, match="different data sets"):
        build([path], tmp_path / "t", quiet=True)
    recs = main_records() + [record("bcos-resnet18", "l1", f1=0.7, epg=0.5, iou=0.1, data_hash="f" * 16)]
    path = write(tmp_path / "r.json", recs)
    with pytest.raises(FormatError, match="data_hash"):
        build([path], tmp_path / "t", quiet=True)
    assert not (tmp_path / "t").exists()


def test_bad_inputs(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load([tmp_path / "nope.json"])
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load([tmp_path / "x.json"])
    (tmp_path / "y.json").write_text(json.dumps({"a": 1}))
    with pytest.raises(FormatError, match="not an mgkit result"):
        load([tmp_path / "y.json"])
    (tmp_path / "z.json").write_text(json.dumps({**record(f1=0.5, epg=0.5), "schema_version": 2}))
    with pytest.raises(FormatError, match="schema version 2"):
        load([tmp_path / "z.json"])
    bad = record(f1=0.5, epg=0.5)
    del bad["identity"]["model"]
    (tmp_path / "w.json").write_text(json.dumps(bad))
    with pytest.raises(FormatError, match="identity lacks model"):
        load([tmp_path / "w.json"])


def test_directory_skips_foreign_json_and_run_records(tmp_path):
    write(tmp_path / "d" / "config.json", {"lr": 1})
    epochs = [{**record(f1=0.5, epg=0.5, split="val"), "kind": "epoch", "epoch": 1},
              {k: v for k, v in record(f1=0.5, epg=0.5).items() if k != "evaluation"} | {"kind": "epoch"}]
    write(tmp_path / "d" / "metrics.jsonl", epochs)
    write(tmp_path / "d" / "summary.json", {**record(f1=0.5, epg=0.5), "kind": "run"})
    write(tmp_path / "d" / "e.json", record(f1=0.5, epg=0.5))
    points, skipped = to_points(load([tmp_path / "d"]))
    assert sorted(p.split for p in points) == ["test", "val"] and skipped == {"epoch": 1, "run": 1}


def test_validation_epochs_with_split_val(tmp_path):
    """metrics.jsonl lines make tables on --split val; the baseline is its run's best-F1 epoch."""
    def epoch(loss, n, f1, epg, iou):
        return {**record(loss=loss, f1=f1, epg=epg, iou=iou, split="val"), "kind": "epoch", "epoch": n}

    recs = [epoch(None, 1, 0.70, 0.30, 0.10), epoch(None, 2, 0.80, 0.35, 0.12), epoch(None, 3, 0.78, 0.50, 0.2),
            epoch("energy", 0, 0.80, 0.35, 0.12),  # the parent before guidance: not a candidate
            epoch("energy", 1, 0.79, 0.60, 0.15), epoch("energy", 2, 0.76, 0.70, 0.16)]
    path = write(tmp_path / "runs" / "metrics.jsonl", recs)
    build([path], tmp_path / "t", quiet=True, plots=False, split="val")
    rows = read_csv(tmp_path / "t" / "main-synthetic.csv")
    assert (row(rows, loss="baseline")["base_f1"], row(rows, loss="baseline")["base_epg"]) == ("80.0", "35.0")
    e = row(rows, loss="energy")
    assert (e["n"], e["epg_at_1"], e["epg_at_5"], e["f1_epg_at_5"]) == ("2", "60.0", "70.0", "76.0")


def test_experiment_field(tmp_path):
    write(tmp_path / "e.json", {**record(f1=0.5, epg=0.5, loss="energy"), "experiment": "ablation"})
    with pytest.raises(FormatError, match="experiment 'ablation'"):
        to_points(load([tmp_path / "e.json"]))
    write(tmp_path / "e.json", record(f1=0.5, epg=0.5, loss="energy", experiment="dilation"))
    (p,), _ = to_points(load([tmp_path / "e.json"]))
    assert p.experiment == "dilation"
    # Untagged: inferred from what differs from the main comparison.
    path = write(tmp_path / "e.json", [record(f1=0.5, epg=0.5, loss="energy", bbox_frac=0.1),
                                record(f1=0.5, epg=0.5, loss="energy", layer="mid2", eval_layer="input"),
                                record(f1=0.5, epg=0.5, loss="energy"), record(f1=0.5, epg=0.5)])
    points, _ = to_points(load([path]))
    assert [p.experiment for p in points] == ["annotations", "depth", "main", None]


def test_intervals_in_tables_and_seeds_combined(tmp_path):
    """One baseline per seed: mean ±std and the combined interval; a candidate's own bootstrap interval."""
    b = "bcos-resnet18"
    recs = [record(b, None, f1=0.80, epg=0.40, ci=0.02, seed=0), record(b, None, f1=0.80, epg=0.44, ci=0.02, seed=1),
            record(b, "energy", f1=0.79, epg=0.70, ci=0.03)]
    recs[1]["identity"]["run"] = "runs/seed1"
    write(tmp_path / "res" / "main.json", recs)
    build([tmp_path / "res"], tmp_path / "out" / "tables", quiet=True, plots=False)
    rows = read_csv(tmp_path / "out" / "tables" / "main-synthetic.csv")
    base = row(rows, loss="baseline")
    sd = 0.04 / 2 ** 0.5  # std of 0.40 and 0.44
    h = 1.959964 * ((0.02 / 1.959964) ** 2 + sd ** 2 / 2) ** 0.5
    assert base["base_epg"] == "42.0" and base["base_epg_std"] == f"{100 * sd:.1f}"
    assert (base["base_epg_lo"], base["base_epg_hi"]) == (f"{100 * (0.42 - h):.1f}", f"{100 * (0.42 + h):.1f}")
    e = row(rows, loss="energy")
    assert (e["epg_at_1_lo"], e["epg_at_1_hi"]) == ("67.0", "73.0")
    md = (tmp_path / "out" / "tables" / "main-synthetic.md").read_text()
    assert "70.0 [67.0, 73.0] (79.0)" in md and f"42.0 ±{100 * sd:.1f} [" in md


def test_report_shows_each_claims_deciding_plot_inline(tmp_path):
    from mgkit.report.analysis import Analysis
    from mgkit.report.build import report_markdown
    from mgkit.report.claims import all_claims
    from mgkit.report.records import Source
    from mgkit.report.tables import all_tables

    points, _ = to_points(Source("m.json", r) for r in main_records(ci=0.005) + other_records())
    an = Analysis(points)
    claims, judge = all_claims(an)
    out = tmp_path / "tables"
    plots = [out / f"{stem}.png" for stem in ("pareto-epg-synthetic", "pareto-iou-synthetic", "dilation-epg-synthetic",
                                              "annotations-epg-synthetic")]
    text = report_markdown(all_tables(an), plots, claims, tmp_path / "paper-tables.md", an, 3, {}, judge)
    sections = {s.split(":")[0]: s for s in text.split("### Claim ")[1:]}
    assert "![pareto-epg-synthetic.png](tables/pareto-epg-synthetic.png)" in sections["1"]
    assert "pareto-iou" not in sections["1"] and "![pareto-iou-synthetic.png]" in sections["2"]
    assert "![dilation-epg-synthetic.png]" in sections["7"] and "![annotations-epg-synthetic.png]" in sections["6"]
    assert "| EPG | 0.5 points |" in text  # resolution: median half-width of one record's EPG interval


def test_report_says_which_split_selected_the_pareto_sets(tmp_path):
    from fabricate import pareto

    recs = [record("bcos-resnet18", None, f1=0.80, epg=0.40, iou=0.10),
            pareto([record("bcos-resnet18", "energy", f1=0.79, epg=0.70, iou=0.12)])]
    recs[1]["selection"] = {"split": "val", "metrics": ["f1", "epg", "iou"], "bin_width": 0.005, "pool": 4,
                            "selected": 1}
    write(tmp_path / "res" / "val.json", recs)
    points, _ = to_points(load([tmp_path / "res"]))
    assert [p.selected_on for p in points] == [None, "val"]
    build([tmp_path / "res"], tmp_path / "out" / "tables", quiet=True, plots=False)
    text = (tmp_path / "out" / "paper-tables.md").read_text()
    assert "Pareto sets selected on split `val`" in text and "not the paper's protocol" not in text

    del recs[1]["selection"]  # an older record: its front was taken on the split it reports
    write(tmp_path / "res" / "val.json", recs)
    build([tmp_path / "res"], tmp_path / "out" / "tables", quiet=True, plots=False)
    assert "Sets selected on `test` itself" in (tmp_path / "out" / "paper-tables.md").read_text()


def test_candidates_over_seeds_average_each_seeds_best(tmp_path):
    b = "bcos-resnet18"
    recs = [record(b, None, f1=0.80, epg=0.40),
            record(b, "energy", f1=0.79, epg=0.70, seed=0), record(b, "energy", f1=0.79, epg=0.60, seed=0),
            record(b, "energy", f1=0.795, epg=0.64, seed=1), record(b, "energy", f1=0.60, epg=0.95, seed=1)]
    write(tmp_path / "res" / "main.json", recs)
    build([tmp_path / "res"], tmp_path / "out" / "tables", quiet=True, plots=False)
    e = row(read_csv(tmp_path / "out" / "tables" / "main-synthetic.csv"), loss="energy")
    # seed 0's best at <= 5 points: 70 (F1 79); seed 1's: 64 (F1 79.5; its 95 lies 20 F1 points below)
    assert (e["epg_at_5"], e["f1_epg_at_5"], e["epg_at_5_std"]) == ("67.0", "79.2", f"{100 * 0.06 / 2 ** 0.5:.1f}")
    h = 12.706 * 0.06 / 2 ** 0.5 / 2 ** 0.5  # t interval of two seeds' spread (records without intervals)
    assert (e["epg_at_5_lo"], e["epg_at_5_hi"]) == (f"{100 * (0.67 - h):.1f}", f"{100 * (0.67 + h):.1f}")


def test_targets_table_names_its_conditions(tmp_path):
    """Claim 11's experiment: the --targets all runs beside the main runs of one sampled class, one row each."""
    recs = [record("bcos-resnet18", None, f1=0.8, epg=0.40, ci=0.01),
            record("bcos-resnet18", "energy", f1=0.79, epg=0.60, ci=0.01, targets="random"),
            record("bcos-resnet18", "energy", f1=0.78, epg=0.65, ci=0.01, targets="all", experiment="targets")]
    build([write(tmp_path / "r.json", recs)], tmp_path / "out" / "tables", quiet=True, plots=False)
    rows = read_csv(tmp_path / "out" / "tables" / "targets-synthetic.csv")
    assert [(r["loss"], r["condition"]) for r in rows] == [("baseline", ""), ("energy", "all"), ("energy", "random")]
    assert row(rows, condition="all")["epg_at_5"] == "65.0" and row(rows, condition="random")["epg_at_5"] == "60.0"
