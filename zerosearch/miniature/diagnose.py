"""Which skills a miniature policy has, measured teacher-forced on held-out questions.

A held-out question is searched the way the warm-start demonstrations search it (real BM25
results, ``data.warmstart_rows`` with no guesses and no wrong answers); the policy is given every
token of that trajectory and predicts each next token greedily. A skill counts as right for a
question when every token of its span is predicted right:

    think_name   the subject's name in "<think> I need to search for NAME. </think>"
    query_name   the subject's name in the first "<search> ... </search>"
    answer/KIND  the answer in the last turn, per question kind (read from the document)

It separates "can it copy a name from the question" from "can it read a document", which the
end-to-end EM mixes. Command line::

    python -m zerosearch.miniature.diagnose --model POLICY_DIR --world WORLD_DIR [--limit N]

WORLD_DIR is the folder ``zerosearch.miniature.data`` wrote (world.json, train/val/test.jsonl).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import torch

from zerosearch.miniature import data
from zerosearch.miniature.world import build_questions, read_world


def skill_spans(row: dict) -> list[tuple[str, int, int]]:
    """(skill, start, end) character spans of ``row["response"]`` that the skills score."""
    response, subject = row["response"], row["question_id"].split("-", 1)[1]
    spans = []
    if row["action"] == "search" and row["turn"] == 1:
        think = response.find(subject)
        query = response.find(subject, response.find("<search>"))
        spans += [("think_name", think, think + len(subject)), ("query_name", query, query + len(subject))]
    elif row["action"] == "answer":
        start, end = data.answer_span(response)
        spans.append((f"answer/{row['question_id'].split('-', 1)[0]}", start, end))
    return [s for s in spans if s[1] >= 0]


@torch.no_grad()
def score_rows(model, tokenizer, rows: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """{skill: (right, total)} over ``rows`` (warm-start rows; see the module docstring).

    ``model(input_ids[1, T]).logits[1, T, V]`` is called once per row on prompt + response.
    """
    scores: dict[str, list[int]] = {}
    for row in rows:
        spans = skill_spans(row)
        if not spans:
            continue
        enc = tokenizer(row["prompt"] + row["response"], add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        pred = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        base = len(row["prompt"])
        for skill, start, end in spans:
            lo, hi = base + start, base + end
            # tokens overlapping the span (a leading-space token starts one character early)
            toks = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if i > 0 and b > lo and a < hi]
            right = bool(toks) and all(pred[i - 1] == ids[i] for i in toks)
            s = scores.setdefault(skill, [0, 0])
            s[0] += int(right)
            s[1] += 1
    return {k: (v[0], v[1]) for k, v in sorted(scores.items())}


def diagnose(model_dir: str | Path, world_dir: str | Path, limit: int | None = None, split: str = "test",
             topk: int = 1) -> dict[str, tuple[int, int]]:
    """Score the policy in ``model_dir`` on the ``split`` questions of the world in ``world_dir``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world = read_world(str(world_dir))
    qa_path = Path(world_dir) / f"{split}.jsonl"
    if not qa_path.is_file():
        raise FileNotFoundError(f"{qa_path}: no such question file (split must be train, val or test)")
    questions = data._read_questions(qa_path, build_questions(world))[:limit]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = data.warmstart_rows(world, questions, tokenizer, data._bm25(world), topk=topk, wrong_rate=0.0, seed=0)
    return score_rows(model, tokenizer, rows)


def main(argv: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.diagnose",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="policy folder (HF format)")
    parser.add_argument("--world", required=True, help="folder written by zerosearch.miniature.data")
    parser.add_argument("--split", choices=["train", "val", "test"], default="test")
    parser.add_argument("--limit", type=int, default=None, help="first N questions of the split")
    parser.add_argument("--topk", type=int, default=1, help="documents per search (as the policy was trained)")
    args = parser.parse_args(argv)
    scores = diagnose(args.model, args.world, args.limit, args.split, args.topk)
    print("| skill | right | of | share |\n|---|---:|---:|---:|")
    for skill, (right, total) in scores.items():
        print(f"| {skill} | {right} | {total} | {right / total:.2f} |")
    return scores


if __name__ == "__main__":
    main()
