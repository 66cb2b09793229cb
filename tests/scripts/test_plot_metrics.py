"""scripts/plot_metrics.py on a synthetic metrics.jsonl: PNGs per panel, skips, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import plot_metrics as pm

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_log(path: Path, with_failures: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(1, 11):
        row = {"step": step, "critic/score/mean": 0.1 * step, "search/p_noisy": 0.05 * (step - 1),
               "search/turns_mean": 1.0 + step / 10, "search/turns_max": 2.0, "timing/step": 3.0,
               "note": "text is ignored", "flag": True}
        if with_failures:
            row["search/failure_rate"] = 0.0
        if step % 5 == 0:
            row.update({"val/nq/em": 0.2 + step / 100, "val/nq/f1": 0.3 + step / 100, "val/nq/count": 200.0})
        rows.append(row)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")


def test_load_metrics_collects_numeric_series(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 2, "a": 1.5, "b": "x"}\n\n{"step": 1, "a": 0.5, "c": NaN, "d": true}\n', encoding="utf-8")
    assert pm.load_metrics(log) == {"a": [(1, 0.5), (2, 1.5)]}


def test_panels_written_and_missing_ones_noted(tmp_path, capsys):
    run = tmp_path / "run"
    _write_log(run / "logs" / "metrics.jsonl")
    out = tmp_path / "plots"
    assert pm.main([str(run), "--out", str(out), "--keys", "timing/step", "no/such_key"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["key_timing_step.png", "p_noisy.png", "reward.png", "turns.png", "val_em_f1.png"]
    for p in out.iterdir():
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
    text = capsys.readouterr().out
    assert "skipped search_failures" in text and "skipped --keys no/such_key" in text


def test_val_em_f1_selection():
    assert pm._is_val_em_f1("val/nq/em") and pm._is_val_em_f1("val/f1") and pm._is_val_em_f1("val-core/hotpotqa/sub_em")
    assert not pm._is_val_em_f1("val/nq/count") and not pm._is_val_em_f1("train/em") and not pm._is_val_em_f1("val/temperature")


def test_default_out_dir_and_failure_panel_via_command_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    _write_log(log, with_failures=True)
    script = Path(__file__).resolve().parents[2] / "scripts" / "plot_metrics.py"
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "plots" / "search_failures.png").read_bytes()[:8] == PNG_MAGIC


def test_errors(tmp_path, capsys):
    assert pm.main([str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert pm.main([str(tmp_path)]) == 2  # folder without a log
    assert "no metrics.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "a": 1}\n{oops\n{"step": 3, "a": 2}\n', encoding="utf-8")
    assert pm.main([str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    nostep = tmp_path / "nostep.jsonl"
    nostep.write_text('{"a": 1}\n', encoding="utf-8")
    assert pm.main([str(nostep)]) == 2
    assert "'step'" in capsys.readouterr().err
    empty = tmp_path / "only_other.jsonl"
    empty.write_text('{"step": 1, "x": 1}\n', encoding="utf-8")
    assert pm.main([str(empty), "--out", str(tmp_path / "o")]) == 1


def test_incomplete_last_line_is_skipped(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "reward/score": 0.5}\n{"step": 2, "rew', encoding="utf-8")
    assert pm.load_metrics(log) == {"reward/score": [(1, 0.5)]}


def test_several_logs_under_a_folder_is_an_error(tmp_path):
    _write_log(tmp_path / "a" / "metrics.jsonl")
    _write_log(tmp_path / "b" / "metrics.jsonl")
    with pytest.raises(pm.MetricsFileError, match="several"):
        pm.find_metrics_file(tmp_path)
