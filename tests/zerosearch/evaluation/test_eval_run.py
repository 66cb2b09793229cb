"""zerosearch.evaluation.run: every export of a run scored once, the score-vs-step table and curves.

A fake evaluation writes known results per export, so the table is checked against numbers set
here; the end-to-end run with tiny models and the retrieval server is in test_evaluate.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from zerosearch.evaluation.run import evaluate_run, run_exports

# Results each step's (fake) evaluation reports: (nq em, sub_em, f1), (bamboogle em, sub_em, f1).
SCORES = {5: ((0.25, 0.5, 0.375), (0.0, 0.25, 0.125)),
          10: ((0.5, 0.75, 0.625), (0.25, 0.25, 0.25)),
          15: ((0.75, 1.0, 0.875), (0.5, 0.5, 0.5))}


def make_run(root: Path, steps) -> Path:
    for step in steps:
        export = root / "exports" / f"global_step_{step}"
        export.mkdir(parents=True)
        (export / "config.json").write_text(json.dumps({"step": step}))
    (root / "global_step_15").mkdir(exist_ok=True)  # a full checkpoint: not an export
    return root


class FakeEvaluate:
    def __init__(self):
        self.calls = []

    def __call__(self, model, data_files, search_engine, out, **options):
        step = json.loads((Path(model) / "config.json").read_text())["step"]
        self.calls.append((step, list(data_files), search_engine, options))
        (nq, bam) = SCORES[step]
        results = {"nq": dict(zip(("em", "sub_em", "f1"), nq), n=4),
                   "bamboogle": dict(zip(("em", "sub_em", "f1"), bam), n=4)}
        results["mean_over_sources"] = {k: (results["nq"][k] + results["bamboogle"][k]) / 2
                                        for k in ("em", "sub_em", "f1")}
        results["mean_over_rows"] = {**results["mean_over_sources"], "n": 8}  # equal counts: the same means
        results["mean_over_sources"]["n"] = 8
        Path(out).mkdir(parents=True)
        (Path(out) / "results.json").write_text(json.dumps(results))
        return results


def test_every_export_is_scored_once_and_tabulated(tmp_path):
    run = make_run(tmp_path / "run", (10, 5))
    out = tmp_path / "scores"
    fake = FakeEvaluate()
    first = evaluate_run(run, ["nq.jsonl", "b.jsonl"], "wiki", out, fake, limit=4)
    assert (first["scored"], first["skipped"]) == ([5, 10], [])
    assert [c[0] for c in fake.calls] == [5, 10]
    assert fake.calls[0][1:] == (["nq.jsonl", "b.jsonl"], "wiki", {"limit": 4})

    make_run(run, (15,))
    second = evaluate_run(run, ["nq.jsonl", "b.jsonl"], "wiki", out, fake, limit=4)
    assert (second["scored"], second["skipped"]) == ([15], [5, 10])
    assert [c[0] for c in fake.calls] == [5, 10, 15]  # scored exports are not evaluated again
    assert evaluate_run(run, ["nq.jsonl", "b.jsonl"], "wiki", out, fake)["scored"] == []

    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "nq/em", "nq/sub_em", "nq/f1", "bamboogle/em", "bamboogle/sub_em", "bamboogle/f1",
                       "mean_over_sources/em", "mean_over_sources/sub_em", "mean_over_sources/f1",
                       "mean_over_rows/em", "mean_over_rows/sub_em", "mean_over_rows/f1"]
    assert [int(r[0]) for r in rows[1:]] == [5, 10, 15]  # one row per step
    # step 10: nq 0.5 / 0.75 / 0.625, bamboogle 0.25 / 0.25 / 0.25, average their means
    assert [float(x) for x in rows[2][1:]] == [0.5, 0.75, 0.625, 0.25, 0.25, 0.25] + [0.375, 0.5, 0.4375] * 2

    md = (out / "scores.md").read_text()
    sub_em = md.split("## SubEM (%)")[1].split("##")[0]
    assert "| step | nq | bamboogle | mean_over_sources | mean_over_rows |" in sub_em
    assert "| 5 | 50.00 | 25.00 | 37.50 | 37.50 |" in sub_em and "| 15 | 100.00 | 50.00 | 75.00 | 75.00 |" in sub_em
    for name in ("nq", "bamboogle", "mean_over_sources", "mean_over_rows"):
        assert (out / f"curve_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_exports_is_named(tmp_path):
    (tmp_path / "run" / "global_step_3").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no exports in .*run/exports.*save_exports"):
        run_exports(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        run_exports(tmp_path / "missing")


def test_evaluate_sh_key_run_maps_to_the_flag():
    from zerosearch.evaluation.keys import keys_to_argv

    argv = keys_to_argv(["RUN", "ckpt/exp", "SEARCH_ENGINE", "wiki"])
    assert argv == ["--run", "ckpt/exp", "--search-engine", "wiki"]
