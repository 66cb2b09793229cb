"""Baselines of the CPU miniature that need no trained policy: the majority answer per question
kind, and a scripted reader (the pipeline's upper bound).

- ``majority``: every question of a kind gets the most frequent gold answer of that kind among the
  *training* questions (ties: alphabetical). What a policy that never searches could at best
  get by guessing by kind.
- ``scripted``: a rule-based policy run through the real evaluation loop (``zerosearch.evaluation.evaluate``
  with the real retrieval server): it searches the question itself; for a two-hop question it
  reads the founder out of the company's paragraph and searches "Where was FOUNDER born?"; then it
  reads the answer out of the paragraph of the entity asked about with the world's sentence
  patterns. Its errors are the retrieval's (or a founder's name split across documents), so it is
  what a policy that searched and read perfectly would score with these settings.

Command line (writes ``OUT/majority/records.jsonl`` and ``OUT/scripted/records.jsonl``, the
evaluation record schema of ``zerosearch.evaluation.report``)::

    python -m zerosearch.miniature.baselines --world WORLD_DIR --split test --retriever-port P [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from verl.workers.rollout.base import GenerationOutput, SamplingConfig
from zerosearch import reward
from zerosearch.prompts import split_context

# The world's questions (zerosearch.miniature.world.build_questions) and paragraph sentences.
_QUESTIONS = (
    ("founder_birthplace", re.compile(r"^Where was the founder of (.+) born\?$")),
    ("birthplace", re.compile(r"^Where was (.+) born\?$")),
    ("occupation", re.compile(r"^What is the occupation of (.+)\?$")),
    ("founder", re.compile(r"^Who founded (.+)\?$")),
    ("headquarters", re.compile(r"^Where are the headquarters of (.+)\?$")),
)
_FACTS = {
    "birthplace": re.compile(r" who was born in (\S+) in \d+\."),
    "occupation": re.compile(r" is an? (\S+) who was born in "),
    "founder": re.compile(r" company founded by (.+?) in \d+\."),
    "headquarters": re.compile(r"Its headquarters are in (\S+?)\."),
}
_DOC = re.compile(r"Doc \d+: \(Title: (.*?)\) (.*?)(?=\nDoc \d+: |$)", re.S)


def question_kind(question: str) -> tuple[str, str]:
    """(kind, entity) of a miniature question; ValueError for any other text."""
    for kind, pattern in _QUESTIONS:
        m = pattern.match(question.strip())
        if m:
            return kind, m.group(1)
    raise ValueError(f"not a question of the miniature world: {question!r}")


def kind_of_id(question_id: str) -> str:
    """The kind encoded in a miniature question id (``KIND-ENTITY``)."""
    return question_id.split("-", 1)[0]


def read_fact(documents: list[tuple[str, str]], entity: str, fact: str) -> str | None:
    """``fact`` of ``entity`` read from the paragraph titled ``entity`` (else from the first
    paragraph stating such a fact); None when no paragraph states it."""
    ordered = [text for title, text in documents if title == entity] + [text for _, text in documents]
    for text in ordered:
        m = _FACTS[fact].search(text)
        if m:
            return m.group(1)
    return None


def last_documents(context: str) -> list[tuple[str, str]]:
    """(title, text) of each document of the last observation in ``context``."""
    start = context.rfind("<information>")
    end = context.rfind("</information>")
    if start < 0 or end < start:
        return []
    return [(t, x.strip()) for t, x in _DOC.findall(context[start + len("<information>"):end].strip())]


def scripted_turn(context: str) -> str:
    """The scripted policy's next turn for ``context`` (decoded prompt + response so far)."""
    question, tail = split_context(context)
    kind, entity = question_kind(question)
    searches = tail.count("<information>")
    if searches == 0:
        return f"<search> {question} </search>"
    docs = last_documents(tail)
    if kind == "founder_birthplace":
        if searches == 1:
            founder = read_fact(docs, entity, "founder")
            return f"<search> Where was {founder} born? </search>" if founder else "<answer> unknown </answer>"
        founder = re.search(r"<search> Where was (.+) born\? </search>", tail.split("<information>")[-2])
        answer = read_fact(docs, founder.group(1) if founder else "", "birthplace")
    else:
        answer = read_fact(docs, entity, kind)
    return f"<answer> {answer or 'unknown'} </answer>"


class ScriptedPolicy:
    """``generate`` for ``zerosearch.evaluation.evaluate``: each turn is ``scripted_turn`` (log-probs 0)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        out = []
        for p in prompts:
            ids = list(self.tokenizer.encode(scripted_turn(self.tokenizer.decode(p, skip_special_tokens=False)),
                                             add_special_tokens=False))
            out.append(GenerationOutput(token_ids=ids, log_probs=[0.0] * len(ids), finish_reason="stop"))
        return out


def _jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def majority_answers(train: Sequence[dict]) -> dict[str, str]:
    """Kind -> the most frequent first gold answer of that kind among ``train`` QA lines (ties:
    alphabetical)."""
    counts: dict[str, Counter] = {}
    for q in train:
        counts.setdefault(q["kind"], Counter())[q["golden_answers"][0]] += 1
    return {kind: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for kind, c in counts.items()}


def majority_records(train: Sequence[dict], questions: Sequence[dict]) -> list[dict]:
    """Evaluation records of the majority baseline on ``questions`` (QA lines)."""
    answers = majority_answers(train)
    records = []
    for q in questions:
        answer = answers.get(q["kind"], "")
        records.append({"id": q["id"], "data_source": q["data_source"], "question": q["question"], "answer": answer,
                        "golden_answers": q["golden_answers"], "em": reward.em(answer, q["golden_answers"]),
                        "sub_em": reward.sub_em(answer, q["golden_answers"]),
                        "f1": reward.f1(answer, q["golden_answers"]), "num_searches": 0, "num_turns": 1})
    return records


def run(world_dir: str | Path, split: str, out_dir: str | Path, retriever_host: str, retriever_port: int,
        topk: int = 1, max_turns: int = 2, overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Write both baselines' records for ``split`` of the world in ``world_dir``; returns their paths."""
    from transformers import AutoTokenizer

    from zerosearch.evaluation.report import write_outputs
    from zerosearch.evaluation.evaluate import evaluate

    world, out = Path(world_dir), Path(out_dir)
    questions = _jsonl(world / f"{split}.jsonl")
    (out / "majority").mkdir(parents=True, exist_ok=True)
    write_outputs(out / "majority", majority_records(_jsonl(world / "train.jsonl"), questions))
    policy = world / "models" / "policy"
    evaluate(policy, [world / f"{split}.parquet"], "wiki", out / "scripted", device="cpu",
             generate=ScriptedPolicy(AutoTokenizer.from_pretrained(policy)), progress=False, topk=topk,
             max_turns=max_turns, retriever_host=retriever_host, retriever_port=retriever_port,
             overrides=list(overrides))
    return {"majority": out / "majority" / "records.jsonl", "scripted": out / "scripted" / "records.jsonl"}


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.baselines",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True, help="world folder (python -m zerosearch.miniature.data --out)")
    parser.add_argument("--split", default="test", choices=("val", "test"))
    parser.add_argument("--out", default=None, help="output folder (default WORLD/baselines_SPLIT)")
    parser.add_argument("--retriever-host", default="127.0.0.1")
    parser.add_argument("--retriever-port", type=int, required=True)
    parser.add_argument("--topk", type=int, default=1)
    parser.add_argument("--max-turns", type=int, default=2)
    parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="keys of configs/zerosearch_trainer.yaml for the scripted run's evaluation")
    args = parser.parse_args(argv)
    paths = run(args.world, args.split, args.out or Path(args.world) / f"baselines_{args.split}", args.retriever_host,
                args.retriever_port, args.topk, args.max_turns, args.override)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths


if __name__ == "__main__":
    main()
