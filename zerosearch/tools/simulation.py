"""Search simulated by an LLM server: each query becomes a prompt, the reply becomes the documents.

Messages: each query's simulation prompt becomes the chat messages of
``zerosearch.prompts.simulation_messages(prompt, system_prompt)``: by default
(``system_prompt`` "") an empty system message and the prompt as the user message, the text the
released simulators were tuned and served with, and the same messages the simulation-tuning
pipeline writes into its SFT rows. Both protocols deliver the same text to the model:

Protocols:
    openai         POST {base}/v1/chat/completions with the messages; the server applies the
                   model's chat template. Works with sglang and vLLM (vLLM needs the real served
                   model name). Each request carries a seed derived from the tool seed and a request
                   counter, so a run with the same seed sends the same seeds.
    sglang_native  POST {base}/generate {"text": ..., "sampling_params": {...}}, where the text is
                   the chat template applied by the client to the messages (generation prompt
                   added), with the tokenizer ``tokenizer`` names, or, when that is None, the one at
                   the ``tokenizer_path`` (else ``model_path``) the first server reports at
                   ``GET /get_model_info``, loaded once. No seed is sent.

Reply clean-up: blank lines collapse to single newlines; the text from ``Doc {topk+1}`` on is dropped;
the result is stripped. A reply without a ``Doc 1`` line (a small simulator writes the odd
``Doc 19987. Its. Its in ...``, a large one the odd refusal) is malformed: it is resampled at once
under a fresh seed, up to ``max_retries`` times. When every sample is malformed the query's result
is ``malformed`` (not failed: the server is up) and its documents are the last sample's cleaned text,
as written (``NO_INFORMATION`` when that is empty or the reply held no text at all), which the
agent cuts to its observation budget. All requests of a call go out concurrently through one pooled
``aiohttp.ClientSession`` (a ``TCPConnector`` of ``concurrency`` connections), at most
``concurrency`` at a time; each has a per-attempt timeout and bounded retries with backoff
(``retry.py``). A query with no reply after them (refused, timed out, HTTP error) returns
``NO_INFORMATION`` with ``ok=False``. With several hosts, request ``c``'s attempt ``a`` goes to host
``(c + a) % n_hosts``, so retries move on to the next host.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any, Mapping, Sequence

import aiohttp
import numpy as np

from zerosearch.prompts import SIMULATION_MODES, build_simulation_prompt, render_simulate_prompt, simulation_messages
from zerosearch.tools.base import NO_INFORMATION, SearchRequest, SearchResult, SearchTool, require_int, require_number
from zerosearch.tools.endpoints import derive_seed, parse_endpoints
from zerosearch.tools.http_pool import HTTPPool
from zerosearch.tools.retry import (
    MalformedResponseError,
    RetryPolicy,
    call_with_retries,
    describe_error,
    post_json,
)

PROTOCOLS = ("openai", "sglang_native")

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n(?:[ \t\r\f\v]*\n)*")
_FIRST_DOC = re.compile(r"(?m)^\W*Doc\s*1\b")


def clean_simulated_documents(text: str, topk: int) -> str:
    """Collapse blank lines, keep what precedes ``Doc {topk+1}``, require a ``Doc 1`` line, strip.

    Raises:
        MalformedResponseError: the reply has no ``Doc 1`` line (worth a resample); its ``text`` is
            the cleaned reply, for use as the documents when no sample parses.
    """
    text = _BLANK_LINES.sub("\n", text)
    cut = re.search(rf"\bDoc\s*{topk + 1}\b", text)
    if cut is not None:
        text = text[: cut.start()]
    text = text.strip()
    if not _FIRST_DOC.search(text):
        raise MalformedResponseError(f"simulated reply has no 'Doc 1' line: {text[:120]!r}", text=text)
    return text


def _first_answer(golden_answers: Any) -> str | None:
    if isinstance(golden_answers, str):
        return golden_answers
    if isinstance(golden_answers, (list, tuple, np.ndarray)) and len(golden_answers) > 0:
        return str(golden_answers[0])
    return None


class SimulationSearchTool(SearchTool):
    """Documents written by a simulation LLM (``simulate_sft`` or ``simulate_prompt`` prompts).

    Args:
        mode: ``simulate_sft`` (fine-tuned simulator) or ``simulate_prompt`` (prompted instruct model).
        hosts: comma-separated hosts (``host``, ``host:port`` or ``http://host:port``) or a list.
        port: port of the hosts given without one.
        model: the served model name sent in OpenAI requests.
        protocol: ``openai`` or ``sglang_native``.
        topk: documents kept per query (also the number the prompt asks for).
        temperature: sampling temperature of the simulator.
        max_tokens: generation budget per reply.
        concurrency: requests in flight at most (also the connection-pool size).
        timeout: seconds per attempt.
        max_retries: attempts after the first.
        backoff: base of the exponential backoff, seconds.
        seed: derives the per-request sampling seeds and the retry jitter.
        cache_size: LRU entries keyed by (mode, query, noisy, question); 0 = off.
        system_prompt: content of the system message sent before each prompt (both protocols);
            "" = an empty system message (the released simulators' input); None sends none.
        tokenizer: sglang_native only: the tokenizer (a Hugging Face folder or hub name) whose chat
            template the client applies; None = the one the server reports at /get_model_info.
        prompt_templates: the user's simulate_prompt templates, checked
            (``zerosearch.prompts.simulate_prompt_templates``), keyed "useful" / "noisy"; a kind
            left out keeps the shipped prompt. Unused in simulate_sft mode.
    """

    def __init__(
        self,
        mode: str = "simulate_sft",
        hosts: str | Sequence[str] = "127.0.0.1",
        port: int = 6001,
        model: str = "simulation",
        protocol: str = "openai",
        topk: int = 5,
        temperature: float = 0.8,
        max_tokens: int = 600,
        concurrency: int = 64,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        seed: int = 0,
        cache_size: int = 0,
        system_prompt: str | None = "",
        tokenizer: str | None = None,
        prompt_templates: Mapping[str, str] | None = None,
    ):
        if mode not in SIMULATION_MODES:
            raise ValueError(f"SimulationSearchTool: mode must be one of {SIMULATION_MODES}, got {mode!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"SimulationSearchTool: protocol (retriever.simulation.protocol) must be one of {PROTOCOLS}, got {protocol!r}")
        if not isinstance(model, str):
            raise ValueError(f"SimulationSearchTool: model (retriever.simulation.model) must be a string, got {model!r}")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError("SimulationSearchTool: system_prompt (retriever.simulation.system_prompt) must be a "
                             f"string or null, got {system_prompt!r}")
        if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer.strip()):
            raise ValueError("SimulationSearchTool: tokenizer (retriever.simulation.tokenizer) must be a non-empty "
                             f"path or model name, or null, got {tokenizer!r}")
        self.name = mode
        super().__init__(cache_size=cache_size)
        self.mode = mode
        self.endpoints = parse_endpoints(hosts, port, key="retriever.simulation.host")
        self.model = model
        self.protocol = protocol
        self.topk = require_int("topk (retriever.topk)", topk, 1)
        self.temperature = require_number("temperature (retriever.simulation.temperature)", temperature, 0.0)
        self.max_tokens = require_int("max_tokens (retriever.simulation.max_tokens)", max_tokens, 1)
        self.concurrency = require_int("concurrency (retriever.simulation.concurrency)", concurrency, 1)
        self.seed = require_int("seed (retriever.seed)", seed, 0)
        self.system_prompt = system_prompt
        self.tokenizer = tokenizer
        self._chat_tokenizer: Any = None  # loaded on the first sglang_native search
        self.prompt_templates = dict(prompt_templates or {})
        unknown = sorted(set(self.prompt_templates) - {"useful", "noisy"})
        if unknown:
            raise ValueError(f"SimulationSearchTool: prompt_templates keys must be 'useful' / 'noisy', got {unknown}")
        self.policy = RetryPolicy(timeout=timeout, max_retries=max_retries, backoff=backoff)
        self._counter = 0
        self._http = HTTPPool(self.concurrency, self.policy.timeout)

    def describe(self) -> str:
        return f"{self.mode} simulation server(s) {', '.join(self.endpoints)} ({self.protocol}, model {self.model!r})"

    def __repr__(self) -> str:
        return (
            f"SimulationSearchTool(mode={self.mode!r}, endpoints={self.endpoints}, model={self.model!r}, "
            f"protocol={self.protocol!r}, topk={self.topk}, concurrency={self.concurrency})"
        )

    # ----------------------------------------------------------------- reproducibility
    def state_dict(self) -> dict[str, int]:
        """The request counter that the per-request seeds derive from."""
        return {"requests_sent": self._counter}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "requests_sent" not in state:
            raise ValueError("SimulationSearchTool.load_state_dict: missing key 'requests_sent'")
        self._counter = require_int("requests_sent", state["requests_sent"], 0)

    # ----------------------------------------------------------------- requests
    def build_prompt(self, request: SearchRequest) -> str:
        """The simulation prompt of ``request``, from its own question and first gold answer."""
        answer = _first_answer(request.golden_answers)
        if not isinstance(request.question, str) or not request.question.strip() or answer is None:
            raise ValueError(
                f"{self.mode}: request for row {request.row} (query {request.query!r}) needs its row's "
                "question and at least one gold answer"
            )
        template = self.prompt_templates.get("noisy" if request.noisy else "useful")
        if self.mode == "simulate_prompt" and template is not None:
            return render_simulate_prompt(template, request.query, request.question, answer, request.noisy, self.topk)
        return build_simulation_prompt(self.mode, request.query, request.question, answer, request.noisy, self.topk)

    def chat_text(self, prompt: str) -> str:
        """The text sent to ``/generate`` (sglang_native): the chat template applied to the messages
        of ``prompt``, generation prompt added. Needs the tokenizer (loaded on the first search)."""
        if self._chat_tokenizer is None:
            raise RuntimeError("SimulationSearchTool.chat_text: the chat tokenizer is not loaded yet")
        messages = simulation_messages(prompt, self.system_prompt)
        return self._chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def _load_chat_tokenizer(self, session: aiohttp.ClientSession) -> None:
        """Load the tokenizer whose chat template sglang_native requests are rendered with."""
        name = self.tokenizer
        if name is None:
            url = self.endpoints[0] + "/get_model_info"
            try:
                async with session.get(url, allow_redirects=False) as response:
                    info = await response.json(content_type=None) if response.status == 200 else None
            except Exception as exc:
                raise RuntimeError(f"{self.mode}: cannot ask {url} for the served model's tokenizer "
                                   f"({describe_error(exc)}); set retriever.simulation.tokenizer") from None
            name = (info.get("tokenizer_path") or info.get("model_path")) if isinstance(info, dict) else None
            if not isinstance(name, str) or not name:
                raise RuntimeError(f"{self.mode}: {url} names no tokenizer_path or model_path; set "
                                   "retriever.simulation.tokenizer (the simulator's Hugging Face folder)")
        from transformers import AutoTokenizer

        try:
            tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, name)
        except Exception as exc:
            raise RuntimeError(f"{self.mode}: cannot load the simulator's tokenizer {name!r} "
                               f"(retriever.simulation.tokenizer): {describe_error(exc)}") from None
        if not getattr(tokenizer, "chat_template", None):
            raise RuntimeError(f"{self.mode}: the tokenizer {name!r} (retriever.simulation.tokenizer) has no chat "
                               "template; sglang_native requests need one to render the messages")
        self._chat_tokenizer = tokenizer

    def _payload(self, prompt: str, seed: int) -> tuple[str, dict[str, Any]]:
        if self.protocol == "openai":
            messages = simulation_messages(prompt, self.system_prompt)
            body = {
                "model": self.model,
                "messages": messages,
                "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "seed": seed,
            }
            return "/v1/chat/completions", body
        sampling = {"max_new_tokens": self.max_tokens, "temperature": self.temperature}
        body = {"text": self.chat_text(prompt), "sampling_params": sampling}
        return "/generate", body

    def _reply_text(self, data: Any) -> str:
        try:
            if self.protocol == "openai":
                text = data["choices"][0]["message"]["content"]
            else:
                text = (data[0] if isinstance(data, list) else data)["text"]
        except (KeyError, IndexError, TypeError) as exc:
            raise MalformedResponseError(f"reply lacks the generated text ({describe_error(exc)})") from None
        if not isinstance(text, str):
            raise MalformedResponseError(f"generated text is not a string: {text!r}")
        return text

    async def _ensure_session(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The tool's pooled session and the semaphore that bounds the requests in flight."""
        return await self._http.get()

    async def _one(self, request: SearchRequest, prompt: str, number: int) -> SearchResult:
        session, semaphore = await self._ensure_session()
        start = time.monotonic()

        async def attempt(i: int) -> str:
            base = self.endpoints[(number + i) % len(self.endpoints)]
            path, body = self._payload(prompt, derive_seed(self.seed, number, i))
            data = await post_json(session, base + path, body)
            return clean_simulated_documents(self._reply_text(data), self.topk)

        rng = random.Random(derive_seed(self.seed, number, "jitter"))
        try:
            documents = await call_with_retries(
                attempt, self.policy, rng, semaphore=semaphore, on_retry=lambda _: self._metrics.add_retry()
            )
        except MalformedResponseError as exc:  # the last sample arrived but did not parse: content, not outage
            return SearchResult(
                exc.text or NO_INFORMATION,
                ok=False,
                malformed=True,
                error=describe_error(exc),
                latency_s=time.monotonic() - start,
            )
        except Exception as exc:  # a failed query must not fail the batch
            return SearchResult(NO_INFORMATION, ok=False, error=describe_error(exc), latency_s=time.monotonic() - start)
        return SearchResult(documents, latency_s=time.monotonic() - start)

    async def _search_uncached(self, requests: list[SearchRequest]) -> list[SearchResult]:
        prompts = [self.build_prompt(r) for r in requests]  # bad rows fail before any request is sent
        if self.protocol == "sglang_native" and self._chat_tokenizer is None:
            session, _ = await self._ensure_session()
            await self._load_chat_tokenizer(session)
        first = self._counter
        self._counter += len(requests)
        return list(await asyncio.gather(*(self._one(r, p, first + k) for k, (r, p) in enumerate(zip(requests, prompts)))))

    async def _aclose(self) -> None:
        await self._http.close()
