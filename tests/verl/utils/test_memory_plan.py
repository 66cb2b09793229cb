"""The memory plan: terms worked out by hand for a small model, the fit line, the key it names."""

from __future__ import annotations

import json
import re

import pytest

from verl.utils import memory_plan as mp
from verl.utils.memory_plan import GIB, PlanSettings, plan_memory

# A small Qwen2-like model: H 64, I 128, 2 layers, 4 heads of 16, 2 kv heads, vocab 1000, untied.
SMALL = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
# By hand: q 64x64 + o 64x64 = 8192; k, v 64x32 each = 4096; q/k/v biases 64 + 32 + 32 = 128;
# MLP 3 x 64 x 128 = 24576; two norms 128 -> 37120 per layer. Embeddings and head 2 x 64000,
# final norm 64 -> 128064. Total 2 x 37120 + 128064 = 202304.
LAYER, ROOT, P = 37120, 128064, 202304


@pytest.fixture()
def shape():
    return mp.shape_from_config(SMALL, "small/config.json")


def test_parameter_count_by_hand_and_by_transformers(shape):
    assert (shape.layer_params, shape.root_params, shape.num_params) == (LAYER, ROOT, P)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in SMALL.items() if k != "model_type"}))
    assert sum(p.numel() for p in model.parameters()) == P


def cuda_settings(**changes) -> PlanSettings:
    base = PlanSettings(device="cuda", world_size=2, capacity_gib=4.0, compute_bytes=2, master_bytes=4, fsdp=True,
                        offload=False, ref=True, ref_offload=False, gradient_checkpointing=True, remove_padding=True,
                        update_tokens=100, update_logit_tokens=100, log_prob_tokens=200, log_prob_logit_tokens=200,
                        logits_chunk=50, rollout_engine="vllm", rollout_bytes=2, gpu_memory_utilization=0.5,
                        sleep_level=1, sync_bucket_mb=512)
    return mp.replace(base, **changes)


def test_phases_worked_by_hand(shape):
    phases = {ph.name: ph for ph in plan_memory(shape, cuda_settings())}
    runtime, residue = mp.RUNTIME_GIB * GIB, mp.ENGINE_RESIDUE_GIB * GIB
    # Resident on each of the 2 ranks: fp32 master P x 4 / 2, AdamW P x 8 / 2, bf16 reference P x 2 / 2.
    resident = {"actor weights": 404608, "optimizer states": 809216, "ref weights": 202304, "runtime": runtime}

    # Rollout: vLLM holds 0.5 x 4 GiB: bf16 weights P x 2 = 404608, the rest is KV cache.
    assert phases["rollout"].terms == {**resident, "rollout weights": 404608, "KV cache": 2 * GIB - 404608}

    # Log-prob: engine asleep (level 1: weights to the host); root + 2 layers gathered in bf16
    # (128064 + 2 x 37120) x 2 = 404608; activations 200 tokens x (4 x 64 + 3 x 128) x 2 = 256000;
    # logits 200 x 1000 x 2 = 400000 plus 2 fp32 chunks of 50 x 1000 x 4 = 400000.
    lp = phases["log-prob"]
    assert lp.terms == {**resident, "engine residue (asleep)": residue, "FSDP all-gathered params": 404608,
                        "activations": 256000, "logits": 800000}
    assert lp.host == {"rollout weights (asleep)": 404608}

    # Update: fp32 grads P x 4 / 2 = 404608; a layer's grads in bf16 + fp32: 37120 x 6 = 222720;
    # checkpointed activations: 2 layers x 100 x 64 x 2 = 25600 plus one layer's saved tensors
    # 100 x (10 x 64 + 2 x 32 + 4 x 128) x 2 = 243200; logits and their gradient 2 x 100 x 1000 x 2
    # = 400000 plus 3 fp32 chunks 3 x 50 x 1000 x 4 = 600000.
    assert phases["update"].terms == {**resident, "engine residue (asleep)": residue, "grads": 404608,
                                      "FSDP all-gathered params": 404608, "FSDP unsharded layer grads": 222720,
                                      "activations": 268800, "logits": 1000000}

    # Weight sync: the engine's weights awake again; the bucket is capped by the model (404608 bytes
    # in bf16) plus the largest tensor (the 64000-parameter embedding) in fp32 and bf16: 384000.
    assert phases["weight sync"].terms == {**resident, "rollout weights": 404608, "engine residue (asleep)": residue,
                                           "sync bucket + largest tensor": 404608 + 384000}
    peak = runtime + 404608 + 809216 + 202304 + 2 * GIB
    assert mp.peak_of(list(phases.values()))[0] == pytest.approx(peak)


def test_offload_sleep_levels_and_checkpointing(shape):
    ph = {p.name: p for p in plan_memory(shape, cuda_settings(offload=True, ref_offload=True, sleep_level=2))}
    up = ph["update"]
    # Offload: weights, optimizer states, grads and the optimizer step's temporary live on the host;
    # level 2 drops the engine's weights (no host copy).
    assert up.host == {"actor weights": 404608, "optimizer states": 809216, "ref weights": 202304, "grads": 404608,
                       "optimizer step temporary": 404608}
    assert not {"actor weights", "optimizer states", "grads"} & set(up.terms)
    text, _ = mp.render_plan(shape, cuda_settings(offload=True, ranks_per_node=2, capacity_gib=4.0))
    host = 404608 + 809216 + 404608 + 404608 + 404608  # update: + level-1 host copy of the engine's weights
    assert f"up to {host / GIB:.1f} GiB per rank, {2 * host / GIB:.1f} GiB per node of 2" in text
    # Awake all step: the engine's KV cache stays in the training phases.
    awake = {p.name: p for p in plan_memory(shape, cuda_settings(sleep_level=0))}
    assert awake["update"].terms["KV cache (engine awake)"] == 2 * GIB - 404608
    assert awake["update"].terms["rollout weights"] == 404608
    # No checkpointing: every layer's saved tensors, 2 x 243200.
    full = {p.name: p for p in plan_memory(shape, cuda_settings(gradient_checkpointing=False))}
    assert full["update"].terms["activations"] == 2 * 243200


def test_cpu_single_process_without_fsdp(shape):
    s = cuda_settings(device="cpu", world_size=1, compute_bytes=4, master_bytes=4, fsdp=False, rollout_engine="hf",
                      rollout_bytes=4, sleep_level=0, rollout_sequences=3, max_sequence_len=10, logits_chunk=1024)
    ph = {p.name: p for p in plan_memory(shape, s)}
    # No runtime term, no gathers; hf generates with the actor itself: KV cache of 3 rows x 10
    # tokens x 2 (k, v) x 2 layers x 32 x 4 bytes = 15360, and 3 rows of fp32 logits 12000.
    assert ph["rollout"].terms == {"actor weights": P * 4, "optimizer states": P * 8, "ref weights": P * 4,
                                   "rollout weights": 0.0, "KV cache": 15360, "logits": 12000}
    # Update, fp32: grads P x 4; logits 2 x 100 x 1000 x 4 + 3 x 100 x 1000 x 4 (chunk > tokens).
    assert ph["update"].terms["grads"] == P * 4
    assert ph["update"].terms["logits"] == 800000 + 1200000
    assert "FSDP all-gathered params" not in ph["log-prob"].terms


def test_verdict_line_and_suggestions(shape):
    text, ok = mp.render_plan(shape, cuda_settings(capacity_gib=4.0), "small")
    assert ok and text.splitlines()[-1] == f"plan: peak {(mp.RUNTIME_GIB * GIB + 1416128 + 2 * GIB) / GIB:.1f} GiB per GPU of 4.0 GiB: fits"
    assert len([l for l in text.splitlines() if l.startswith("plan: peak ")]) == 1
    # A 4,000-token log-prob micro-batch on a 3.6 GiB GPU: the engine sleeps, the logits decide.
    s = cuda_settings(capacity_gib=3.6, gpu_memory_utilization=0.2, log_prob_tokens=400000, log_prob_logit_tokens=400000)
    text, ok = mp.render_plan(shape, s)
    assert not ok
    assert re.fullmatch(r"plan: peak [0-9.]+ GiB per GPU of 3\.6 GiB: does not fit: change "
                        r"actor_rollout_ref\.rollout\.log_prob_micro_batch_size_per_gpu", text.splitlines()[-1])
    # The engine awake during training on a GPU it half fills: free_cache_engine helps most.
    s = cuda_settings(capacity_gib=4.0, gpu_memory_utilization=0.55, sleep_level=0, update_tokens=100000,
                      update_logit_tokens=100000, logits_chunk=1)
    assert mp.suggest_key(shape, s) == "actor_rollout_ref.rollout.free_cache_engine"


def test_too_large_for_the_rollout_engine_names_model_path():
    huge = dict(SMALL, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=152064)
    shape = mp.shape_from_config(huge)
    text, ok = mp.render_plan(shape, cuda_settings(world_size=1, capacity_gib=80.0, gpu_memory_utilization=0.6,
                                                   max_sequence_len=6144))
    assert not ok and text.splitlines()[-1].endswith("does not fit: change actor_rollout_ref.model.path")
    assert "vLLM would refuse to start" in text


def test_bad_config_names_the_file_and_key(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({k: v for k, v in SMALL.items() if k != "vocab_size"}))
    with pytest.raises(mp.PlanError, match=r"config\.json: vocab_size must be a positive integer"):
        mp.read_model_shape(str(tmp_path))
    with pytest.raises(mp.PlanError, match="model folder with config.json"):
        mp.read_model_shape(str(tmp_path / "nowhere"))


def test_the_plan_chunks_logits_as_the_code_does():
    from verl.utils.chunked_logprob import DEFAULT_CHUNK_SIZE

    assert mp.DEFAULT_LOGITS_CHUNK == DEFAULT_CHUNK_SIZE
