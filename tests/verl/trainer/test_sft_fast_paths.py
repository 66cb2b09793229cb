"""SFT trainer's cheaper forward paths: the output head on response positions only, a shared prompt
prefix run once, and the autocast dtype chosen by hardware. Each path is checked against the plain
forward (full logits, every row run on its own) in float64, loss and every gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from verl.trainer.sft_trainer import (cpu_has_native_bf16, resolve_autocast_dtype, response_loss,
                                      shared_prefix_length, sft_loss)

PAD = 0


def _model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, max_position_embeddings=128, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(cfg).double()


def _batch() -> dict[str, torch.Tensor]:
    """Three right-padded rows: a 6-token shared prefix, then a row-specific prompt and response."""
    prefix = [5, 6, 7, 8, 9, 10]
    rows = [(prefix + [11, 12], [20, 21, 22]), (prefix + [13], [23, 24]), (prefix + [14, 15, 16], [25])]
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((3, width), PAD)
    attn, loss, pos = torch.zeros_like(ids), torch.zeros_like(ids), torch.zeros_like(ids)
    for i, (p, r) in enumerate(rows):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        attn[i, :n] = 1
        loss[i, len(p):n] = 1
        pos[i, :n] = torch.arange(n)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss, "position_ids": pos}


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _reference(model, b) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each row on its own, unpadded, full logits: no padding or batching effect at all."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(b["input_ids"])):
        n = int(b["attention_mask"][i].sum())
        logits = model(input_ids=b["input_ids"][i:i + 1, :n]).logits
        loss, _ = sft_loss(logits, b["input_ids"][i:i + 1, :n], b["loss_mask"][i:i + 1, :n])
        total = total + loss
    total.backward()
    return total.detach(), _grads(model)


def test_shared_prefix_length_hand_worked():
    b = _batch()
    # rows share tokens 0..5; the first response token is at position 7 (row 1: prefix + [13] then 23),
    # so position 6 must produce a hidden state: P = min(6, 7 - 1) = 6
    assert shared_prefix_length(b["input_ids"], b["attention_mask"], b["loss_mask"]) == 6
    # a response token right after the shared part caps P one before it
    loss = b["loss_mask"].clone()
    loss[1, 4:] = 1
    assert shared_prefix_length(b["input_ids"], b["attention_mask"], loss) == 3
    # rows that differ at the first token share nothing
    ids = b["input_ids"].clone()
    ids[2, 0] = 99
    assert shared_prefix_length(ids, b["attention_mask"], b["loss_mask"]) == 0


@pytest.mark.parametrize("hole", [False, True])
def test_response_head_and_shared_prefix_equal_the_plain_forward(hole):
    """hole: a response token inside row 0's response without loss (data.loss_exclude_key)."""
    model = _model()
    b = _batch()
    if hole:
        b["loss_mask"][0, 9] = 0  # row 0's response is at positions 8..10
    ref_loss, ref_grads = _reference(model, b)
    # hand check of the count: 3 + 2 + 1 response tokens, less the hole
    expected = 5 if hole else 6
    assert int(b["loss_mask"].sum()) == expected

    inputs = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"])
    hidden = model.get_decoder()(**inputs).last_hidden_state
    loss, n = response_loss(hidden, model.lm_head, b["input_ids"], b["loss_mask"])
    loss.backward()
    assert n == expected
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-10, atol=1e-10)
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-9, atol=1e-10, msg=name)

    from verl.trainer.sft_trainer import SFTTrainer

    trainer = SFTTrainer.__new__(SFTTrainer)  # only the forward path under test, no data or optimizer
    trainer.model = model
    loss, n = SFTTrainer._forward_shared_prefix(trainer, b, 6)
    loss.backward()
    assert n == expected
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-10, atol=1e-10)
    # measured agreement ~3e-8 relative (the cached path computes some attention terms in another
    # order and precision); a wrong mask or a missing row would be off by orders of magnitude more
    for name, g in _grads(model).items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-6, atol=1e-6, msg=name)


def test_autocast_auto_follows_the_cpu_flags(tmp_path):
    amx, avx2 = tmp_path / "amx", tmp_path / "avx2"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n")
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert cpu_has_native_bf16(str(amx)) and not cpu_has_native_bf16(str(avx2))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))
    cpu = torch.device("cpu")
    assert resolve_autocast_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert resolve_autocast_dtype(None, cpu) is None
    assert resolve_autocast_dtype("bfloat16", cpu) is torch.bfloat16
    import pytest

    with pytest.raises(ValueError, match="model.autocast_dtype"):
        resolve_autocast_dtype("fp8", cpu)
