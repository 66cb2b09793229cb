"""``python -m benchmarks.run --only ...`` merges its rows into the existing results: the other rows
keep their measurements and their run's command, date and machine; ``--fresh`` writes its rows alone.
The row modules are replaced by stand-ins (no measurement runs); what is checked is the files."""

from __future__ import annotations

import json

import pytest

from benchmarks import run as bench_run
from benchmarks.common import Measurement


@pytest.fixture
def fake_modules(monkeypatch):
    """Every module "measures" its rows as value = 1.0 + run number / 10, note naming the run."""
    calls = {"n": 0}

    def run_module(module, limit_s, workdir, python):
        keys = [s.key for s in bench_run.module_specs(module)]
        return {k: Measurement(k, value=1.0 + calls["n"] / 10, note=f"run {calls['n']}") for k in keys}, None

    def main(argv):
        calls["n"] += 1
        return bench_run.main(argv)

    monkeypatch.delenv("MAKELEVEL", raising=False)  # under make the command would read "make bench"
    monkeypatch.setattr(bench_run, "run_module", run_module)
    monkeypatch.setattr(bench_run, "run_child", lambda cmd, limit_s: None)  # the shared models' build
    monkeypatch.setattr(bench_run, "machine_info", lambda: {"CPU": f"cpu of run {calls['n']}"})
    return main


def rows_of(path):
    return {row["key"]: row for row in json.loads(path.read_text())["rows"]}


def test_only_replaces_its_rows_and_keeps_the_others(fake_modules, tmp_path):
    out = tmp_path / "RESULTS.md"
    common = ["--out", str(out), "--workdir", str(tmp_path / "w")]
    assert fake_modules(["--only", "search_fanout", "weight_sync", *common]) == 0
    assert fake_modules(["--only", "weight_sync", "plan_memory", *common]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    rows = rows_of(out.with_suffix(".json"))
    assert set(rows) == {"1a", "1b", "7a", "7b", "7c", "7d", "9"}
    # 1a/1b from the first run, 7a-7c re-measured by the second, 9 new in the second
    assert [rows[k]["value"] for k in ("1a", "7a", "9")] == [1.1, 1.2, 1.2]
    assert [record["runs"][rows[k]["run"]]["machine"]["CPU"] for k in ("1b", "7d", "9")] == \
        ["cpu of run 1", "cpu of run 2", "cpu of run 2"]
    text = out.read_text()
    assert "Run 1, rows 1a, 1b: `python -m benchmarks.run --only search_fanout weight_sync" in text
    assert "Run 2, rows 7a, 7b, 7c, 7d, 9: `python -m benchmarks.run --only weight_sync plan_memory" in text
    assert "- CPU: cpu of run 1" in text and "- CPU: cpu of run 2" in text
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| metric")]
    assert [line.split(".")[0] for line in table[1:]] == ["| 1a", "| 1b", "| 7a", "| 7b", "| 7c", "| 7d", "| 9"]
    assert "- **1a**: run 1" in text and "- **7a**: run 2" in text

    # a third run re-measures every row of run 1: run 1 leaves the record, the header is one run's again
    assert fake_modules(["--only", "search_fanout", *common]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert len(record["runs"]) == 2 and {r["run"] for r in record["rows"]} == {0, 1}
    assert rows_of(out.with_suffix(".json"))["1a"]["value"] == 1.3


def test_fresh_and_full_runs_write_their_rows_alone(fake_modules, tmp_path):
    out = tmp_path / "RESULTS.md"
    common = ["--out", str(out), "--workdir", str(tmp_path / "w")]
    assert fake_modules(["--only", "search_fanout", "weight_sync", *common]) == 0
    assert fake_modules(["--only", "plan_memory", "--fresh", *common]) == 0
    assert set(rows_of(out.with_suffix(".json"))) == {"9"}
    text = out.read_text()
    assert text.startswith("# Benchmark results\n\nProduced by `python -m benchmarks.run --only plan_memory --fresh")
    assert "Run 1" not in text
    assert fake_modules(common) == 0  # every module, no --only: a whole new record
    record = json.loads(out.with_suffix(".json").read_text())
    assert len(record["runs"]) == 1 and {r["value"] for r in record["rows"]} == {1.3}
    assert set(rows_of(out.with_suffix(".json"))) == {s.key for m, _ in bench_run.MODULES
                                                      for s in bench_run.module_specs(m)}


def test_a_damaged_record_is_an_error_naming_it(tmp_path):
    from benchmarks.common import read_results_record

    bad = tmp_path / "RESULTS.json"
    bad.write_text(json.dumps({"runs": [], "rows": [{"key": "1a", "run": 0}]}))
    with pytest.raises(ValueError, match="RESULTS.json: row 0 needs a 'key' and a 'run' index below 0"):
        read_results_record(bad)
