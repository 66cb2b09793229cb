"""A character-level tokenizer for agent tests: one id per printable character, built offline."""

from __future__ import annotations

import string
from typing import Sequence

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast


def char_tokenizer(tags: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Ids 0-2 are ``<pad>``, ``<eos>``, ``<unk>``, then one id per printable character; each of
    ``tags`` (e.g. ``<search>``) is added as one ordinary (non-special) token after them."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for ch in sorted(set(string.printable)):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>",
                                  clean_up_tokenization_spaces=False)
    if tags:
        tok.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in tags])
    return tok
