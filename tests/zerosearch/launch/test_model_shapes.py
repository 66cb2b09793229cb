"""Shapes of real models (configs/models/): parameter counts, an offline random build with a padded
vocabulary, and the memory plan on them (the README's 3B run fits on 4 x 80 GB; 72B on one does not)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verl.utils import memory_plan as mp
from zerosearch.launch import train as launch
from zerosearch.miniature import tiny

REPO = Path(__file__).resolve().parents[3]
SHAPES = REPO / "configs" / "models"


def params_by_hand(c: dict) -> int:
    """Qwen2: q/k/v with bias, o without; gate/up/down; two RMSNorms per layer; embeddings, final
    norm, and an LM head unless tied."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    return c["num_hidden_layers"] * layer + v * h * (1 if c["tie_word_embeddings"] else 2) + h


@pytest.mark.parametrize("name, billions, tied", [("qwen2.5-0.5b", 0.49, True), ("qwen2.5-3b", 3.09, True),
                                                  ("qwen2.5-7b", 7.62, False), ("qwen2.5-72b", 72.7, False)])
def test_shapes_have_the_real_parameter_counts(name, billions, tied):
    shape = tiny.load_shape(SHAPES / f"{name}.json")
    n = params_by_hand(shape)
    assert round(n / 1e9, 2 if billions < 10 else 1) == billions
    assert shape["tie_word_embeddings"] is tied
    assert mp.read_model_shape(str(SHAPES / f"{name}.json")).num_params == n


def test_the_half_billion_shape_builds_with_that_count():
    import torch
    from transformers import Qwen2ForCausalLM

    shape = tiny.load_shape(SHAPES / "qwen2.5-0.5b.json")
    with torch.device("meta"):
        model = Qwen2ForCausalLM(tiny.shape_config(shape, eos_token_id=2, pad_token_id=0))
    assert sum(p.numel() for p in model.parameters()) == params_by_hand(shape) == 494_032_768
    assert model.get_input_embeddings().weight.shape == (151936, 896)
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_shape_build_pads_the_vocabulary_and_the_launcher_takes_it(tmp_path):
    # A narrow shape with the real Qwen2.5 vocabulary: fast to build, same padding situation.
    shape_file = tmp_path / "narrow.json"
    narrow = dict(tiny.load_shape(SHAPES / "qwen2.5-0.5b.json"), hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    shape_file.write_text(json.dumps(narrow))
    out = tiny.main(["--out", str(tmp_path / "m"), "--shape", str(shape_file), "--vocab-size", "300",
                     "--corpus-file", str(REPO / "data" / "qa" / "nq.jsonl")])
    cfg = json.loads((out / "config.json").read_text())
    info = json.loads((out / "tiny_model.json").read_text())
    assert cfg["vocab_size"] == 151936 and info["tokenizer_len"] < 400 and cfg["tie_word_embeddings"] is True
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg.get("torch_dtype", cfg.get("dtype")) == "bfloat16"
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out)) == info["tokenizer_len"]
    assert info["num_parameters"] == params_by_hand(narrow)
    assert launch.KEYS_BY_NAME["MODEL_PATH"].parse(str(out)) == str(out)


def test_bad_shape_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="missing intermediate_size"):
        tiny.load_shape(bad)
    bad.write_text(json.dumps(dict(tiny.load_shape(SHAPES / "qwen2.5-3b.json"), vocab_size=-1)))
    with pytest.raises(ValueError, match="vocab_size has a bad value"):
        tiny.load_shape(bad)
    bad.write_text(json.dumps(dict(tiny.load_shape(SHAPES / "qwen2.5-3b.json"), sliding_window=4096)))
    with pytest.raises(ValueError, match="unknown fields sliding_window"):
        tiny.load_shape(bad)
    with pytest.raises(SystemExit):
        tiny.main(["--out", str(tmp_path / "x"), "--size", "tiny", "--shape", str(SHAPES / "qwen2.5-3b.json")])


# The cuda profile the README's quick start runs with: bf16 actor, reference and rollout, token-budget
# micro-batches. (Passed explicitly here, so that the test holds whichever defaults the config has.)
CUDA_PROFILE = ["--", "actor_rollout_ref.model.dtype=bfloat16", "actor_rollout_ref.rollout.dtype=bfloat16",
                "actor_rollout_ref.actor.use_dynamic_bsz=true", "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=16384"]


def test_readme_3b_command_fits_on_4x80(capsys):
    argv = ["--algo", "grpo", "--plan", "NUM_GPUS_PER_NODE", "4", "MODEL_PATH", str(SHAPES / "qwen2.5-3b.json"),
            "DATA_PATH", "ZeroSearch_dataset", "DEVICE", "cuda", "GPU_MEMORY_GIB", "80", "MAX_TURNS", "5",
            "SEARCH_ENGINE", "google", *CUDA_PROFILE]
    assert launch.main(argv) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("plan: peak ") and last.endswith(" GiB per GPU of 80.0 GiB: fits")


def test_72b_on_one_80gb_gpu_is_refused_naming_the_key(capsys):
    argv = ["--algo", "grpo", "--plan", "MODEL_PATH", str(SHAPES / "qwen2.5-72b.json"), "DATA_PATH", "x",
            "DEVICE", "cuda", "GPU_MEMORY_GIB", "80", *CUDA_PROFILE]
    assert launch.main(argv) == 2
    assert capsys.readouterr().out.splitlines()[-1].endswith("GiB per GPU of 80.0 GiB: does not fit: change MODEL_PATH")


def _plan_of_docs_command(command: str, capsys, monkeypatch) -> list[str]:
    """The plan lines that ``bash train_grpo.sh --plan ...`` prints here, with no GPU visible."""
    import shlex

    import torch

    from zerosearch.launch import gpu_occupants

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_occupants, "query", lambda *a, **k: None)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["bash", "train_grpo.sh"], command
    monkeypatch.chdir(REPO)
    launch.main(["--algo", "grpo", *argv[2:]])
    return capsys.readouterr().out.splitlines()


def test_the_plans_in_the_docs_are_what_the_commands_print(capsys, monkeypatch):
    # docs/gpu.md quotes the README's 3B command and its whole plan; README.md quotes the peaks of
    # each phase for 3B and 7B. A change to the plan, a profile or a default must update them.
    doc = (REPO / "docs" / "gpu.md").read_text()
    section = doc.split("### Qwen2.5-3B on 4 x 80 GB", 1)[1]
    command, after = section.split("```bash\n", 1)[1].split("```", 1)
    printed = after.split("```\n", 1)[1].split("```", 1)[0].strip().splitlines()
    command = command.strip()
    assert _plan_of_docs_command(command, capsys, monkeypatch) == printed

    readme = " ".join((REPO / "README.md").read_text().split())
    for shape, (rollout, update, log_prob, sync, kv, sequences) in {
            "3b": ("49.5", "18.2", "15.7", "10.0", "42.3", "200"),
            "7b": ("49.5", "23.4", "19.6", "19.8", "33.8", "103")}.items():
        lines = _plan_of_docs_command(command.replace("qwen2.5-3b.json", f"qwen2.5-{shape}.json"), capsys, monkeypatch)
        peaks = {l.split()[1]: l.split()[2] for l in lines if l.split()[1] in ("rollout", "update", "log-prob")}
        peaks["sync"] = next(l.split()[3] for l in lines if l.startswith("plan: weight sync"))
        assert peaks == {"rollout": rollout, "update": update, "log-prob": log_prob, "sync": sync}, shape
        assert f"plan: KV cache {kv} GiB holds {sequences} sequences" in "\n".join(lines)
        assert lines[-1] == f"plan: peak {rollout} GiB per GPU of 80.0 GiB: fits"
    assert ("49.5 GiB per GPU in the rollout (vLLM's 0.6 share: 5.7 GiB of weights and 42.3 GiB of KV cache, "
            "200 sequences of 6,144 tokens), 18.2 GiB in the update, 15.7 GiB in the log-prob passes and "
            "10.0 GiB in the weight sync") in readme
    assert "plans 49.5 / 23.4 / 19.6 / 19.8 GiB (KV cache 33.8 GiB, 103 sequences at once): it fits too" in readme
