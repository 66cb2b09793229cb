"""scripts/gpu_smoke.sh without a GPU (fails fast, saying so) and its table (scripts/gpu_smoke_report.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scripts import gpu_smoke_report as report

REPO = Path(__file__).resolve().parents[2]
PLAN = """plan: qwen2.5-3b: 3.09B parameters (36 layers, hidden 2048, vocab 151936, tied embeddings)
plan: rollout        49.5 GiB = runtime 1.5 + rollout weights 5.7 + KV cache 42.3
plan: log-prob       10.4 GiB = runtime 1.5 + logits 5.8
plan: update         19.0 GiB = runtime 1.5 + logits 11.0
plan: weight sync    10.5 GiB = runtime 1.5 + rollout weights 5.7
plan: highest phase: rollout
plan: peak 49.5 GiB per GPU of 72.0 GiB: fits
"""


def test_no_gpu_fails_fast_with_a_clear_message(tmp_path):
    # a PATH without nvidia-smi (this machine has none either way)
    env = dict(os.environ, PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                if not (Path(p) / "nvidia-smi").exists()))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), "OUT", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "gpu_smoke: no CUDA GPU visible" in proc.stderr and "--plan" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing built or started
    bad = subprocess.run(["bash", str(REPO / "scripts" / "gpu_smoke.sh"), "SHAPE", "3b"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown key 'SHAPE'" in bad.stderr


def test_report_table(tmp_path):
    rows = [
        {"step": 1, "timing_s/rollout": 30.0, "timing_s/old_log_prob": 4.0, "timing_s/ref": 2.0,
         "timing_s/update_actor": 12.5, "timing_s/weight_sync": 2.5, "timing_s/step": 50.0,
         "memory/max_allocated_gib/update": 15.0, "memory/device_used_gib/update": 17.0,
         "memory/device_used_gib/rollout": 52.0, "actor/rollout_old_logprob_abs_diff": 0.0123,
         "memory/sleep_freed_gib": 44.3},
        {"step": 2, "timing_s/rollout": 20.0, "timing_s/old_log_prob": 3.0, "timing_s/ref": 1.0,
         "timing_s/update_actor": 11.0, "timing_s/weight_sync": 1.0, "timing_s/step": 40.0,
         "memory/max_allocated_gib/update": 16.0, "memory/device_used_gib/update": 18.0,
         "memory/device_used_gib/rollout": 51.0},
    ]
    (tmp_path / "plan.txt").write_text(PLAN)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.main(["--name", "3b", "--plan", str(tmp_path / "plan.txt"), "--metrics", str(metrics),
                        "--out", str(tmp_path / "t.md")])
    lines = text.splitlines()
    assert "plan: peak 49.5 GiB per GPU of 72.0 GiB: fits" in lines
    # rollout: device used max(52, 51) = 52 against 49.5 -> 1.05; 30 and 20 s
    assert "| rollout | 49.5 | n/a | 52.0 | 1.05 | 30.0 / 20.0 |" in lines
    # log-prob: old_log_prob + ref = 6 and 4 s; no memory logged
    assert "| log-prob | 10.4 | n/a | n/a | n/a | 6.0 / 4.0 |" in lines
    # update: larger of allocated (16) and used (18) -> 18 / 19.0 = 0.95; update_actor - weight_sync = 10 and 10 s
    assert "| update | 19.0 | 16.0 | 18.0 | 0.95 | 10.0 / 10.0 |" in lines
    assert "| weight sync | 10.5 | n/a | n/a | n/a | 2.5 / 1.0 |" in lines
    summary = text.rstrip().splitlines()[-1]
    assert "; weight sync seconds 2.50 / 1.00; memory freed by sleep GiB 44.3 / n/a;" in summary
    assert summary.endswith("actor/rollout_old_logprob_abs_diff 0.0123 / n/a (not logged)")
    assert (tmp_path / "t.md").read_text().startswith("### 3b")


def test_report_refuses_what_is_not_a_plan(tmp_path):
    with pytest.raises(ValueError, match="not a memory plan printout"):
        report.parse_plan("plan: peak 1.0 GiB per GPU of 80.0 GiB: fits\n")
    empty = tmp_path / "m.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no steps logged"):
        report.read_metrics(empty)
