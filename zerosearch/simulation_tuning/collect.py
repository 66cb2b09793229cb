"""Stage 1: run a policy against a real search backend and keep what each query returned.

Output: one jsonl line per executed query::

    {"id": "<question id>#<k>", "question_id", "question", "golden_answers", "query",
     "documents": [str, ...], "backend": "wiki" | "google", "policy": "scripted" | <model dir>}

``documents`` are the backend's documents in rank order, without the ``Doc i:`` prefix (a query
with no hits has an empty list). Queries whose search failed after the tool's retries are not
written, so a later run retries them.

Policies:
    scripted   the question itself, as written (a policy that searches its question writes
               it with its "?", and the simulator must be tuned on the queries it will be
               served), then up to ``max_subqueries`` entity sub-queries: each maximal run of
               capitalised words in the question, the first word of the question excepted
               ("Where was the founder of Zunta Labs born?" -> "Zunta Labs"), de-duplicated.
               Cheap, deterministic and enough to reach the paragraphs of both hops of a
               bridge question.
    HF_DIR     a policy checkpoint: the project's multi-turn agent loop
               (``zerosearch.agent.SearchAgentLoop``) with an in-process Hugging Face rollout
               (``verl.workers.rollout.hf_rollout.HFRollout``), sampling; every search it makes
               is recorded.

Resumable: questions whose id already appears in the output file are skipped (a question is
written all at once, after its searches). A question with a failed search, or whose policy made
no search at all, is not written and comes back on the next run.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from zerosearch.simulation_tuning.records import append_jsonl, done_keys
from zerosearch.tools import NO_INFORMATION, SearchRequest, SearchResult, SearchTool

logger = logging.getLogger(__name__)

BACKENDS = ("wiki", "google")
_DOC_LINE = re.compile(r"^Doc\s*\d+\s*:\s?(.*)$")
_CAPITALISED = re.compile(r"^[A-Z0-9][\w'&.-]*$")


def split_documents(text: str) -> list[str]:
    """``"Doc 1: a\\nDoc 2: b"`` -> ``["a", "b"]``; ``NO_INFORMATION`` -> ``[]``.

    A line that does not start with ``Doc i:`` continues the previous document.
    """
    text = text.strip()
    if not text or text == NO_INFORMATION:
        return []
    docs: list[str] = []
    for line in text.splitlines():
        m = _DOC_LINE.match(line.strip())
        if m:
            docs.append(m.group(1).strip())
        elif docs and line.strip():
            docs[-1] = f"{docs[-1]} {line.strip()}"
        elif line.strip():
            docs.append(line.strip())
    return [d for d in docs if d]


def scripted_queries(question: str, max_subqueries: int = 2) -> list[str]:
    """The scripted policy's queries for ``question`` (see the module docstring)."""
    if max_subqueries < 0:
        raise ValueError(f"max_subqueries must be >= 0, got {max_subqueries}")
    main = question.strip()
    words = main.rstrip("?").split()
    runs: list[str] = []
    current: list[str] = []
    for word in words[1:] + [""]:
        token = word.strip(",;:()\"")
        if token and _CAPITALISED.match(token):
            current.append(token)
            continue
        if current:
            run = " ".join(current)
            run = run[:-2] if run.endswith("'s") else run
            runs.append(run.rstrip("."))
            current = []
    queries = [main]
    for run in runs:
        if len(queries) > max_subqueries:
            break
        if run and run not in queries:
            queries.append(run)
    return queries


def _record(q: dict, query: str, result: SearchResult, backend: str, policy: str, k: int) -> dict:
    return {"id": f"{q['id']}#{k}", "question_id": q["id"], "question": q["question"],
            "golden_answers": list(q["golden_answers"]), "query": query,
            "documents": split_documents(result.documents), "backend": backend, "policy": policy}


def _pending(questions: Sequence[dict], out_path: str | Path, limit: int | None) -> list[dict]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    chosen = list(questions)[:limit] if limit is not None else list(questions)
    done = done_keys(out_path, "question_id")
    pending = [q for q in chosen if q["id"] not in done]
    if len(pending) < len(chosen):
        logger.info("%s: %d of %d questions already collected, skipping them", out_path, len(chosen) - len(pending),
                    len(chosen))
    return pending


def collect_scripted(questions: Sequence[dict], tool: SearchTool, out_path: str | Path, *, backend: str,
                     limit: int | None = None, batch_size: int = 32, max_subqueries: int = 2,
                     progress: bool = True) -> dict[str, int]:
    """Scripted-policy collection; returns counts (questions, records, failed, empty)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending = _pending(questions, out_path, limit)
    stats = {"questions": 0, "records": 0, "failed": 0, "empty": 0}
    bar = tqdm(total=len(pending), desc="collect (scripted)", unit="q", disable=not progress)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        requests, owners = [], []
        for qi, q in enumerate(chunk):
            for k, query in enumerate(scripted_queries(q["question"], max_subqueries)):
                requests.append(SearchRequest(query=query, question=q["question"], golden_answers=q["golden_answers"],
                                              row=qi))
                owners.append((qi, k))
        results = tool.search(requests)
        per_question: dict[int, list[dict]] = {}
        failed_questions: set[int] = set()
        for request, result, (qi, k) in zip(requests, results, owners):
            if not result.ok:
                stats["failed"] += 1
                failed_questions.add(qi)
                continue
            per_question.setdefault(qi, []).append(_record(chunk[qi], request.query, result, backend, "scripted", k))
        rows = []
        for qi in sorted(per_question):
            if qi in failed_questions:
                continue  # retried as a whole on the next run
            rows.extend(per_question[qi])
            stats["questions"] += 1
        stats["empty"] += sum(not r["documents"] for r in rows)
        stats["records"] += append_jsonl(out_path, rows)
        bar.update(len(chunk))
        bar.set_postfix(records=stats["records"], failed=stats["failed"])
    bar.close()
    return stats


class RecordingSearchTool(SearchTool):
    """Passes every request to ``inner`` and remembers (request, result) pairs in ``records``."""

    name = "recording"

    def __init__(self, inner: SearchTool) -> None:
        super().__init__(cache_size=0)
        self.inner = inner
        self.records: list[tuple[SearchRequest, SearchResult]] = []

    async def _search_uncached(self, requests: list[SearchRequest]) -> list[SearchResult]:
        results = await self.inner.asearch(requests)
        self.records.extend(zip(requests, results))
        return results

    def describe(self) -> str:
        return self.inner.describe()


def agent_config(retriever_cfg: Any, backend: str, *, max_turns: int, max_new_tokens: int,
                 max_response_length: int, temperature: float, seed: int):
    """The slice of the trainer config ``SearchAgentLoop`` reads, for collection with ``backend``."""
    from omegaconf import OmegaConf

    retriever = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(retriever_cfg), resolve=True))
    retriever.search_engine = backend
    retriever.max_turns = max_turns
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": -1}
    return OmegaConf.create({
        "retriever": retriever,
        "actor_rollout_ref": {"rollout": {"max_new_tokens": max_new_tokens, **sampling, "val_kwargs": sampling}},
        "data": {"max_response_length": max_response_length},
        "trainer": {"seed": seed, "total_training_steps": 1},
    })


def collect_with_policy(questions: Sequence[dict], tool: SearchTool, out_path: str | Path, *, backend: str,
                        policy_dir: str, retriever_cfg: Any, limit: int | None = None, batch_size: int = 16,
                        max_turns: int = 4, max_new_tokens: int = 256, max_response_length: int = 2048,
                        temperature: float = 1.0, seed: int = 0, device: str = "cpu",
                        progress: bool = True) -> dict[str, int]:
    """Checkpoint-policy collection (see the module docstring); returns counts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl.protocol import DataProto
    from verl.workers.rollout.hf_rollout import HFRollout
    from zerosearch.agent import SearchAgentLoop
    from zerosearch.prompts import make_prefix

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not (Path(policy_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--policy {policy_dir!r} is neither 'scripted' nor a Hugging Face model folder")
    pending = _pending(questions, out_path, limit)
    stats = {"questions": 0, "records": 0, "failed": 0, "empty": 0}
    if not pending:
        return stats
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype="auto").to(device)
    rollout = HFRollout(model, tokenizer, {})
    recorder = RecordingSearchTool(tool)
    config = agent_config(retriever_cfg, backend, max_turns=max_turns, max_new_tokens=max_new_tokens,
                          max_response_length=max_response_length, temperature=temperature, seed=seed)
    loop = SearchAgentLoop(config, tokenizer, val_search_tool=recorder)
    bar = tqdm(total=len(pending), desc=f"collect ({Path(policy_dir).name})", unit="q", disable=not progress)

    def column(values: list) -> np.ndarray:
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr

    try:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            prompt_ids = []
            for q in chunk:
                chat = [{"role": "user", "content": make_prefix(q["question"])}]
                if getattr(tokenizer, "chat_template", None):
                    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True)["input_ids"]
                else:
                    ids = tokenizer.encode(chat[0]["content"])
                prompt_ids.append(list(ids))
            batch = DataProto.from_dict(non_tensors={
                "question": column([q["question"] for q in chunk]),
                "golden_answers": column([list(q["golden_answers"]) for q in chunk]),
                "raw_prompt_ids": column(prompt_ids),
            })
            recorder.records.clear()
            loop.run(batch, rollout.generate, step=1, validate=True)
            counters = [0] * len(chunk)
            rows = []
            for request, result in recorder.records:
                if not result.ok:
                    stats["failed"] += 1
                    continue
                q = chunk[request.row]
                rows.append(_record(q, request.query, result, backend, str(policy_dir), counters[request.row]))
                counters[request.row] += 1
            stats["questions"] += len(chunk)
            stats["empty"] += sum(not r["documents"] for r in rows)
            stats["records"] += append_jsonl(out_path, rows)
            bar.update(len(chunk))
            bar.set_postfix(records=stats["records"], failed=stats["failed"])
    finally:
        bar.close()
        loop.close()
        recorder.close()
    return stats
