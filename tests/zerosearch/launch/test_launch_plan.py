"""The launcher's memory plan: ``--plan`` anywhere before ``--``, the fit line, the refusal of a run
that cannot fit (exit 2 before anything loads) and the PLAN_CHECK override."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from zerosearch.launch import train as launch

REPO = Path(__file__).resolve().parents[3]
VERDICT = re.compile(r"^plan: peak [0-9.]+ GiB per (GPU|worker) of [0-9.]+ GiB: (fits|does not fit: change \S+)$")
# A ~0.1B Qwen2 shape: small enough to fit anywhere, large enough for the plan's numbers to matter.
SMALL = {"model_type": "qwen2", "hidden_size": 768, "intermediate_size": 2560, "num_hidden_layers": 12,
         "num_attention_heads": 12, "num_key_value_heads": 4, "vocab_size": 8192, "tie_word_embeddings": False}
HUGE = dict(SMALL, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
            num_key_value_heads=8, vocab_size=152064)


def model(tmp_path, cfg, name):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def verdicts(text):
    lines = [l for l in text.splitlines() if l.startswith("plan: peak ")]
    assert len(lines) == 1 and VERDICT.match(lines[0]), text
    return lines[0]


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_plan_anywhere_before_the_passthrough(tmp_path, capsys, where):
    # Only config.json and no data folder: --plan needs neither weights nor data.
    pairs = ["MODEL_PATH", str(model(tmp_path, SMALL, "m")), "DATA_PATH", str(tmp_path / "no-data"),
             "DEVICE", "cuda", "GPU_MEMORY_GIB", "24"]
    at = {"first": 0, "middle": 2, "last": len(pairs)}[where]
    argv = ["--algo", "grpo"] + pairs[:at] + ["--plan"] + pairs[at:] + ["--", "trainer.seed=3"]
    assert launch.main(argv) == 0
    line = verdicts(capsys.readouterr().out)
    assert line.endswith("per GPU of 24.0 GiB: fits")


def test_plan_after_the_passthrough_is_a_hydra_override(tmp_path, capsys):
    pairs = ["MODEL_PATH", str(model(tmp_path, SMALL, "m")), "DATA_PATH", str(tmp_path / "no-data")]
    with pytest.raises(SystemExit) as info:
        launch.main(["--algo", "grpo"] + pairs + ["--", "--plan"])
    assert info.value.code == 2 and "DATA_PATH" in capsys.readouterr().err  # a real run checks the data folder


def test_plan_of_a_model_too_large_names_the_key(tmp_path, capsys):
    argv = ["--algo", "grpo", "--plan", "MODEL_PATH", str(model(tmp_path, HUGE, "huge")), "DATA_PATH", "x",
            "DEVICE", "cuda", "GPU_MEMORY_GIB", "80"]
    assert launch.main(argv) == 2
    assert verdicts(capsys.readouterr().out).endswith("does not fit: change MODEL_PATH")


def test_plan_from_a_config_file_and_bad_configs(tmp_path, capsys):
    cfg = tmp_path / "shape.json"
    cfg.write_text(json.dumps(SMALL))
    assert launch.main(["--algo", "reinforce", "--plan", "MODEL_PATH", str(cfg), "DATA_PATH", "x", "DEVICE", "cpu",
                        "GPU_MEMORY_GIB", "16", "MAX_PROMPT_LENGTH", "256", "MAX_RESPONSE_LENGTH", "512"]) == 0
    assert verdicts(capsys.readouterr().out).endswith("per worker of 16.0 GiB: fits")
    broken = model(tmp_path, {"hidden_size": 8}, "broken")
    assert launch.main(["--algo", "grpo", "--plan", "MODEL_PATH", str(broken), "DATA_PATH", "x"]) == 2
    assert "config.json: num_attention_heads must be a positive integer" in capsys.readouterr().err


@pytest.fixture()
def exec_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(launch.os, "execvpe", lambda *args: calls.append(args))
    return calls


def test_a_run_that_cannot_fit_stops_before_loading(tmp_path, data_dir, capsys, exec_calls):
    argv = ["--algo", "grpo", "MODEL_PATH", str(model(tmp_path, HUGE, "huge")), "DATA_PATH", str(data_dir),
            "DEVICE", "cuda", "GPU_MEMORY_GIB", "80", "SAVE_DIR", str(tmp_path / "ckpt")]
    with pytest.raises(SystemExit) as info:
        launch.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and exec_calls == []
    assert verdicts(err).endswith("change MODEL_PATH") and "PLAN_CHECK off" in err
    # The override runs it anyway, after printing the same plan.
    launch.main(argv + ["PLAN_CHECK", "off"])
    assert len(exec_calls) == 1 and exec_calls[0][1][1:3] == ["-m", launch.TRAINER_MODULE]
    assert verdicts(capsys.readouterr().err).endswith("change MODEL_PATH")


def test_a_fitting_run_prints_the_plan_and_starts(tmp_path, data_dir, capsys, exec_calls):
    launch.main(["--algo", "grpo", "MODEL_PATH", str(model(tmp_path, SMALL, "m")), "DATA_PATH", str(data_dir),
                 "DEVICE", "cpu", "ROLLOUT_ENGINE", "hf", "GPU_MEMORY_GIB", "8", "SAVE_DIR", str(tmp_path / "c"),
                 "TRAIN_BATCH_SIZE", "4", "N_AGENT", "2", "MAX_PROMPT_LENGTH", "256", "MAX_RESPONSE_LENGTH", "512"])
    assert len(exec_calls) == 1 and verdicts(capsys.readouterr().err).endswith("fits")


def test_a_config_the_plan_cannot_read_does_not_stop_a_run(tmp_path, data_dir, capsys, exec_calls):
    launch.main(["--algo", "grpo", "MODEL_PATH", str(model(tmp_path, {}, "odd")), "DATA_PATH", str(data_dir),
                 "DEVICE", "cpu", "ROLLOUT_ENGINE", "hf", "SAVE_DIR", str(tmp_path / "c")])
    assert len(exec_calls) == 1 and "memory plan skipped" in capsys.readouterr().err


def test_a_tensor_parallel_rollout_is_refused_by_the_plan_and_before_a_run(tmp_path, data_dir, capsys, exec_calls):
    tp = "actor_rollout_ref.rollout.tensor_model_parallel_size=2"
    pairs = ["MODEL_PATH", str(model(tmp_path, SMALL, "m")), "DATA_PATH", str(data_dir), "DEVICE", "cuda",
             "GPU_MEMORY_GIB", "80", "SAVE_DIR", str(tmp_path / "c")]
    assert launch.main(["--algo", "grpo", "--plan", *pairs, "--", tp]) == 2
    assert f"{tp} is not supported" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # PLAN_CHECK off is about memory: it does not let this through
        launch.main(["--algo", "grpo", *pairs, "PLAN_CHECK", "off", "--", tp])
    assert info.value.code == 2 and exec_calls == []
    assert f"{tp} is not supported" in capsys.readouterr().err


@pytest.mark.parametrize("algo", ["grpo", "ppo", "reinforce"])
def test_shell_scripts_take_plan(tmp_path, algo):
    proc = subprocess.run(["bash", str(REPO / f"train_{algo}.sh"), "MODEL_PATH", str(model(tmp_path, SMALL, "m")),
                           "--plan", "DATA_PATH", "x", "DEVICE", "cuda", "NUM_GPUS_PER_NODE", "2",
                           "GPU_MEMORY_GIB", "80"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc.stdout).endswith("per GPU of 80.0 GiB: fits")
    assert ("critic weights" in proc.stdout) == (algo == "ppo")


def test_gpu_memory_default(monkeypatch):
    import torch

    from zerosearch.launch.plan import device_memory_gib

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_memory_gib({"GPU_MEMORY_GIB": "auto", "DEVICE": "cuda", "NUM_GPUS_PER_NODE": 4}) == (80.0, 0.0)
    assert device_memory_gib({"GPU_MEMORY_GIB": 40.0, "DEVICE": "cuda", "NUM_GPUS_PER_NODE": 4}) == (40.0, 0.0)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    assert device_memory_gib({"GPU_MEMORY_GIB": "auto", "DEVICE": "cpu", "NUM_GPUS_PER_NODE": 2}) == pytest.approx((ram / 2, 0.0))


@pytest.mark.parametrize("extra, key", [
    # 65,536 tokens per update micro-batch of a 0.3B model with a 151,936-word vocabulary on 24 GiB:
    # the update's logits decide (about 38 GiB of them)
    (["MAX_TOKENS_PER_GPU", "65536", "LOG_PROB_MAX_TOKENS_PER_GPU", "1024"], "MAX_TOKENS_PER_GPU"),
    (["MAX_TOKENS_PER_GPU", "1024", "LOG_PROB_MAX_TOKENS_PER_GPU", "131072"], "LOG_PROB_MAX_TOKENS_PER_GPU"),
    # fixed rows: 16 rows of 6,144 tokens
    (["DYNAMIC_BSZ", "false", "MICRO_BATCH_SIZE", "16"], "MICRO_BATCH_SIZE"),
])
def test_the_verdict_names_the_launcher_key_that_sets_the_config_key(tmp_path, capsys, extra, key):
    argv = ["--algo", "grpo", "--plan", "MODEL_PATH", str(model(tmp_path, dict(SMALL, vocab_size=151936), "m")),
            "DATA_PATH", "x", "DEVICE", "cuda", "GPU_MEMORY_GIB", "24", "TRAIN_BATCH_SIZE", "16", "N_AGENT", "4",
            *extra, "--", "actor_rollout_ref.rollout.gpu_memory_utilization=0.1"]
    assert launch.main(argv) == 2
    assert verdicts(capsys.readouterr().out).endswith(f"does not fit: change {key}")
