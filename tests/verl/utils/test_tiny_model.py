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
