"""`mgkit tables` through the CLI: outputs, --json summary, one-line errors with exit codes."""

import json

from typer.testing import CliRunner

from mgkit.cli import app

from fabricate import main_records, other_records, record, write

runner = CliRunner()


def test_tables_cli_json(tmp_path):
    write(tmp_path / "r" / "main.json", main_records())
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
    assert "[csv](tables/main-synthetic.csv)" in report and "| 1 | Energy gives" in report


def test_tables_cli_errors(tmp_path):
    res = runner.invoke(app, ["tables", str(tmp_path / "missing.json"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0 and "no such file" in res.output
    write(tmp_path / "v.json", {**record(f1=0.5, epg=0.5), "schema_version": 7})
    res = runner.invoke(app, ["tables", str(tmp_path / "v.json"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 1 and "schema version 7" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "t").exists()
