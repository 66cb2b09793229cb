"""``scripts/evaluate.sh``'s ``KEY VALUE`` arguments -> ``python -m zerosearch.evaluation`` flags.

    python -m zerosearch.evaluation.keys MODEL_PATH RUN/exports/global_step_200 \\
        DATA_PATH data/qa/nq.jsonl,data/qa/bamboogle.jsonl SEARCH_ENGINE wiki [KEY VALUE ...] [-- HYDRA_OVERRIDE ...]

No key has a default of its own: a key left out takes the value of the run's saved training config
(lengths, turns, topk, ...; ``zerosearch/evaluation/train_config.py``), else the stock config's;
``TRAIN_CONFIG stock`` ignores the saved config. Keys come in any order, each at most once; an
unknown key or a key without a value stops with exit code 2 naming it. Values are checked by
``zerosearch.evaluation.evaluate``'s own parser. Everything after ``--`` becomes ``--override``
items. ``--dry-run`` prints the evaluation command instead of running it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

# KEY -> (evaluate flag, help). No defaults here: a key left out keeps the run's saved value (or the stock one).
KEYS: dict[str, tuple[str, str]] = {
    "MODEL_PATH": ("--model", "Hugging Face folder of the checkpoint (this or RUN is required)"),
    "RUN": ("--run", "training run folder SAVE_DIR/EXPERIMENT: every export not scored yet, score-vs-step table"),
    "DATA_PATH": ("--data", "comma-separated parquet / QA jsonl files; a folder means its test.parquet (required)"),
    "SEARCH_ENGINE": ("--search-engine", "wiki | google | simulate_sft | simulate_prompt (required)"),
    "TOPK": ("--topk", "documents per search"),
    "MAX_TURNS": ("--max-turns", "search rounds before the final answer-only round"),
    "ENGINE": ("--engine", "hf | vllm"),
    "DEVICE": ("--device", "cpu | cuda"),
    "BATCH_SIZE": ("--batch-size", "prompts per batch"),
    "LIMIT": ("--limit", "first N rows of each data source"),
    "SEED": ("--seed", "seed"),
    "TEMPERATURE": ("--temperature", "0 = greedy; > 0 samples"),
    "RETRIEVER_HOST": ("--retriever-host", "retrieval server host(s) (wiki)"),
    "RETRIEVER_PORT": ("--retriever-port", "retrieval server port (wiki)"),
    "SIM_HOST": ("--sim-host", "simulation server host(s)"),
    "SIM_PORT": ("--sim-port", "simulation server port"),
    "SIM_MODEL": ("--sim-model", "served simulation model name"),
    "GOOGLE_CACHE_DIR": ("--google-cache-dir", "on-disk Google result cache"),
    "OUT": ("--out", "output folder"),
    "TRAIN_CONFIG": ("--train-config", "saved training config (file, or run / export folder) whose task "
                                       "settings to use; 'stock' = ignore the run's config (--stock-config); "
                                       "default: found from the model"),
}
# TRAIN_CONFIG's value that means --stock-config.
STOCK_VALUE = "stock"
DATA_DIR_FILE = "test.parquet"


class EvalKeyError(ValueError):
    """An unknown key, a repeated key or a key without a value."""


def data_files(value: str) -> list[str]:
    """``a.jsonl,b.parquet`` -> the files; a folder stands for its ``test.parquet``."""
    files = [part.strip() for part in value.split(",") if part.strip()]
    if not files:
        raise EvalKeyError("DATA_PATH is empty")
    return [str(Path(f) / DATA_DIR_FILE) if Path(f).is_dir() else f for f in files]


def keys_to_argv(argv: Sequence[str]) -> list[str]:
    """``KEY VALUE ... [-- overrides]`` -> the argument list of ``python -m zerosearch.evaluation``."""
    argv = list(argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        key = argv[i]
        if key not in KEYS:
            raise EvalKeyError(f"unknown key {key!r}; valid keys: {' '.join(KEYS)}")
        if key in seen:
            raise EvalKeyError(f"key {key} is given twice")
        if i + 1 >= len(argv) or argv[i + 1] in KEYS:
            raise EvalKeyError(f"key {key} has no value")
        seen.add(key)
        value = argv[i + 1]
        flag = KEYS[key][0]
        if key == "DATA_PATH":
            out += [flag, *data_files(value)]
        elif key == "TRAIN_CONFIG" and value == STOCK_VALUE:
            out += ["--stock-config"]
        else:
            out += [flag, value]
        i += 2
    if overrides:
        out += ["--override", *overrides]
    return out


def help_text() -> str:
    width = max(len(k) for k in KEYS)
    lines = [__doc__.strip(), "", "Keys:"]
    lines += [f"  {key.ljust(width)}  {flag:<20} {text}" for key, (flag, text) in KEYS.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv[: argv.index("--") if "--" in argv else len(argv)]):
        sys.stdout.write(help_text())
        return 0
    dry_run = "--dry-run" in argv[: argv.index("--") if "--" in argv else len(argv)]
    if dry_run:
        argv.remove("--dry-run")
    try:
        flags = keys_to_argv(argv)
    except EvalKeyError as err:
        sys.stderr.write(f"evaluate: error: {err}\n(run with --help for every key)\n")
        return 2
    if dry_run:
        print(shlex.join([sys.executable, "-m", "zerosearch.evaluation", *flags]))
        return 0
    from zerosearch.evaluation.evaluate import main as evaluate_main

    evaluate_main(flags)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
