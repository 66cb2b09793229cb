"""Turn QA jsonl files into ZeroSearch / Search-R1 training and test parquet files.

Input: QA jsonl files (the format of ``data/qa/*.jsonl``). Output: ``OUT/train.parquet`` and
``OUT/test.parquet`` in the ZeroSearch / Search-R1 schema; the rows, their ``uid`` and the checks
against duplicate ids and train/test leakage are described in ``zerosearch/data/qa_rows.py``.

Splitting: every row of a ``--test`` file goes to test. A ``--train`` file gives a seeded
``--train-split-ratio`` share of its rows to train and holds out the rest for test.
Defaults (the shipped ``data/qa`` samples, which are all evaluation questions): train files
``nq`` and ``hotpotqa`` (the paper's training sources) split half/half, test files ``triviaqa``,
``popqa``, ``2wikimultihopqa``, ``musique``, ``bamboogle``; the test parquet therefore covers all
seven sources, with the training sources' held-out halves first and Bamboogle last.

    python scripts/data_process/qa_search.py --out data/zerosearch_qa
    python scripts/data_process/qa_search.py --train a.jsonl --test b.jsonl c.jsonl --out OUT --train-split-ratio 1
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from zerosearch.data.qa_rows import (  # noqa: E402,F401  (re-exported for callers of this script's module)
    ABILITY, DEFAULT_QA_DIR, DEFAULT_TEST_SOURCES, DEFAULT_TRAIN_SOURCES, DEFAULT_TRAIN_SPLIT_RATIO, SCHEMA,
    build_splits, make_row, read_qa_jsonl, split_train_file, write_parquet)


def _default_files(sources: Sequence[str]) -> list[Path]:
    return [DEFAULT_QA_DIR / f"{s}.jsonl" for s in sources]


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", nargs="+", default=None,
                        help=f"QA jsonl files that feed the train split (default: {', '.join(DEFAULT_TRAIN_SOURCES)} "
                             f"from {DEFAULT_QA_DIR})")
    parser.add_argument("--test", nargs="*", default=None,
                        help=f"QA jsonl files that go to the test split whole (default: {', '.join(DEFAULT_TEST_SOURCES)})")
    parser.add_argument("--out", required=True, help="output folder for train.parquet and test.parquet")
    parser.add_argument("--train-split-ratio", type=float, default=DEFAULT_TRAIN_SPLIT_RATIO,
                        help="share of each --train file's rows used for training; the rest is held out for test")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split")
    args = parser.parse_args(argv)
    train_files = args.train if args.train is not None else _default_files(DEFAULT_TRAIN_SOURCES)
    test_files = args.test if args.test is not None else _default_files(DEFAULT_TEST_SOURCES)
    splits = build_splits(train_files, test_files, args.train_split_ratio, args.seed)
    written = {}
    for split, rows in splits.items():
        if not rows:
            print(f"[qa_search] {split}: no rows, {split}.parquet not written")
            continue
        written[split] = write_parquet(rows, Path(args.out) / f"{split}.parquet")
        counts = Counter(r["data_source"] for r in rows)
        print(f"[qa_search] {split}: {len(rows)} rows {dict(counts)} -> {written[split]}")
    return written


if __name__ == "__main__":
    main()
