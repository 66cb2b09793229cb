"""Build small random Qwen2 models and self-trained tokenizers, fully offline.

Tests, CI and the CPU demo need a causal LM that loads in transformers and in vLLM without any
download. This module trains a byte-level BPE tokenizer on local text, wraps it as a
``PreTrainedTokenizerFast`` with a ChatML chat template, and saves it next to a randomly
initialised ``Qwen2ForCausalLM``.

Tokenizer (byte-level BPE with the NFC normaliser and pre-tokeniser of transformers' Qwen2
tokenizer, so it encodes the same whichever class loads the folder):
- special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos);
- the rollout tags (``SEARCH_TAGS``) are added as single, *non-special* tokens, so they survive
  ``decode(..., skip_special_tokens=True)``; NFC text round-trips exactly;
- chat template: ChatML (``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then
  ``<|im_start|>assistant\\n`` for the generation prompt). Unlike Qwen's own template it adds no
  default system message, which keeps prompts short for tiny models.

Model: untied input and output embeddings except in the ``tiny-tied`` preset (one matrix for
both, as Qwen2.5 0.5B/3B), head_dim 64, vocabulary padded to a multiple of 64, float32 weights.

Shapes of real models (``--shape configs/models/qwen2.5-3b.json``): a JSON file of Qwen2 config
fields (architecture numbers only) gives the layers, widths and vocabulary of the model; the
tokenizer is trained locally as above, so it has fewer tokens than the shape's vocabulary (151,936
for Qwen2.5), and the embedding matrix keeps the shape's row count, as a real Qwen checkpoint has
more embedding rows than tokenizer entries. Weights are random, bfloat16 by default (``--dtype``),
built on the GPU when one is visible. Such a folder is what a GPU smoke run or a memory
measurement needs: a model with the real shapes and no download.

Command line (prints each step)::

    python -m zerosearch.tiny --out DIR --size tiny [--kind policy|simulation]
        [--corpus-file F ...] [--data-dir data] [--vocab-size N] [--seed S]
    python -m zerosearch.tiny --out DIR --shape configs/models/qwen2.5-0.5b.json [--dtype bfloat16] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from zerosearch import prompts
from zerosearch.jsonl import iter_jsonl

logger = logging.getLogger(__name__)

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, EOS_TOKEN)
SEARCH_TAGS = (
    "<search>",
    "</search>",
    "<answer>",
    "</answer>",
    "<information>",
    "</information>",
    "<think>",
    "</think>",
)
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
VOCAB_MULTIPLE = 64
HEAD_DIM = 64
KINDS = ("policy", "simulation")


@dataclass(frozen=True)
class ModelShape:
    """Architecture of one size preset (head_dim is always 64)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    default_vocab_size: int
    max_position_embeddings: int = 4096
    # One matrix for the input embeddings and the output head (as Qwen2.5 0.5B-3B have).
    tie_word_embeddings: bool = False


# Parameter counts with the default vocabulary (embeddings and head included):
# tiny ~1.0M, tiny-mha ~1.0M, tiny-tied ~0.8M, small ~4.2M, 100m ~102M. tiny-mha is tiny with a
# key/value head per attention head (tiny shares one): the miniature's policy learns to read a
# document several times sooner with it (teacher-forced held-out reading after 400 SFT steps: 35
# vs 8 of 80), so the demo uses it. tiny-tied is tiny-mha with tied input and output embeddings:
# it learns to copy a name from the question into its query far sooner (after 1600 SFT steps on
# held-out questions: 171 vs 72 of 200) but reads almost no city out of a document (docs/demo.md).
SIZES: dict[str, ModelShape] = {
    "tiny": ModelShape(128, 512, 2, 2, 1, 2048),
    "tiny-mha": ModelShape(128, 512, 2, 2, 2, 2048),
    "tiny-tied": ModelShape(128, 512, 2, 2, 2, 2048, tie_word_embeddings=True),
    "small": ModelShape(256, 768, 4, 4, 2, 2048),
    "100m": ModelShape(768, 2560, 12, 12, 4, 8192),
}


def _default_data_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data"


# ----------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------


def _jsonl_strings(path: Path) -> list[str]:
    """Every string value (and every string inside a list value) of each JSON line."""
    out: list[str] = []
    for _, obj in iter_jsonl(path):
        for value in obj.values():
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, list):
                out.extend(v for v in value if isinstance(v, str))
    return out


def read_corpus_file(path: str | Path) -> list[str]:
    """Texts of one corpus file: ``.jsonl`` -> the string fields of each object; else one text per
    non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.suffix == ".jsonl":
        return _jsonl_strings(path)
    with path.open(encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def default_corpus_texts(data_dir: str | Path | None = None, kind: str = "policy") -> list[str]:
    """The default tokenizer corpus: QA questions and answers (``data_dir/qa/*.jsonl``), the
    Wikipedia paragraphs (``data_dir/corpus/wiki_paragraphs.jsonl``) and, per question, the text
    a model of this ``kind`` sees: policy -> the instruction prompt followed by a tagged
    trajectory; simulation -> the useful/noisy simulation prompts of every mode and ``Doc i:``
    lines built from paragraphs."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    data_dir = Path(data_dir) if data_dir is not None else _default_data_dir()
    qa_files = sorted((data_dir / "qa").glob("*.jsonl"))
    paragraphs = data_dir / "corpus" / "wiki_paragraphs.jsonl"
    if not qa_files or not paragraphs.is_file():
        raise FileNotFoundError(
            f"default corpus not found under {data_dir} (need qa/*.jsonl and corpus/wiki_paragraphs.jsonl); "
            "pass --data-dir or --corpus-file"
        )
    texts: list[str] = []
    questions: list[tuple[str, str]] = []
    for path in qa_files:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                q, golds = row["question"], row["golden_answers"]
                texts.append(q)
                texts.extend(golds)
                questions.append((prompts.preprocess_question(q), golds[0] if golds else ""))
    docs: list[str] = []
    with paragraphs.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            texts.append(row["title"])
            texts.append(row["text"])
            docs.append(row["text"])
    for i, (q, a) in enumerate(questions):
        doc_lines = "\n".join(f"Doc {k + 1}: {docs[(5 * i + k) % len(docs)][:200]}" for k in range(5))
        if kind == "policy":
            texts.append(
                prompts.make_prefix(q)
                + f"<think> </think>\n<search> {q} </search>"
                + prompts.format_observation(doc_lines)
                + f"<answer> {a} </answer>"
            )
        else:
            for mode in prompts.SIMULATION_MODES:
                for noisy in (False, True):
                    texts.append(prompts.build_simulation_prompt(mode, q, q, a, noisy))
            texts.append(doc_lines)
    return texts


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048, model_max_length: int = 4096):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    ``vocab_size`` is the size of the BPE vocabulary (special tokens included); the 8 search tags
    are added on top. The result is deterministic for the same texts in the same order.
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
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in SEARCH_TAGS])
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
        head_dim=HEAD_DIM,
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


def build_shaped_model(
    out_dir: str | Path,
    shape_path: str | Path,
    corpus_texts: Sequence[str] | None = None,
    seed: int = 0,
    bpe_vocab_size: int = SHAPE_BPE_VOCAB,
    dtype: str = "bfloat16",
    kind: str = "policy",
    data_dir: str | Path | None = None,
) -> Path:
    """A randomly initialised Qwen2 of a real model's shape plus a locally trained tokenizer in ``out_dir``.

    The embedding matrix keeps the shape's ``vocab_size`` rows (more than the tokenizer's tokens).
    Writes ``tiny_model.json`` describing the build. Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    if dtype not in SHAPE_DTYPES:
        raise ValueError(f"dtype must be one of {SHAPE_DTYPES}, got {dtype!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = load_shape(shape_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if corpus_texts is None:
        corpus_texts = default_corpus_texts(data_dir, kind)
    tokenizer = build_tokenizer(corpus_texts, bpe_vocab_size, model_max_length=shape["max_position_embeddings"])
    if len(tokenizer) > shape["vocab_size"]:
        raise ValueError(f"{shape_path}: vocab_size {shape['vocab_size']} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens; lower --vocab-size")
    config = shape_config(shape, tokenizer.eos_token_id, tokenizer.pad_token_id, dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("tokenizer has %d tokens; building a random %s on %s with %d embedding rows", len(tokenizer),
                Path(shape_path).name, device, shape["vocab_size"])
    torch_dtype = getattr(torch, dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * len(KINDS) + KINDS.index(kind))
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch_dtype)
        try:
            with torch.device(device):
                model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
                                               pad_token_id=tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Qwen2ForCausalLM of shape %s: %.3fB parameters", Path(shape_path).name, n_params / 1e9)
    model.to("cpu").save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {"shape_file": str(shape_path), "kind": kind, "seed": seed, "dtype": dtype, "bpe_vocab_size": bpe_vocab_size,
            "tokenizer_len": len(tokenizer), "model_vocab_size": shape["vocab_size"], "num_parameters": n_params,
            "corpus_texts": len(corpus_texts), "search_tags": list(SEARCH_TAGS)}
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("saved model and tokenizer to %s", out)
    return out


def build_tiny_model(
    out_dir: str | Path,
    size: str = "tiny",
    corpus_texts: Sequence[str] | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
    kind: str = "policy",
    data_dir: str | Path | None = None,
) -> Path:
    """Build tokenizer + random Qwen2 model and ``save_pretrained`` both into ``out_dir``.

    ``corpus_texts`` defaults to ``default_corpus_texts(data_dir, kind)``; ``vocab_size`` to the
    size preset's. The weights depend only on (``seed``, ``kind``, size, vocabulary), so the
    same call gives the same files. Also writes ``tiny_model.json`` describing the build.
    Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    shape = SIZES[size]
    vocab_size = shape.default_vocab_size if vocab_size is None else vocab_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if corpus_texts is None:
        logger.info("reading the default %s corpus from %s", kind, data_dir or _default_data_dir())
        corpus_texts = default_corpus_texts(data_dir, kind)
    logger.info("training a byte-level BPE tokenizer (vocab %d) on %d texts", vocab_size, len(corpus_texts))
    tokenizer = build_tokenizer(corpus_texts, vocab_size, model_max_length=shape.max_position_embeddings)
    model_vocab = padded_vocab_size(len(tokenizer))
    logger.info("tokenizer has %d tokens; model vocabulary padded to %d", len(tokenizer), model_vocab)

    config = qwen2_config(size, model_vocab, tokenizer.eos_token_id, tokenizer.pad_token_id)
    # A private RNG stream: the caller's global torch RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * len(KINDS) + KINDS.index(kind))
        model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Qwen2ForCausalLM %s: %d layers, hidden %d, %.2fM parameters", size, config.num_hidden_layers,
                config.hidden_size, n_params / 1e6)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        "size": size,
        "kind": kind,
        "seed": seed,
        "bpe_vocab_size": vocab_size,
        "tokenizer_len": len(tokenizer),
        "model_vocab_size": model_vocab,
        "num_parameters": n_params,
        "corpus_texts": len(corpus_texts),
        "shape": asdict(shape),
        "search_tags": list(SEARCH_TAGS),
    }
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    logger.info("saved model and tokenizer to %s", out)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--size", choices=sorted(SIZES), default=None, help="architecture preset (default tiny)")
    parser.add_argument("--shape", default=None,
                        help="a real model's shape instead of --size: a JSON file of Qwen2 config fields "
                             "(configs/models/qwen2.5-0.5b.json, ...)")
    parser.add_argument("--dtype", choices=SHAPE_DTYPES, default=None,
                        help="weights dtype of a --shape build (default bfloat16; --size builds are float32)")
    parser.add_argument("--kind", choices=KINDS, default="policy", help="which prompts go into the default corpus")
    parser.add_argument("--corpus-file", nargs="+", default=None,
                        help="tokenizer corpus: .jsonl (string fields) or text (one text per line); "
                             "default: the QA and paragraph files under --data-dir")
    parser.add_argument("--data-dir", default=None, help="folder with qa/ and corpus/ (default: the repository's data/)")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help=f"BPE vocabulary size (default: per size; {SHAPE_BPE_VOCAB} with --shape)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    texts = None
    if args.corpus_file:
        texts = []
        for path in args.corpus_file:
            file_texts = read_corpus_file(path)
            logger.info("read %d texts from %s", len(file_texts), path)
            texts.extend(file_texts)
    if args.shape and args.size:
        parser.error("give --size or --shape, not both")
    if args.dtype and not args.shape:
        parser.error("--dtype applies to --shape builds only (--size presets are float32)")
    if args.shape:
        return build_shaped_model(args.out, args.shape, texts, args.seed, args.vocab_size or SHAPE_BPE_VOCAB,
                                  args.dtype or "bfloat16", args.kind, args.data_dir)
    return build_tiny_model(args.out, args.size or "tiny", texts, args.seed, args.vocab_size, args.kind, args.data_dir)


if __name__ == "__main__":
    main()
