"""Tiny offline models for the engine's tests, built with ``verl.utils.tiny_model`` alone (the
engine's tests do not import the method package)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from verl.utils.tiny_model import build_tiny_model, build_tokenizer

# Agent tags the rollout tests stop on and decode; single tokens in every test tokenizer.
AGENT_TAGS = ("<search>", "</search>", "<answer>", "</answer>", "<information>", "</information>", "<think>",
              "</think>")
REPO = Path(__file__).resolve().parents[2]
_WORDS = ("the", "capital", "of", "france", "is", "paris", "who", "wrote", "hamlet", "william", "shakespeare",
          "river", "flows", "through", "city", "mountain", "north", "born", "in", "year", "film", "directed",
          "by", "song", "album", "released", "team", "won", "cup", "first", "president", "country")
# A deterministic English-like corpus with the agent tags in context.
DEFAULT_TEXTS = [" ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(12)) + "?" for i in range(200)] + [
    f"<think> look up {w} </think>\n<search> {w} </search> <information>Doc 1: {w}</information> <answer> {w} </answer>"
    for w in _WORDS]


def tokenizer(texts: Sequence[str], vocab_size: int):
    """A BPE tokenizer trained on ``texts`` with the agent tags as single tokens."""
    return build_tokenizer(texts, vocab_size, added_tokens=AGENT_TAGS)


def model(out_dir, size: str = "tiny", texts: Sequence[str] = tuple(DEFAULT_TEXTS), seed: int = 0,
          vocab_size: int | None = None) -> str:
    """A random Qwen2 of preset ``size`` and its tokenizer in ``out_dir``; returns the folder."""
    return str(build_tiny_model(out_dir, size, list(texts), torch_seed=seed, vocab_size=vocab_size,
                                added_tokens=AGENT_TAGS))
