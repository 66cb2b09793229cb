"""verl/utils/tiny_model.py: the engine's offline model builder, without the method's corpora."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from verl.utils.tiny_model import SIZES, build_tiny_model, build_tokenizer

TEXTS = ["a small corpus for a small tokenizer", "with a few sentences in it", "and <tool> tags </tool>"] * 10


def test_added_tokens_are_single_non_special_tokens_only_when_asked():
    plain = build_tokenizer(TEXTS, 300)
    tagged = build_tokenizer(TEXTS, 300, added_tokens=("<tool>", "</tool>"))
    assert len(tagged.encode("<tool>", add_special_tokens=False)) == 1
    assert len(plain.encode("<tool>", add_special_tokens=False)) > 1
    text = "<tool> x </tool>"
    assert tagged.decode(tagged.encode(text, add_special_tokens=False), skip_special_tokens=True) == text


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = load_file(str(build_tiny_model(tmp_path / "a", "tiny", TEXTS, torch_seed=4, vocab_size=300) / "model.safetensors"))
    b = load_file(str(build_tiny_model(tmp_path / "b", "tiny", TEXTS, torch_seed=4, vocab_size=300) / "model.safetensors"))
    c = load_file(str(build_tiny_model(tmp_path / "c", "tiny", TEXTS, torch_seed=5, vocab_size=300) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)
    info = json.loads((tmp_path / "a" / "tiny_model.json").read_text())
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    # the preset's shape, the vocabulary padded to a multiple of 64
    assert cfg["num_hidden_layers"] == SIZES["tiny"].num_hidden_layers and cfg["vocab_size"] % 64 == 0
    assert info["size"] == "tiny" and info["added_tokens"] == [] and info["corpus_texts"] == len(TEXTS)
    with pytest.raises(ValueError, match="size must be one of"):
        build_tiny_model(tmp_path / "d", "huge", TEXTS)


def test_a_preset_can_set_its_head_size_and_tie_its_embeddings(tmp_path):
    """tiny-tied-4h: 4 heads of 32 dimensions (attention width 128, as tiny-mha's 2 x 64) and one matrix
    for the input embeddings and the output head."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path / "m", "tiny-tied-4h", TEXTS, torch_seed=0, vocab_size=300)
    cfg = json.loads((folder / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (4, 4, 32)
    assert cfg["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(folder)
    attn = model.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (128, 128) and tuple(attn.o_proj.weight.shape) == (128, 128)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # 2 layers of (4 x 128 x 128 attention + biases of q, k, v + 3 x 128 x 512 MLP + 2 norms of 128),
    # embeddings once (vocabulary 320 = 300 padded to 64), the final norm
    vocab = cfg["vocab_size"]
    per_layer = 4 * 128 * 128 + 3 * 128 + 3 * 128 * 512 + 2 * 128
    assert sum(p.numel() for p in model.parameters()) == 2 * per_layer + vocab * 128 + 128
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(input_ids=ids).logits.shape == (1, 4, vocab)

