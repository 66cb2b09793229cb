"""Small random Qwen2 models and self-trained tokenizers, built offline.

Tests and CPU runs need a causal LM that loads in transformers and in vLLM without any download.
This module trains a byte-level BPE tokenizer on given texts, wraps it as a
``PreTrainedTokenizerFast`` with a ChatML chat template, and saves it next to a randomly
initialised ``Qwen2ForCausalLM``. It knows nothing about any method: the texts and the extra
tokens come from the caller (``zerosearch/miniature/tiny.py`` adds the search tags and its corpora).

Tokenizer (byte-level BPE with the NFC normaliser and pre-tokeniser of transformers' Qwen2
tokenizer, so it encodes the same whichever class loads the folder):
- special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos);
- ``added_tokens`` become single, *non-special* tokens, so they survive
  ``decode(..., skip_special_tokens=True)``; NFC text round-trips exactly;
- chat template: ChatML (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
  ``<|im_start|>assistant\\n`` for the generation prompt), with no default system message.

Model: a size preset (``SIZES``): untied input and output embeddings except in the ``tiny-tied``
presets, head_dim 64 unless the preset says otherwise, vocabulary padded to a multiple of 64, float32 weights. Or a real model's shape
(``build_shaped_model``, a JSON file of Qwen2 config fields such as ``configs/models/qwen2.5-3b.json``):
the embedding matrix keeps the shape's row count, weights random, bfloat16 by default, built on
the GPU when one is visible.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, EOS_TOKEN)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
VOCAB_MULTIPLE = 64
HEAD_DIM = 64
@dataclass(frozen=True)
class ModelShape:
    """Architecture of one size preset."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    default_vocab_size: int
    max_position_embeddings: int = 4096
    # One matrix for the input embeddings and the output head (as Qwen2.5 0.5B-3B have).
    tie_word_embeddings: bool = False
    head_dim: int = HEAD_DIM


# Parameter counts with the default vocabulary (embeddings and head included):
# tiny ~1.0M, tiny-mha ~1.0M, tiny-tied ~0.8M, tiny-tied-4h ~0.8M, tiny-deep ~1.5M, small ~4.2M, 100m ~102M. tiny-mha is tiny with a
# key/value head per attention head (tiny shares one): the miniature's policy learns to read a
# document several times sooner with it (teacher-forced held-out reading after 400 SFT steps: 35
# vs 8 of 80), so the demo uses it. tiny-tied is tiny-mha with tied input and output embeddings:
# it learns to copy a name from the question into its query far sooner (after 1600 SFT steps on
# held-out questions: 171 vs 72 of 200) but reads almost no city out of a document (docs/demo.md).
# tiny-deep (~1.5M: 4 layers of 4 heads, ~1.8x the step time of tiny-mha) is the first preset that
# learned both skills on seeds 0 and 2 in 2400 SFT steps at lr 2.5e-3 (docs/demo.md). tiny-tied-4h is
# tiny-tied with 4 heads of 32 dimensions (the same attention width): it copies the question's name
# into its query on seeds 0, 1 and 2 by step 800, and reads cities on seeds 1 and 2 (docs/demo.md).
SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(128, 512, 2, 2, 1, 2048),
    "tiny-mha": ModelShape(128, 512, 2, 2, 2, 2048),
    "tiny-tied": ModelShape(128, 512, 2, 2, 2, 2048, tie_word_embeddings=True),
    "tiny-deep": ModelShape(128, 512, 4, 4, 4, 2048),
    "tiny-tied-4h": ModelShape(128, 512, 2, 4, 4, 2048, tie_word_embeddings=True, head_dim=32),
    "small": ModelShape(256, 768, 4, 4, 2, 2048),
    "100m": ModelShape(768, 2560, 12, 12, 4, 8192),
}



# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048, model_max_length: int = 4096,
                    added_tokens: Sequence[str] = ()):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    ``vocab_size`` is the size of the BPE vocabulary (special tokens included); ``added_tokens``
    (e.g. an agent's tags) are added on top as single, non-special tokens. The result is
    deterministic for the same texts in the same order.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    texts = list(texts)
    if not texts:
        raise ValueError("build_tokenizer: texts is empty; the tokenizer needs a corpus to train on")
    min_vocab = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_vocab:
        raise ValueError(f"build_tokenizer: vocab_size must be >= {min_vocab} (256 bytes + specials), got {vocab_size}")
    # The same normaliser / pre-tokeniser / decoder as transformers' Qwen2Tokenizer, which is the
    # class AutoTokenizer (and so vLLM) picks for a qwen2 model folder: the saved tokenizer
    # encodes identically whichever class loads it.
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    # Non-special and not normalised: matched verbatim, kept by skip_special_tokens decoding.
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in added_tokens])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        model_max_length=model_max_length,
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def padded_vocab_size(n_tokens: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n_tokens``."""
    return int(math.ceil(n_tokens / multiple) * multiple)


def qwen2_config(size: str, vocab_size: int, eos_token_id: int, pad_token_id: int):
    """The ``Qwen2Config`` of a size preset with the given (already padded) vocabulary."""
    from transformers import Qwen2Config

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    shape = SIZES[size]
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=shape.tie_word_embeddings,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        dtype="float32",
    )


# Fields a shape file must give (Qwen2Config names); anything else in the file is refused.
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "tie_word_embeddings", "max_position_embeddings",
                "rope_theta", "rms_norm_eps")
SHAPE_OPTIONAL = ("architectures", "model_type", "hidden_act", "head_dim")
SHAPE_BPE_VOCAB = 8192
SHAPE_DTYPES = ("bfloat16", "float16", "float32")


def load_shape(path: str | Path) -> dict:
    """The Qwen2 config fields of a shape file (``configs/models/*.json``), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"shape file {path} does not exist (expected e.g. configs/models/qwen2.5-0.5b.json)")
    try:
        shape = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(shape, dict):
        raise ValueError(f"{path}: expected a JSON object of Qwen2 config fields")
    missing = [k for k in SHAPE_FIELDS if k not in shape]
    unknown = sorted(set(shape) - set(SHAPE_FIELDS) - set(SHAPE_OPTIONAL))
    if missing or unknown:
        raise ValueError(f"{path}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown fields {', '.join(unknown)}"] if unknown else [])))
    if shape.get("model_type", "qwen2") != "qwen2" or shape.get("architectures", ["Qwen2ForCausalLM"]) != ["Qwen2ForCausalLM"]:
        raise ValueError(f"{path}: only Qwen2ForCausalLM shapes are supported (model_type qwen2)")
    for key in SHAPE_FIELDS:
        value = shape[key]
        if key == "tie_word_embeddings":
            ok = isinstance(value, bool)
        elif key in ("rope_theta", "rms_norm_eps"):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if not ok:
            raise ValueError(f"{path}: {key} has a bad value {value!r}")
    if shape["num_attention_heads"] % shape["num_key_value_heads"]:
        raise ValueError(f"{path}: num_attention_heads must be a multiple of num_key_value_heads")
    return shape


def shape_config(shape: dict, eos_token_id: int, pad_token_id: int, dtype: str = "bfloat16"):
    """The ``Qwen2Config`` of a shape (``load_shape``) with the tokenizer's special ids."""
    from transformers import Qwen2Config

    fields = {k: shape[k] for k in SHAPE_FIELDS}
    if "head_dim" in shape:
        fields["head_dim"] = shape["head_dim"]
    return Qwen2Config(**fields, hidden_act=shape.get("hidden_act", "silu"), eos_token_id=eos_token_id,
                       pad_token_id=pad_token_id, bos_token_id=None, dtype=dtype)


def _random_model(config, torch_seed: int, dtype: str, device: str):
    """``Qwen2ForCausalLM(config)`` initialised from a private RNG stream (the caller's global torch
    RNG state is left untouched), in ``dtype`` on ``device``."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch_dtype = getattr(torch, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch_dtype)
        try:
            with torch.device(device):
                model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    return model.to(torch_dtype)


def _save(model, tokenizer, out: Path, info: dict[str, Any]) -> Path:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
                                               pad_token_id=tokenizer.pad_token_id)
    model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("saved model and tokenizer to %s", out)
    return out


def build_tiny_model(out_dir: str | Path, size: str, corpus_texts: Sequence[str], torch_seed: int = 0,
                     vocab_size: int | None = None, added_tokens: Sequence[str] = (),
                     info: dict[str, Any] | None = None) -> Path:
    """Tokenizer trained on ``corpus_texts`` + a random Qwen2 of preset ``size``, saved in ``out_dir``.

    ``vocab_size`` defaults to the preset's. The weights depend only on (``torch_seed``, size,
    vocabulary). Also writes ``tiny_model.json`` describing the build (``info`` merged in).
    Returns ``out_dir``.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    shape = SIZES[size]
    vocab_size = shape.default_vocab_size if vocab_size is None else vocab_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("training a byte-level BPE tokenizer (vocab %d) on %d texts", vocab_size, len(corpus_texts))
    tokenizer = build_tokenizer(corpus_texts, vocab_size, shape.max_position_embeddings, added_tokens)
    model_vocab = padded_vocab_size(len(tokenizer))
    logger.info("tokenizer has %d tokens; model vocabulary padded to %d", len(tokenizer), model_vocab)
    config = qwen2_config(size, model_vocab, tokenizer.eos_token_id, tokenizer.pad_token_id)
    model = _random_model(config, torch_seed, "float32", "cpu")
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Qwen2ForCausalLM %s: %d layers, hidden %d, %.2fM parameters", size, config.num_hidden_layers,
                config.hidden_size, n_params / 1e6)
    return _save(model, tokenizer, out, {
        "size": size, **(info or {}), "bpe_vocab_size": vocab_size, "tokenizer_len": len(tokenizer),
        "model_vocab_size": model_vocab, "num_parameters": n_params, "corpus_texts": len(corpus_texts),
        "shape": asdict(shape), "added_tokens": list(added_tokens)})


def build_shaped_model(out_dir: str | Path, shape_path: str | Path, corpus_texts: Sequence[str],
                       torch_seed: int = 0, bpe_vocab_size: int = SHAPE_BPE_VOCAB, dtype: str = "bfloat16",
                       added_tokens: Sequence[str] = (), info: dict[str, Any] | None = None) -> Path:
    """A randomly initialised Qwen2 of a real model's shape plus a tokenizer trained on ``corpus_texts``.

    The embedding matrix keeps the shape's ``vocab_size`` rows (more than the tokenizer's tokens).
    Writes ``tiny_model.json`` describing the build (``info`` merged in). Returns ``out_dir``.
    """
    import torch

    if dtype not in SHAPE_DTYPES:
        raise ValueError(f"dtype must be one of {SHAPE_DTYPES}, got {dtype!r}")
    shape = load_shape(shape_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus_texts, bpe_vocab_size, shape["max_position_embeddings"], added_tokens)
    if len(tokenizer) > shape["vocab_size"]:
        raise ValueError(f"{shape_path}: vocab_size {shape['vocab_size']} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens; lower --vocab-size")
    config = shape_config(shape, tokenizer.eos_token_id, tokenizer.pad_token_id, dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("tokenizer has %d tokens; building a random %s on %s with %d embedding rows", len(tokenizer),
                Path(shape_path).name, device, shape["vocab_size"])
    model = _random_model(config, torch_seed, dtype, device)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Qwen2ForCausalLM of shape %s: %.3fB parameters", Path(shape_path).name, n_params / 1e9)
    return _save(model, tokenizer, out, {
        "shape_file": str(shape_path), **(info or {}), "dtype": dtype, "bpe_vocab_size": bpe_vocab_size,
        "tokenizer_len": len(tokenizer), "model_vocab_size": shape["vocab_size"], "num_parameters": n_params,
        "corpus_texts": len(corpus_texts), "added_tokens": list(added_tokens)})
