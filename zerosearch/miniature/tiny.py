"""Tiny offline models for ZeroSearch: the engine's builder (``verl/utils/tiny_model.py``) with
the search tags as tokens and a tokenizer corpus of what a policy or simulation model sees.

Tests, CI and the CPU demo need a causal LM that loads in transformers and in vLLM without any
download. ``verl.utils.tiny_model`` trains a byte-level BPE tokenizer on given texts, wraps it as a
``PreTrainedTokenizerFast`` with a ChatML chat template, and saves it next to a randomly
initialised ``Qwen2ForCausalLM``; this module chooses the texts (``default_corpus_texts``) and adds
the rollout tags.

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

    python -m zerosearch.miniature.tiny --out DIR --size tiny [--kind policy|simulation]
        [--corpus-file F ...] [--data-dir data] [--vocab-size N] [--seed S]
    python -m zerosearch.miniature.tiny --out DIR --shape configs/models/qwen2.5-0.5b.json [--dtype bfloat16] ...
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterable, Sequence

from verl.utils import tiny_model
from verl.utils.tiny_model import (  # noqa: F401 (the presets and shape helpers, used through this module too)
    CHATML_TEMPLATE,
    EOS_TOKEN,
    IM_START,
    PAD_TOKEN,
    SHAPE_BPE_VOCAB,
    SHAPE_DTYPES,
    SIZES,
    SPECIAL_TOKENS,
    ModelShape,
    load_shape,
    padded_vocab_size,
    qwen2_config,
    shape_config,
)
from zerosearch import prompts
from zerosearch.data.jsonl import iter_jsonl

logger = logging.getLogger(__name__)

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
KINDS = ("policy", "simulation")


def _default_data_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "data"


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
# Builders with the search tags and the default corpora
# ----------------------------------------------------------------------------------------------


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048, model_max_length: int = 4096):
    """``verl.utils.tiny_model.build_tokenizer`` with the 8 search tags added as single tokens."""
    return tiny_model.build_tokenizer(texts, vocab_size, model_max_length, added_tokens=SEARCH_TAGS)


def _torch_seed(seed: int, kind: str) -> int:
    """The policy and the simulation model of one seed get different weights."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return seed * len(KINDS) + KINDS.index(kind)


def build_tiny_model(
    out_dir: str | Path,
    size: str = "tiny",
    corpus_texts: Sequence[str] | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
    kind: str = "policy",
    data_dir: str | Path | None = None,
) -> Path:
    """Build tokenizer + random Qwen2 model of preset ``size`` into ``out_dir``.

    ``corpus_texts`` defaults to ``default_corpus_texts(data_dir, kind)``; ``vocab_size`` to the
    size preset's. The weights depend only on (``seed``, ``kind``, size, vocabulary), so the
    same call gives the same files. Also writes ``tiny_model.json`` describing the build.
    Returns ``out_dir``.
    """
    torch_seed = _torch_seed(seed, kind)
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if corpus_texts is None:
        logger.info("reading the default %s corpus from %s", kind, data_dir or _default_data_dir())
        corpus_texts = default_corpus_texts(data_dir, kind)
    return tiny_model.build_tiny_model(out_dir, size, list(corpus_texts), torch_seed, vocab_size, SEARCH_TAGS,
                                       info={"kind": kind, "seed": seed})


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
    """A randomly initialised Qwen2 of a real model's shape plus a locally trained tokenizer in ``out_dir``
    (``verl.utils.tiny_model.build_shaped_model`` with the search tags and the default corpus)."""
    torch_seed = _torch_seed(seed, kind)
    if corpus_texts is None:
        corpus_texts = default_corpus_texts(data_dir, kind)
    return tiny_model.build_shaped_model(out_dir, shape_path, list(corpus_texts), torch_seed, bpe_vocab_size, dtype,
                                         SEARCH_TAGS, info={"kind": kind, "seed": seed})


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.tiny", description=__doc__.split("\n\n")[0])
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
