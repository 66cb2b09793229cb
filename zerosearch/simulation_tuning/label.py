"""Stage 2: label every collected document *useful* or *noisy*.

Judges:
    rule  a document is useful when it contains a gold answer: ``reward.sub_em(document, golds)``
          (normalised gold is a substring of the normalised document). Free, deterministic, and
          right for extractive short answers; it cannot see paraphrases.
    llm   an OpenAI-compatible chat server (vLLM, sglang, or a hosted API) is asked, for each
          document on its own, whether it holds enough information to answer the query, given the
          question and its gold answer (``JUDGE_PROMPT``). The reply must start with yes or no.
          Requests run concurrently (``concurrency``), each with a timeout and bounded retries with
          backoff (``zerosearch.tools.retry``); a document still unjudged after its retries leaves
          its record unlabelled (it is retried on the next run). More than ``max_failure_rate``
          unjudged documents in a batch stops the stage with an error.

Output: the collected record plus ``"labels": ["useful" | "noisy", ...]`` (one per document) and
``"judge"``. Resumable by record id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from pathlib import Path
from typing import Sequence

import aiohttp
from tqdm import tqdm

from zerosearch.reward import sub_em
from zerosearch.simulation_tuning.records import append_jsonl, done_keys, read_jsonl
from zerosearch.tools.endpoints import derive_seed, parse_endpoints
from zerosearch.tools.retry import MalformedResponseError, RetryPolicy, call_with_retries, describe_error, post_json

logger = logging.getLogger(__name__)

USEFUL, NOISY = "useful", "noisy"

JUDGE_PROMPT = (
    "You check the results of a search engine.\n"
    'A user is trying to answer the question: "{question}" The correct answer is: {answer}.\n'
    "The user searched for: {query}\n\n"
    "Document: {document}\n\n"
    "Does this document contain enough information to answer the search query, so that it helps "
    "the user reach the correct answer? Reply with one word: yes or no."
)
_VERDICT = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def rule_label(document: str, golden_answers: Sequence[str]) -> str:
    """``useful`` when a normalised gold answer is a substring of the normalised document."""
    return USEFUL if sub_em(document, list(golden_answers)) > 0 else NOISY


def parse_verdict(text: str) -> str:
    """``useful`` for a reply starting with yes, ``noisy`` for no; otherwise MalformedResponseError."""
    m = _VERDICT.match(text.strip())
    if m is None:
        raise MalformedResponseError(f"judge reply does not start with yes or no: {text[:80]!r}")
    return USEFUL if m.group(1).lower() == "yes" else NOISY


class LLMJudge:
    """Yes/no judgements from an OpenAI-compatible chat endpoint.

    Args:
        url: ``http://host:port`` (a trailing ``/v1`` is accepted), or a comma-separated list of
            such servers; request c's attempt a goes to server (c + a) mod n.
        model: the model name sent in each request.
        api_key_env: name of an environment variable holding a bearer token (None: no header).
        concurrency: requests in flight at most.
        timeout, max_retries, backoff: per-attempt seconds, attempts after the first, backoff base.
        max_tokens: reply budget (a verdict is one word).
        seed: seeds the retry jitter and the per-request sampling seeds.
    """

    def __init__(self, url: str, model: str, *, api_key_env: str | None = None, concurrency: int = 16,
                 timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0, max_tokens: int = 8,
                 seed: int = 0) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError(f"--judge-model must name the served model, got {model!r}")
        self.endpoints = [u[:-3] if u.endswith("/v1") else u for u in parse_endpoints(url, 80, key="--judge-url")]
        self.model = model
        self.headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env, "").strip()
            if not key:
                raise ValueError(f"environment variable {api_key_env} (--judge-api-key-env) is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        if concurrency < 1 or max_tokens < 1:
            raise ValueError(f"concurrency and max_tokens must be >= 1, got {concurrency}, {max_tokens}")
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self.seed = seed
        self._sent = 0

    @property
    def name(self) -> str:
        return f"llm:{self.model}"

    async def _judge_all(self, prompts: list[str]) -> list[tuple[str | None, str | None]]:
        first = self._sent
        self._sent += len(prompts)
        semaphore = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency),
                                         timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
                                         headers=self.headers) as client:

            async def one(k: int, prompt: str) -> tuple[str | None, str | None]:
                number = first + k

                async def attempt(i: int) -> str:
                    base = self.endpoints[(number + i) % len(self.endpoints)]
                    body = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": self.max_tokens, "temperature": 0.0, "seed": derive_seed(self.seed, number)}
                    data = await post_json(client, base + "/v1/chat/completions", body)
                    try:
                        text = data["choices"][0]["message"]["content"]
                    except (KeyError, IndexError, TypeError) as exc:
                        raise MalformedResponseError(f"reply lacks choices[0].message.content ({describe_error(exc)})")
                    if not isinstance(text, str):
                        raise MalformedResponseError(f"reply content is not a string: {text!r:.80}")
                    return parse_verdict(text)

                rng = random.Random(derive_seed(self.seed, number, "jitter"))
                try:
                    return await call_with_retries(attempt, self.policy, rng, semaphore=semaphore), None
                except Exception as exc:  # one failed judgement must not fail the batch
                    return None, describe_error(exc)

            return list(await asyncio.gather(*(one(k, p) for k, p in enumerate(prompts))))

    def judge(self, items: list[tuple[str, str, str, str]]) -> list[tuple[str | None, str | None]]:
        """``(question, answer, query, document)`` items -> ``(label or None, error or None)`` each."""
        prompts = [JUDGE_PROMPT.format(question=q, answer=a, query=s, document=d) for q, a, s, d in items]
        return asyncio.run(self._judge_all(prompts)) if prompts else []


def label(collected_path: str | Path, out_path: str | Path, judge: LLMJudge | None = None, *,
          batch_size: int = 64, max_failure_rate: float = 0.5, progress: bool = True) -> dict[str, int]:
    """Label the records of ``collected_path`` into ``out_path`` (rule judge when ``judge`` is None).

    Returns counts: records, useful, noisy, unlabelled (records left for a later run).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    records = read_jsonl(collected_path)
    for i, r in enumerate(records):
        for key in ("id", "question", "golden_answers", "query", "documents"):
            if key not in r:
                raise ValueError(f"{collected_path}: object {i + 1} has no '{key}'; expected the output of collect")
    done = done_keys(out_path, "id")
    pending = [r for r in records if str(r["id"]) not in done]
    stats = {"records": 0, "useful": 0, "noisy": 0, "unlabelled": 0}
    bar = tqdm(total=len(pending), desc=f"label ({judge.name if judge else 'rule'})", unit="rec",
               disable=not progress)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        if judge is None:
            labels = [[rule_label(d, r["golden_answers"]) for d in r["documents"]] for r in chunk]
            name = "rule"
        else:
            items = [(r["question"], r["golden_answers"][0], r["query"], d) for r in chunk for d in r["documents"]]
            verdicts = judge.judge(items)
            failed = [err for lab, err in verdicts if lab is None]
            if items and len(failed) / len(items) > max_failure_rate:
                raise RuntimeError(f"LLM judge {judge.endpoints}: {len(failed)} of {len(items)} judgements failed "
                                   f"(more than max_failure_rate={max_failure_rate}); last error: {failed[-1]}")
            it = iter(verdicts)
            labels = [[next(it)[0] for _ in r["documents"]] for r in chunk]
            name = judge.name
        rows = []
        for r, labs in zip(chunk, labels):
            if any(lab is None for lab in labs):
                stats["unlabelled"] += 1
                continue
            rows.append({**r, "labels": labs, "judge": name})
            stats["useful"] += labs.count(USEFUL)
            stats["noisy"] += labs.count(NOISY)
        stats["records"] += append_jsonl(out_path, rows)
        bar.update(len(chunk))
    bar.close()
    if stats["unlabelled"]:
        logger.warning("%d records could not be judged; run label again to retry them", stats["unlabelled"])
    return stats
