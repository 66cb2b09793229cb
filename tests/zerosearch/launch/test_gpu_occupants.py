"""gpu_occupants: the trainer's GPUs and who holds them, from nvidia-smi's CSV (parsed by hand here),
and the launcher's plan naming a simulation server that sits on the trainer's GPUs (a fake
nvidia-smi on PATH: this machine has no GPU)."""

import os
import stat
from pathlib import Path

import pytest

from zerosearch.launch import gpu_occupants as go

GPUS = """0, GPU-aaaa, 81559, 41000
1, GPU-bbbb, 81559, 41000
2, GPU-cccc, 81559, 5
3, GPU-dddd, 81559, 5
"""
SHAPE = Path(__file__).resolve().parents[3] / "configs" / "models" / "qwen2.5-0.5b.json"
APPS = """GPU-aaaa, 4242, /envs/sglang/bin/python, 40960
GPU-bbbb, 4243, /envs/sglang/bin/python, 40960
"""


def test_parse_and_pick_the_trainers_gpus():
    gpus = go.parse_gpus(GPUS, APPS)
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert gpus[0].occupants == (go.Occupant(4242, "/envs/sglang/bin/python", 40960 * 2**20),)
    assert gpus[0].free_bytes == (81559 - 41000) * 2**20 and gpus[2].occupants == ()
    assert [g.index for g in go.trainer_gpus(gpus, None, 2)] == [0, 1]
    assert [g.index for g in go.trainer_gpus(gpus, "2,3", 4)] == [2, 3]
    assert [g.index for g in go.trainer_gpus(gpus, "GPU-dd,GPU-aa", 2)] == [3, 0]
    assert [g.index for g in go.trainer_gpus(gpus, "1,9,2", 4)] == [1]  # CUDA stops at an unknown entry
    lines = go.describe(go.trainer_gpus(gpus, "0,2", 2))
    assert lines == ["GPU 0 already holds 40.0 of 79.6 GiB: PID 4242 /envs/sglang/bin/python (40.0 GiB); 39.6 GiB free"]
    with pytest.raises(ValueError, match="query-gpu: expected 4 columns"):
        go.parse_gpus("0, GPU-aaaa, 81559\n", "")


@pytest.fixture()
def fake_nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "nvidia-smi"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\ncase \"$1\" in\n"
                      f"  --query-gpu=*) printf '{GPUS}' ;;\n"
                      f"  --query-compute-apps=*) printf '{APPS}' ;;\n"
                      "  *) exit 9 ;;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return script


def test_plan_names_a_simulator_on_the_trainers_gpus(tmp_path, data_dir, capsys, monkeypatch, fake_nvidia_smi):
    from zerosearch.launch import train as launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    rc = launch.main(["--algo", "grpo", "--plan", "MODEL_PATH", str(SHAPE),
                      "DATA_PATH", str(data_dir), "DEVICE", "cuda", "NUM_GPUS_PER_NODE", "2"])
    out = capsys.readouterr().out
    assert "GPU 0 already holds 40.0 of 79.6 GiB: PID 4242 /envs/sglang/bin/python" in out
    # vLLM takes 0.6 of the whole GPU, 47.8 GiB, and 40.0 GiB are taken: the rollout needs
    # 1.5 (runtime) + 47.8 + 40.0 = 89.3 GiB of 79.6, so the run cannot start there, and the
    # change that helps is to give the simulator and the trainer different GPUs
    rollout = next(l for l in out.splitlines() if l.startswith("plan: rollout"))
    assert "other processes 40.0" in rollout and rollout.split()[2] == "89.3"
    assert out.splitlines()[-1] == "plan: peak 89.3 GiB per GPU of 79.6 GiB: does not fit: change CUDA_VISIBLE_DEVICES"
    assert rc == 2

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the simulator's GPUs left alone
    launch.main(["--algo", "grpo", "--plan", "MODEL_PATH", str(SHAPE),
                 "DATA_PATH", str(data_dir), "DEVICE", "cuda", "NUM_GPUS_PER_NODE", "2"])
    out = capsys.readouterr().out
    assert "already holds" not in out and "other processes" not in out
    assert out.splitlines()[-1].endswith("per GPU of 79.6 GiB: fits")
