"""`mgkit tables` through the CLI: outputs, --json summary, one-line errors with exit codes."""

import json

from typer.testing import CliRunner

from mgkit.cli import app

from fabricate import main_records, other_records, record, write

runner = CliRunner()


def test_tables_cli_json(tmp_path):
    write(tmp_path / "r" / "main.json", main_records(ci=0.005))
    write(tmp_path / "r" / "other.json", other_records())
    out = tmp_path / "results" / "tables"
    res = runner.invoke(app, ["tables", str(tmp_path / "r"), "--out", str(out), "--json", "--quiet", "--no-plots"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["report"] == str(tmp_path / "results" / "paper-tables.md")
    assert {c["claim"]: c["status"] for c in s["claims"]}[1] == "supported"
    assert all((tmp_path / "results" / "tables" / f).exists() for f in ("main-synthetic.csv", "shift-waterbirds-test.tex"))
    assert str(out / "main-synthetic.md") in s["files"]
    report = (tmp_path / "results" / "paper-tables.md").read_text()
    assert "[csv](tables/main-synthetic.csv)" in report and "| 1 | Energy loss gives" in report
    assert "**inconclusive**" in report and "What this run can resolve" in report and "Margin:" in report
    html = (tmp_path / "results" / "paper-tables.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html and "Claim 1: supported" in html


def test_tables_cli_timings(tmp_path):
    write(tmp_path / "r" / "main.json", main_records(ci=0.005))
    bad = tmp_path / "t.jsonl"
    bad.write_text("not json\n")
    args = ["tables", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--no-plots", "--quiet", "--json"]
    res = runner.invoke(app, [*args, "--timings", str(bad)])
    assert res.exit_code == 2 and "--timings" in res.output and "line 1" in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "paper-tables.md").exists()
    good = tmp_path / "bench.jsonl"
    good.write_text(json.dumps({"config": "guided/bcos/input", "step_s": [2.0, 2.1]}) + "\n"
                    + json.dumps({"config": "guided/bcos/mid2", "step_s": [1.0, 1.1]}) + "\n")
    res = runner.invoke(app, [*args, "--timings", str(good)])
    assert res.exit_code == 0, res.output
    c9 = {c["claim"]: c for c in json.loads(res.stdout)["claims"]}[9]
    assert any("speed-up" in ch["detail"] for ch in c9["checks"])


def test_tables_cli_errors(tmp_path):
    res = runner.invoke(app, ["tables", str(tmp_path / "missing.json"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "no such file" in res.output
    write(tmp_path / "v.json", {**record(f1=0.5, epg=0.5), "schema_version": 7})
    res = runner.invoke(app, ["tables", str(tmp_path / "v.json"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 1 and "schema version 7" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "t").exists()


def test_tables_cli_lambdas(tmp_path):
    """--lambdas: the report cites each λ value with its source; a file that is not one is refused first."""
    write(tmp_path / "r" / "main.json", main_records(ci=0.005))
    args = ["tables", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--no-plots", "--quiet"]
    bad = tmp_path / "lambda.yaml"
    bad.write_text("- just a list\n")
    res = runner.invoke(app, [*args, "--lambdas", str(bad)])
    assert res.exit_code == 2 and res.output.startswith(f"error: --lambdas {bad}: not a λ calibration file")
    assert not (tmp_path / "o").exists()
    bad.write_text("grids:\n  bcos-bcos:\n    energy:\n      input:\n        lambda_star: 0.2\n        values:\n"
                   "        - {lambda: 0.02, source: calibrated}\n        - {lambda: 0.001, source: 'published: ref'}\n")
    res = runner.invoke(app, [*args, "--lambdas", str(bad)])
    assert res.exit_code == 0, res.output
    report = (tmp_path / "paper-tables.md").read_text()
    assert "## λ grids (calibration)" in report
    assert "| bcos-bcos | energy | input | 0.2 | 0.02 (calibrated), 0.001 (published: ref) |" in report
