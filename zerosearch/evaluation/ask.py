"""Ask a checkpoint questions and watch it search: one trajectory per question, turn by turn.

    python -m zerosearch.evaluation.ask --model CKPT [--search-engine wiki|google|simulate_sft|simulate_prompt]
        [--retriever-host H --retriever-port P] [--sim-host H --sim-port P --sim-model M --answer A]
        [--topk K] [--max-turns N] [--engine hf|vllm] [--device cpu|cuda] [--temperature T] [--seed S]
        [--json FILE] [--train-config FILE_OR_FOLDER | --stock-config] [--override KEY=VALUE]... ["question" ...]

With no question on the command line, questions are read from standard input, one per line.

The trajectory is the one evaluation would produce: the config comes from
``zerosearch.evaluation.evaluate.build_config`` (same flags, same defaults; a checkpoint of a
training run gets that run's task settings, ``zerosearch/evaluation/train_config.py``), the engine from
``zerosearch.evaluation.evaluate.build_engine``, each question becomes a row with ``zerosearch.data.qa_rows.make_row``
read through ``RLHFDataset`` as evaluation reads its jsonl rows, and ``SearchAgentLoop`` runs it in
validation mode (backend ``retriever.search_engine``, greedy unless ``--temperature`` > 0).

For every turn it prints the model's reasoning (``<think>``), its query (``<search>``; marked "not
run" when no search followed it, e.g. in the last turn), the documents (``<information>``), any
text outside the tags, the self-correction message after an invalid action, and the final answer
(the last ``<answer>`` of the policy's own tokens, as scored in evaluation). Colours are used when
standard output is a terminal (and ``NO_COLOR`` is unset); otherwise the text is plain.

The simulation backends write documents for a question whose answer they are told (as in training
and evaluation): give it with ``--answer``. wiki and google need none.

``--json FILE`` writes one JSON record per question (JSON Lines): ``question``, ``trajectory`` (the
response as generated, special tokens kept), ``answer``, ``queries`` (every query the model wrote
before its last turn), ``num_searches`` (searches run), ``num_turns``, ``steps`` (what is printed:
``{"turn", "kind", "text"}`` with kind think | search | search_not_run | information | answer |
text | note), ``search_engine`` and ``model``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

import torch

from verl.agent_loop.base import GenerateFn
from verl.trainer.main_ppo import check_model_path
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
from zerosearch.evaluation.evaluate import (
    DEVICES,
    ENGINES,
    EvaluationInputError,
    SeededGenerate,
    _seed_everything,
    add_backend_arguments,
    add_train_config_arguments,
    build_config,
    build_engine,
)
from zerosearch.prompts import preprocess_question
from zerosearch.data.qa_rows import make_row, write_parquet
from zerosearch.reward import extract_answer
from zerosearch.tools import SEARCH_MODES, SearchTool

SIMULATED = ("simulate_sft", "simulate_prompt")
DATA_SOURCE = "ask"
# Folder of the Google result cache unless --google-cache-dir says otherwise (no API call is paid twice).
DEFAULT_OUT = Path("outputs") / "ask"

_TAGGED = re.compile(r"<(think|search|answer)>(.*?)</\1>", re.DOTALL)
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)

# ANSI styles per step kind (only when colour is on).
_STYLE = {
    "question": "1",
    "turn": "1;36",
    "think": "2",
    "search": "1;33",
    "search_not_run": "33",
    "information": "34",
    "answer": "1;32",
    "text": "0",
    "note": "35",
}
_LABEL = {
    "think": "think",
    "search": "search",
    "search_not_run": "search (not run)",
    "information": "information",
    "answer": "answer",
    "text": "text",
    "note": "note",
}


# ----------------------------------------------------------------------------------------- steps
def _runs(mask: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(value, start, end) of each run of equal values in ``mask``."""
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            yield int(mask[start]), start, i
            start = i


def policy_steps(text: str, turn: int) -> list[dict]:
    """The tagged parts of one policy turn, in order; text outside the tags is a ``text`` step."""
    steps, pos = [], 0
    for match in _TAGGED.finditer(text):
        outside = text[pos:match.start()].strip()
        if outside:
            steps.append({"turn": turn, "kind": "text", "text": outside})
        steps.append({"turn": turn, "kind": match.group(1), "text": match.group(2).strip()})
        pos = match.end()
    rest = text[pos:].strip()
    if rest:
        steps.append({"turn": turn, "kind": "text", "text": rest})
    return steps


def observation_step(text: str, turn: int) -> dict:
    """An ``<information>`` block (its documents) or, without one, a ``note`` (the correction message)."""
    found = _INFORMATION.search(text)
    if found:
        return {"turn": turn, "kind": "information", "text": found.group(1).strip()}
    return {"turn": turn, "kind": "note", "text": text.strip()}


def trajectory_steps(response_ids: Sequence[int], response_mask: Sequence[int], tokenizer: Any) -> list[dict]:
    """Steps of one response: each run of policy tokens (mask 1) is a turn, the observation after
    it (mask 0) belongs to that turn. A search is ``search_not_run`` when its turn got no documents."""
    steps: list[dict] = []
    turn = 0
    for value, start, end in _runs(list(response_mask)):
        text = tokenizer.decode(list(response_ids[start:end]), skip_special_tokens=True)
        if value == 1:
            turn += 1
            steps.extend(policy_steps(text, turn))
        else:
            steps.append(observation_step(text, max(turn, 1)))
    searched = {s["turn"] for s in steps if s["kind"] == "information"}
    for s in steps:
        if s["kind"] == "search" and s["turn"] not in searched:
            s["kind"] = "search_not_run"
    return steps


# ----------------------------------------------------------------------------------------- output
def _paint(text: str, kind: str, color: bool) -> str:
    return f"\x1b[{_STYLE[kind]}m{text}\x1b[0m" if color else text


def render(record: dict, color: bool = False) -> str:
    """The record as text: the question, each turn's steps, the answer."""
    lines = [_paint(f"Question: {record['question']}", "question", color)]
    turn = None
    for step in record["steps"]:
        if step["turn"] != turn:
            turn = step["turn"]
            lines.append(_paint(f"Turn {turn}", "turn", color))
        label = _paint(_LABEL[step["kind"]] + ":", step["kind"], color)
        body = step["text"].splitlines() or [""]
        if step["kind"] == "information" or len(body) > 1:
            lines.append(f"  {label}")
            lines.extend(f"    {_paint(line, step['kind'], color)}" for line in body)
        else:
            lines.append(f"  {label} {_paint(body[0], step['kind'], color)}")
    searches = record["num_searches"]
    summary = f"({searches} search{'' if searches == 1 else 'es'}, {record['num_turns']} turn{'' if record['num_turns'] == 1 else 's'})"
    answer = record["answer"] if record["answer"] is not None else "(none: no <answer>...</answer> in the response)"
    lines.append(f"{_paint('Answer:', 'answer', color)} {_paint(answer, 'answer', color)} {summary}")
    return "\n".join(lines) + "\n"


def use_color(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ


# ----------------------------------------------------------------------------------------- asking
class Asker:
    """A loaded checkpoint + search backend that answers one question at a time.

    Args:
        model_path: Hugging Face folder of the policy.
        search_engine: wiki | google | simulate_sft | simulate_prompt.
        engine: hf or vllm. device: cpu or cuda (default: cuda when available).
        answer: the gold answer told to a simulation backend (required for simulate_*).
        generate: a ready ``generate(prompts, sampling)`` instead of loading the model.
        search_tool: a ready search tool instead of one built from ``retriever.*``.
        **options: the other ``zerosearch.evaluation.evaluate.build_config`` arguments (max_turns, topk,
            retriever_host, retriever_port, sim_host, sim_port, sim_model, seed, temperature,
            google_cache_dir, overrides, config_dir, train_config, stock_config).
    """

    def __init__(self, model_path: str | os.PathLike, search_engine: str = "wiki", *, engine: str = "hf",
                 device: str | None = None, answer: str | None = None, generate: GenerateFn | None = None,
                 search_tool: SearchTool | None = None, **options: Any) -> None:
        from verl.utils.model import load_tokenizer
        from zerosearch.agent import SearchAgentLoop

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        check_inputs(str(model_path), search_engine, engine, device, answer)
        self.model_path, self.search_engine = str(model_path), search_engine
        self.answer = answer
        self.cfg = build_config(self.model_path, [], search_engine, DEFAULT_OUT, engine=engine, device=device,
                                **options)
        _seed_everything(int(self.cfg.trainer.seed))
        model_cfg = self.cfg.actor_rollout_ref.model
        self.tokenizer = load_tokenizer(model_cfg.tokenizer_path or model_cfg.path, bool(model_cfg.trust_remote_code))
        self.rollout = None
        if generate is None:
            self.rollout = build_engine(self.cfg, self.tokenizer)
            generate = self.rollout.generate
        self.generate = SeededGenerate(generate, int(self.cfg.trainer.seed))
        self.agent = SearchAgentLoop(self.cfg, self.tokenizer, val_search_tool=search_tool)
        self.asked = 0

    def _batch(self, question: str) -> Any:
        """The question as evaluation would read it: a QA row -> parquet -> RLHFDataset -> collate_fn."""
        record = {"id": f"{DATA_SOURCE}-{self.asked}", "question": question,
                  "golden_answers": [self.answer if self.answer is not None else ""], "data_source": DATA_SOURCE}
        row = make_row(record, "test", self.asked)
        with tempfile.TemporaryDirectory(prefix="zs_ask_") as tmp:
            dataset = RLHFDataset([str(write_parquet([row], Path(tmp) / "ask.parquet"))], self.tokenizer, self.cfg.data)
            return collate_fn([dataset[0]])

    def ask(self, question: str) -> dict:
        """Run one trajectory for ``question``; returns its record (see the module docstring)."""
        try:
            question = preprocess_question(question)
        except ValueError as e:
            raise EvaluationInputError(f"question: {e}") from e
        out = self.agent.run(self._batch(question), self.generate, step=0, validate=True)
        self.asked += 1
        prompt_width = out.batch["prompts"].shape[1]
        length = int(out.batch["attention_mask"][0, prompt_width:].sum())
        response_ids = out.batch["responses"][0, :length].tolist()
        mask = out.batch["response_mask"][0, :length].tolist()
        policy_ids = [t for t, m in zip(response_ids, mask) if m]
        nt = out.non_tensor_batch
        return {
            "question": question,
            "trajectory": self.tokenizer.decode(response_ids, skip_special_tokens=False),
            "answer": extract_answer(self.tokenizer.decode(policy_ids, skip_special_tokens=True)),
            "queries": [str(q) for q in nt["search_queries"][0]],
            "num_searches": int(nt["num_searches"][0]),
            "num_turns": int(nt["num_turns"][0]),
            "steps": trajectory_steps(response_ids, mask, self.tokenizer),
            "search_engine": self.search_engine,
            "model": self.model_path,
        }

    def close(self) -> None:
        self.agent.close()
        if self.rollout is not None and hasattr(self.rollout, "close"):
            self.rollout.close()

    def __enter__(self) -> "Asker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_inputs(model_path: str, search_engine: str, engine: str, device: str, answer: str | None) -> None:
    """Fail before anything is loaded, naming the bad argument."""
    try:
        check_model_path(model_path, "--model")
    except FileNotFoundError as e:
        raise EvaluationInputError(str(e)) from e
    if search_engine not in SEARCH_MODES:
        raise EvaluationInputError(f"--search-engine must be one of {', '.join(SEARCH_MODES)}, got {search_engine!r}")
    if engine not in ENGINES:
        raise EvaluationInputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if device not in DEVICES:
        raise EvaluationInputError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise EvaluationInputError("--device cuda was asked for but torch sees no CUDA device")
    if search_engine in SIMULATED and not (answer or "").strip():
        raise EvaluationInputError(
            f"--search-engine {search_engine} writes documents for a question whose answer it is told: give --answer")


def questions_from(args_questions: Sequence[str], stdin: IO[str]) -> Iterable[str]:
    """The command-line questions, or else the non-blank lines of ``stdin``."""
    if args_questions:
        return list(args_questions)
    return (line.strip() for line in stdin if line.strip())


# ----------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.evaluation.ask", description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="*", metavar="QUESTION",
                        help="questions to ask (none: read them from standard input, one per line)")
    parser.add_argument("--model", required=True, help="Hugging Face folder of the checkpoint (config.json inside)")
    parser.add_argument("--search-engine", default="wiki", help=f"search backend: {' | '.join(SEARCH_MODES)} (default wiki)")
    parser.add_argument("--engine", default="hf", help=f"generation engine: {' | '.join(ENGINES)} (default hf)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    add_backend_arguments(parser)
    add_train_config_arguments(parser)
    parser.add_argument("--answer", default=None,
                        help="the answer a simulation backend is told (required for simulate_sft / simulate_prompt)")
    parser.add_argument("--seed", type=int, default=None, help="seed (trainer.seed)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="0 = greedy (default); > 0 samples at this temperature, seeded by --seed")
    parser.add_argument("--google-cache-dir", default=None,
                        help=f"on-disk Google result cache (default {DEFAULT_OUT / 'google_cache'})")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write one JSON record per question to FILE (JSON Lines)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="any key of configs/zerosearch_trainer.yaml (Hydra syntax), one per --override "
                             "(so that questions may follow); the flags above win")
    parser.add_argument("--config-dir", default=None, help="Hydra config folder (default: the repository's configs/)")
    return parser


def main(argv: Sequence[str] | None = None, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> list[dict]:
    """Entry point of ``python -m zerosearch.evaluation.ask``; returns the records."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    color = use_color(stdout)
    records: list[dict] = []
    sink = None
    try:
        asker = Asker(args.model, args.search_engine, engine=args.engine, device=args.device, answer=args.answer,
                      max_turns=args.max_turns, topk=args.topk, retriever_host=args.retriever_host,
                      retriever_port=args.retriever_port, sim_host=args.sim_host, sim_port=args.sim_port,
                      sim_model=args.sim_model, seed=args.seed, temperature=args.temperature,
                      google_cache_dir=args.google_cache_dir, overrides=args.override, config_dir=args.config_dir,
                      train_config=args.train_config, stock_config=args.stock_config)
    except EvaluationInputError as e:
        parser.error(str(e))
    try:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            sink = open(args.json, "w", encoding="utf-8")
        if not args.questions and getattr(stdin, "isatty", lambda: False)():
            sys.stderr.write("zerosearch.evaluation.ask: type a question per line (end with Ctrl-D)\n")
        for question in questions_from(args.questions, stdin):
            try:
                record = asker.ask(question)
            except EvaluationInputError as e:
                parser.error(str(e))
            records.append(record)
            if records[:-1]:
                stdout.write("\n")
            stdout.write(render(record, color))
            stdout.flush()
            if sink is not None:
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
    finally:
        if sink is not None:
            sink.close()
        asker.close()
    return records


if __name__ == "__main__":
    main()
