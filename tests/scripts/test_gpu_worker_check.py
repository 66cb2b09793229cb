"""scripts/gpu_worker_check.py and .sh: the actor worker's step phases against the memory plan.

The check runs on the CPU the same way it runs on a GPU (gloo instead of NCCL, no memory readings),
so these tests prove its flow and its checks: a run passes with an exact sync, and a sync that does
not reach the engine fails it. Each run is a subprocess: the worker creates a process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--device", "cpu", "--rows", "4", "--prompt-length", "16", "--response-length", "16", "--new-tokens", "4"]
PHASES = {"weight sync", "rollout", "log-prob", "update"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tests.verl.tiny_models import model

    return model(tmp_path_factory.mktemp("worker_check_model"), size="tiny", seed=0)


def run_check(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_cpu_run_passes_with_an_exact_sync(tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = run_check(f"from scripts.gpu_worker_check import main; raise SystemExit(main("
                     f"{['--models', str(tiny_model), '--out', str(out), *SMALL]!r}))")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = json.loads((out / "worker_check.json").read_text())
    assert record["result"] == "ok"
    assert set(record["planned_gib"]) == PHASES and all(v > 0 for v in record["planned_gib"].values())
    # the updates moved the actor away from the engine; the sync made every engine weight equal again
    assert record["weight_diff_before_sync"] > 0.0
    assert record["weight_diff_after_sync"] == 0.0
    # float32 on both sides from the same weights: rounding only (a stale engine gives ~1e-1, see below)
    assert record["rollout_logprob_abs_diff"] < 1e-4
    assert record["sync"]["weight_sync/tensors"] > 0
    assert {"init", "actor log-prob", "ref log-prob", "update (first)", "update", "weight sync"} <= set(record["seconds"])
    assert record["measured_gib"] == {}  # memory is read on cuda only
    table = (out / "worker_check.md").read_text()
    assert "result: ok" in table and "| update |" in table and "plan ÷ device used" in table


def test_a_sync_that_does_not_reach_the_engine_fails(tiny_model, tmp_path):
    out = tmp_path / "out"
    # the engine keeps its weights: every sync does nothing; the learning rate is raised so that the
    # two updates move the actor far enough for its log-probs to differ from the engine's
    proc = run_check(textwrap.dedent(f"""
        from verl.workers.rollout import hf_rollout
        from verl.workers.rollout.weight_sync import SyncStats
        hf_rollout.HFRollout.sync_weights = lambda self, named: SyncStats()
        from scripts.gpu_worker_check import main
        raise SystemExit(main({['--models', str(tiny_model), '--out', str(out), *SMALL,
                                '--', 'actor_rollout_ref.actor.optim.lr=0.01',
                                'actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0']!r}))
    """))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = json.loads((out / "worker_check.json").read_text())
    assert record["result"].startswith("failed: ")
    assert "after the sync an engine weight differs" in record["result"]
    assert record["weight_diff_after_sync"] > 0.0
    assert "engine vs actor log-prob mean |diff|" in record["result"]
    assert "failed: " in (out / "worker_check.md").read_text()


def test_bad_arguments_and_no_gpu(tiny_model, tmp_path):
    from scripts.gpu_worker_check import main

    with pytest.raises(SystemExit) as exc:
        main(["--models", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert exc.value.code == 2  # a folder without config.json
    with pytest.raises(SystemExit) as exc:
        main(["--models", str(tiny_model), "--out", str(tmp_path / "o"), "--device", "cpu", "--rows", "6"])
    assert exc.value.code == 2
    assert main(["--models", str(tiny_model), "--out", str(tmp_path / "o")]) == 2  # cuda by default; none here
    assert not (tmp_path / "o").exists()


def test_wrapper_refuses_without_a_gpu_or_the_packages(tmp_path):
    script = str(REPO / "scripts" / "gpu_worker_check.sh")
    proc = subprocess.run(["bash", script, "OUT", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "DEVICE cuda but torch sees no CUDA GPU" in proc.stderr
    assert not (tmp_path / "o").exists()
    bad = subprocess.run(["bash", script, "SHAPE", "3b"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown key 'SHAPE'" in bad.stderr
    # a python without omegaconf/hydra and no wheels to add them: says how to make the wheels
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True, timeout=120)
    (tmp_path / "wheels").mkdir()
    bare = subprocess.run(["bash", script, "PY", str(tmp_path / "bare" / "bin" / "python"),
                           "WHEELS", str(tmp_path / "wheels"), "OUT", str(tmp_path / "o2")],
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "--fetch-wheels" in bare.stderr


def test_a_model_whose_host_memory_does_not_fit_is_not_loaded(tiny_model, tmp_path):
    out = tmp_path / "out"
    # a machine of 1 MiB: the tiny model's planned ~40 MB on the CPU are more than 90% of it
    proc = run_check(textwrap.dedent(f"""
        import collections, psutil
        psutil.virtual_memory = lambda: collections.namedtuple("vm", "total available")(2**20, 2**20)
        from verl.workers import fsdp_workers
        fsdp_workers.ActorRolloutRefWorker.init_model = lambda self: (_ for _ in ()).throw(AssertionError("loaded"))
        from scripts.gpu_worker_check import main
        raise SystemExit(main({['--models', str(tiny_model), '--out', str(out), *SMALL]!r}))
    """))
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = json.loads((out / "worker_check.json").read_text())
    assert record["result"].startswith("not run: the plan needs 0.0") and "of this machine's 0.0 GiB" in record["result"]
    assert "seconds" not in record


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_measures_every_phase(tiny_model, tmp_path):
    out = tmp_path / "out"
    args = ["--models", str(tiny_model), "--out", str(out), "--device", "cuda", "--rows", "4",
            "--prompt-length", "64", "--response-length", "64", "--new-tokens", "8"]
    proc = run_check(f"from scripts.gpu_worker_check import main; raise SystemExit(main({args!r}))")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = json.loads((out / "worker_check.json").read_text())
    assert record["result"] == "ok" and record["weight_diff_after_sync"] == 0.0
    # every phase read on the GPU: this process's tensors and the whole device
    assert set(record["measured_gib"]) == PHASES
    for phase, got in record["measured_gib"].items():
        assert 0.0 < got["max_allocated"] <= got["device_used"], phase


def test_memory_readings_land_in_the_table(tiny_model, tmp_path):
    out = tmp_path / "out"
    # cuda readings (verl.utils.device_memory's metric names) given to a CPU run: every call reads 1.5 GiB
    # allocated and 2.0 GiB in use for every phase, the sixth 3.0 in use: the table keeps each largest
    proc = run_check(textwrap.dedent(f"""
        from verl.workers import fsdp_workers
        calls = []
        def readings(self):
            calls.append(1)
            used = 3.0 if len(calls) == 6 else 2.0  # the sixth call follows the second update
            return {{f"memory/{{kind}}_gib/{{phase}}": value for phase in ("weight sync", "rollout", "log-prob", "update")
                    for kind, value in (("max_allocated", 1.5), ("device_used", used))}}
        fsdp_workers.ActorRolloutRefWorker.memory_metrics = readings
        from scripts.gpu_worker_check import main
        raise SystemExit(main({['--models', str(tiny_model), '--out', str(out), *SMALL]!r}))
    """))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record,) = json.loads((out / "worker_check.json").read_text())
    assert record["measured_gib"] == {phase: {"max_allocated": 1.5, "device_used": 3.0} for phase in PHASES}
    planned = record["planned_gib"]["update"]
    assert f"| update | {planned:.2f} | 3.00 | 1.50 | {planned / 3.0:.2f} |" in (out / "worker_check.md").read_text()
