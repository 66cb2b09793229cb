"""SearchAgentLoop: the multi-turn rollout in which the policy searches before it answers.

One trajectory = the prompt, then up to ``retriever.max_turns`` rounds of

    generate (stops at ``</search>`` or ``</answer>``) -> parse the action ->
    answer: done | search: one batched tool call for the whole turn -> ``<information>`` block |
    anything else: the self-correction message,

then, for rows still going, one last generation that stops at ``</search>`` or ``</answer>``, as in
every round: an answer ends the trajectory answered; a search written there ends it with no answer
and no observation (the query is not run, so the policy cannot follow it with documents of its
own and an answer; the reward scores the trajectory 0). Everything is token in, token out: the
sampled ids and their log-probs are appended exactly as the engine returned them (cut only after
the closing tag of the action, in token space), with loss-mask 1; observations and correction
messages are tokenized on their own with loss-mask 0. The response side never exceeds ``data.max_response_length`` and the prompt is
never cut.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from verl.agent_loop.base import AgentLoopBase, GenerateFn, TimedGenerate
from verl.protocol import DataProto
from verl.utils.torch_functional import compute_position_id_with_mask, pad_2d_list_to_length
from verl.workers.rollout.base import GenerationOutput, SamplingConfig
from zerosearch.actions import ANSWER, INVALID, SEARCH, Action, closing_tag, parse_action
from zerosearch.curriculum import NoiseCurriculum
from zerosearch.prompts import format_observation, invalid_action_message, simulate_prompt_templates
from zerosearch.tools import (
    SEARCH_MODES,
    FailurePolicy,
    SearchHealth,
    SearchRequest,
    SearchResult,
    SearchTool,
    build_search_tool,
)

# Stand-in for the documents when splitting the observation template into its tag parts.
_DOCS_SENTINEL = "\x00documents\x00"


@dataclass
class _Trajectory:
    """The token stream of one row: fixed prompt ids + a growing response."""

    prompt_ids: list[int]
    question: str
    golden_answers: list[str]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    response_log_probs: list[float] = field(default_factory=list)
    done: bool = False
    answered: bool = False
    hit_length_cap: bool = False
    num_turns: int = 0
    num_searches: int = 0
    num_valid_actions: int = 0
    observation_tokens: int = 0
    search_queries: list[str] = field(default_factory=list)

    def context(self) -> list[int]:
        """Ids the next generation conditions on: the whole prompt + the response so far."""
        return self.prompt_ids + self.response_ids

    def append_sampled(self, ids: Sequence[int], log_probs: Sequence[float]) -> None:
        self.response_ids.extend(ids)
        self.response_mask.extend([1] * len(ids))
        self.response_log_probs.extend(log_probs)

    def append_observation(self, ids: Sequence[int]) -> None:
        self.response_ids.extend(ids)
        self.response_mask.extend([0] * len(ids))
        self.response_log_probs.extend([0.0] * len(ids))
        self.observation_tokens += len(ids)


def _cfg(node: Any, key: str, where: str) -> Any:
    """``node[key]``, with an error naming the full config key when it is missing."""
    if node is None or key not in node:
        raise KeyError(f"SearchAgentLoop: config key '{where}.{key}' is required")
    return node[key]


def _as_str_list(value: Any, where: str) -> list[str]:
    """A list/tuple/numpy array of strings -> list[str] (a lone string is one answer)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in list(value)]
    raise TypeError(f"SearchAgentLoop: {where} must be a list of strings, got {type(value).__name__}")


def _pad_floats(rows: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """Right-pad ragged float rows with 0.0 into a (len(rows), width) float32 tensor."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(list(row), dtype=torch.float32)
    return out


class SearchAgentLoop(AgentLoopBase):
    """Multi-turn generation with search (see the module docstring).

    Args:
        config: the whole trainer config; reads ``retriever.*``, ``actor_rollout_ref.rollout.*``,
            ``data.max_response_length`` and ``trainer.total_training_steps``.
        tokenizer: the policy's Hugging Face tokenizer (needs ``pad_token_id``).
        search_tool: tool for training rollouts (default: built from ``retriever.search_mode``).
        val_search_tool: tool for validation (default: built from ``retriever.search_engine``).
    """

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        search_tool: SearchTool | None = None,
        val_search_tool: SearchTool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, tokenizer, **kwargs)
        self.retriever_cfg = _cfg(config, "retriever", "<root>")
        self.rollout_cfg = _cfg(_cfg(config, "actor_rollout_ref", "<root>"), "rollout", "actor_rollout_ref")
        data_cfg = _cfg(config, "data", "<root>")

        self.max_turns = int(_cfg(self.retriever_cfg, "max_turns", "retriever"))
        self.max_obs_length = int(_cfg(self.retriever_cfg, "max_obs_length", "retriever"))
        self.failure_policy = FailurePolicy.from_config(self.retriever_cfg)
        self.max_query_chars = int(self.retriever_cfg.max_query_chars)
        self.max_new_tokens = int(_cfg(self.rollout_cfg, "max_new_tokens", "actor_rollout_ref.rollout"))
        self.max_response_length = int(_cfg(data_cfg, "max_response_length", "data"))
        if self.max_turns < 0:
            raise ValueError(f"SearchAgentLoop: retriever.max_turns must be >= 0, got {self.max_turns}")
        if self.max_new_tokens < 1 or self.max_response_length < 1 or self.max_query_chars < 1:
            raise ValueError(
                "SearchAgentLoop: actor_rollout_ref.rollout.max_new_tokens, data.max_response_length and "
                f"retriever.max_query_chars must be >= 1, got {self.max_new_tokens}, "
                f"{self.max_response_length}, {self.max_query_chars}"
            )

        for key in ("search_mode", "search_engine"):
            mode = _cfg(self.retriever_cfg, key, "retriever")
            if mode not in SEARCH_MODES:
                raise ValueError(
                    f"SearchAgentLoop: retriever.{key}={mode!r} is not a search mode; valid: {', '.join(SEARCH_MODES)}"
                )

        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            raise ValueError("SearchAgentLoop: the tokenizer has no pad_token_id; set one in its tokenizer config")

        # The user's wording (retriever.invalid_action_template, simulation.prompt_*_template) is
        # read and checked here, so a bad template file stops the run before any rollout.
        self._invalid_ids = self._encode(invalid_action_message(self.retriever_cfg))
        simulate_prompt_templates(self.retriever_cfg)
        formatted = format_observation(_DOCS_SENTINEL)
        if formatted.count(_DOCS_SENTINEL) != 1:
            raise ValueError("SearchAgentLoop: format_observation must place the documents exactly once")
        head, tail = formatted.split(_DOCS_SENTINEL)
        self._format_observation, self._obs_head, self._obs_tail = format_observation, head, tail
        self._obs_head_ids, self._obs_tail_ids = self._encode(head), self._encode(tail)
        tags = len(self._obs_head_ids) + len(self._obs_tail_ids)
        if self.max_obs_length <= tags:
            raise ValueError(
                f"SearchAgentLoop: retriever.max_obs_length={self.max_obs_length} leaves no room for documents "
                f"(the <information> tags alone take {tags} tokens)"
            )

        self._stops = [closing_tag(SEARCH), closing_tag(ANSWER)]

        self._tools: dict[str, SearchTool | None] = {"train": search_tool, "val": val_search_tool}
        # One failure window per tool, kept for the whole run (across rounds and steps).
        self._health: dict[str, SearchHealth] = {}
        self._owned_tools: list[SearchTool] = []
        self._curriculum: Any = None

    # ------------------------------------------------------------------ helpers
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def _decode(self, ids: Sequence[int]) -> str:
        # Special tokens are kept so that tag tokens registered as special still parse.
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def _single_token_ids(self, texts: Sequence[str]) -> list[int]:
        """Ids of the stop strings that the tokenizer encodes as one token."""
        ids = [self._encode(t) for t in texts]
        return [i[0] for i in ids if len(i) == 1]

    def _mode(self, validate: bool) -> str:
        key = "search_engine" if validate else "search_mode"
        return str(_cfg(self.retriever_cfg, key, "retriever"))

    def _tool(self, validate: bool) -> SearchTool:
        slot = "val" if validate else "train"
        if self._tools[slot] is None:
            tool = build_search_tool(self.retriever_cfg, self._mode(validate))
            self._tools[slot] = tool
            self._owned_tools.append(tool)
        return self._tools[slot]

    def _health_of(self, validate: bool) -> SearchHealth:
        """The run-long failure window of the training or validation tool."""
        slot = "val" if validate else "train"
        if slot not in self._health:
            self._health[slot] = SearchHealth(self.failure_policy, self._tool(validate).describe())
        return self._health[slot]

    def _uses_noise(self, validate: bool) -> bool:
        return not validate and self._mode(validate).startswith("simulate")

    def _get_curriculum(self) -> Any:
        if self._curriculum is None:
            trainer_cfg = self.config.get("trainer")
            total = trainer_cfg.get("total_training_steps") if trainer_cfg is not None else None
            if self.retriever_cfg.get("total_steps") is None and total is None:
                raise ValueError(
                    "SearchAgentLoop: the noise curriculum needs retriever.total_steps or "
                    "trainer.total_training_steps; both are null"
                )
            self._curriculum = NoiseCurriculum.from_config(self.retriever_cfg, total)
        return self._curriculum

    def _sampling(self, validate: bool, max_new_tokens: int) -> SamplingConfig:
        stops = self._stops
        if validate:
            vk = _cfg(self.rollout_cfg, "val_kwargs", "actor_rollout_ref.rollout")
            knobs = dict(
                do_sample=bool(_cfg(vk, "do_sample", "actor_rollout_ref.rollout.val_kwargs")),
                temperature=float(_cfg(vk, "temperature", "actor_rollout_ref.rollout.val_kwargs")),
                top_p=float(_cfg(vk, "top_p", "actor_rollout_ref.rollout.val_kwargs")),
                top_k=int(vk.get("top_k", -1)),  # val_kwargs may leave top-k off
            )
        else:
            rc, where = self.rollout_cfg, "actor_rollout_ref.rollout"
            knobs = dict(
                do_sample=True,
                temperature=float(_cfg(rc, "temperature", where)),
                top_p=float(_cfg(rc, "top_p", where)),
                top_k=int(_cfg(rc, "top_k", where)),
            )
        return SamplingConfig(
            max_new_tokens=max_new_tokens, stop=list(stops), stop_token_ids=self._single_token_ids(stops), **knobs
        )

    def _cut_after(self, ids: list[int], text: str, end: int) -> int:
        """Fewest leading ids whose decoding covers ``text[:end]`` (binary search, O(log n) decodes)."""
        if end >= len(text):
            return len(ids)
        target = text[:end]
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._decode(ids[:mid]).startswith(target):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _observation_ids(self, documents: str, budget: int) -> tuple[list[int], bool]:
        """Tag ids around the documents cut to fit ``budget`` tokens; (ids, documents were cut)."""
        room = budget - len(self._obs_head_ids) - len(self._obs_tail_ids)
        formatted = self._format_observation(documents)
        if not (formatted.startswith(self._obs_head) and formatted.endswith(self._obs_tail)):
            raise ValueError("SearchAgentLoop: format_observation must wrap the documents in fixed text")
        doc_text = formatted[len(self._obs_head) : len(formatted) - len(self._obs_tail)]
        doc_ids = self._encode(doc_text)
        cut = len(doc_ids) > room
        return self._obs_head_ids + doc_ids[:room] + self._obs_tail_ids, cut

    def _check_output(self, out: GenerationOutput, row: int) -> None:
        if len(out.token_ids) != len(out.log_probs):
            raise ValueError(
                f"SearchAgentLoop: generate() returned {len(out.token_ids)} token ids but {len(out.log_probs)} "
                f"log-probs for row {row}"
            )

    # ------------------------------------------------------------------ the loop
    def _trajectories(self, batch: DataProto) -> list[_Trajectory]:
        nt = batch.non_tensor_batch
        for col in ("question", "golden_answers"):
            if col not in nt:
                raise KeyError(f"SearchAgentLoop: the batch needs the non-tensor column '{col}'")
        if "raw_prompt_ids" in nt:
            prompts = [[int(t) for t in ids] for ids in nt["raw_prompt_ids"]]
        else:
            for key in ("input_ids", "attention_mask"):
                if key not in batch.batch:
                    raise KeyError(
                        f"SearchAgentLoop: the batch needs the tensor '{key}' (or the non-tensor 'raw_prompt_ids')"
                    )
            ids, mask = batch.batch["input_ids"], batch.batch["attention_mask"].bool()
            prompts = [ids[i][mask[i]].tolist() for i in range(len(batch))]
        return [
            _Trajectory(
                prompt_ids=p,
                question=str(nt["question"][i]),
                golden_answers=_as_str_list(nt["golden_answers"][i], f"golden_answers of row {i}"),
            )
            for i, p in enumerate(prompts)
        ]

    def run(self, batch: DataProto, generate: GenerateFn, *, step: int, validate: bool = False) -> DataProto:
        """Roll out every row of ``batch`` (see the module docstring); ``step`` is 1-based.

        Returns the AgentLoopBase output. ``responses`` are right-padded to the longest response of
        this batch (at most ``data.max_response_length``), ``prompts`` left-padded to its longest
        prompt. Per-row non-tensors added: ``num_turns`` (generations), ``num_searches`` (executed),
        ``num_valid_actions``, ``answered``, ``search_queries`` (every query written before the last
        round), ``trajectory_text`` (prompt + response, decoded). ``meta_info["timing"]``: seconds
        in ``gen`` (generation) and ``search`` (tool calls). ``meta_info["metrics"]``:
        ``search/turns_mean|turns_max|valid_action_rate|searches_per_row|answered_rate|
        length_cap_rate|p_noisy|noisy_share|obs_tokens_share|obs_truncated_share|failure_rate|
        malformed_rate`` and the tool's ``pop_metrics()`` under ``search/``. A malformed reply is
        still an observation (its text as written) and counts in ``malformed_rate``, not in
        ``failure_rate``. After every search round the tool's run-long ``SearchHealth`` raises
        ``SearchFailureError`` when the server looks down and ``MalformedRepliesError`` when nearly
        all its replies are malformed (``zerosearch/tools/failure.py``; ``retriever.max_failure_rate``,
        ``max_malformed_rate``, ``failure_window``, ``failure_min_requests``, ``failure_streak_rounds``).
        """
        rows = self._trajectories(batch)
        generate = TimedGenerate(generate)
        search_s = 0.0
        tool = self._tool(validate) if self.max_turns > 0 else None
        if tool is not None:
            tool.pop_metrics()  # drop counts left by a rollout that stopped with an error: they belong to no step
        noise = self._uses_noise(validate)
        p_noisy = 0.0
        if noise:
            curriculum = self._get_curriculum()
            curriculum.set_step(step)
            p_noisy = float(curriculum.p_noisy())
        health = self._health_of(validate) if tool is not None else None
        stats = {"requests": 0, "noisy": 0, "failed": 0, "malformed": 0, "obs_cut": 0}

        for turn in range(self.max_turns + 1):
            final = turn == self.max_turns
            for r in rows:
                if not r.done and len(r.response_ids) >= self.max_response_length:
                    r.done, r.hit_length_cap = True, True
            active = [i for i, r in enumerate(rows) if not r.done]
            if not active:
                break
            budgets = {i: self.max_response_length - len(rows[i].response_ids) for i in active}
            sampling = self._sampling(validate, min(self.max_new_tokens, max(budgets.values())))
            outputs = generate([rows[i].context() for i in active], sampling)
            if len(outputs) != len(active):
                raise ValueError(
                    f"SearchAgentLoop: generate() returned {len(outputs)} outputs for {len(active)} prompts"
                )

            searching: list[tuple[int, str]] = []
            for i, out in zip(active, outputs):
                self._check_output(out, i)
                query = self._take_turn(rows[i], out, budgets[i], final)
                if query is not None:
                    searching.append((i, query))

            if searching:
                start = time.perf_counter()
                self._search(rows, searching, tool, health, noise, stats)
                search_s += time.perf_counter() - start

        out = self._assemble(batch, rows, p_noisy, stats, tool)
        out.meta_info["timing"] = {"gen": generate.seconds, "search": search_s}
        return out

    def _take_turn(self, row: _Trajectory, out: GenerationOutput, budget: int, final: bool) -> str | None:
        """Append one generation to ``row`` and act on it; returns the query to run, if any."""
        ids, log_probs = list(out.token_ids), list(out.log_probs)
        if len(ids) > budget:  # the call's max_new_tokens serves the row with the most room left
            ids, log_probs = ids[:budget], log_probs[:budget]
        text = self._decode(ids)
        action: Action = parse_action(text, kinds=(SEARCH, ANSWER), max_query_chars=self.max_query_chars)
        if action.kind != INVALID:
            keep = self._cut_after(ids, text, action.end)
            ids, log_probs = ids[:keep], log_probs[:keep]
        row.append_sampled(ids, log_probs)
        row.num_turns += 1
        room = self.max_response_length - len(row.response_ids)

        if action.kind != INVALID:
            row.num_valid_actions += 1
        if action.kind == ANSWER:
            row.done, row.answered = True, True
            return None
        if final:  # a search here is not run: the trajectory ends without an answer or an observation
            row.done, row.hit_length_cap = True, action.kind == INVALID and room <= 0
            return None
        if action.kind == SEARCH:
            row.search_queries.append(action.content)
            if room > len(self._obs_head_ids) + len(self._obs_tail_ids):
                return action.content
        elif room >= len(self._invalid_ids):
            row.append_observation(self._invalid_ids)
            return None
        row.done, row.hit_length_cap = True, True  # no room for the observation
        return None

    def _search(
        self,
        rows: list[_Trajectory],
        searching: list[tuple[int, str]],
        tool: SearchTool,
        health: SearchHealth,
        noise: bool,
        stats: dict,
    ) -> None:
        """One batched tool call for every query of the turn; ``health`` judges the outcomes (and
        may stop the run); appends each row's observation (a malformed reply's text included)."""
        flags = [bool(f) for f in self._get_curriculum().draw(len(searching))] if noise else [False] * len(searching)
        requests = [
            SearchRequest(query=q, question=rows[i].question, golden_answers=rows[i].golden_answers, noisy=f, row=i)
            for (i, q), f in zip(searching, flags)
        ]
        results: list[SearchResult] = tool.search(requests)
        if len(results) != len(requests):
            raise ValueError(
                f"SearchAgentLoop: {tool.describe()} returned {len(results)} results for {len(requests)} queries"
            )
        stats["requests"] += len(requests)
        stats["noisy"] += sum(flags)
        stats["failed"] += sum(res.failed for res in results)
        stats["malformed"] += sum(res.malformed for res in results)
        health.observe(results)
        for (i, _), res in zip(searching, results):
            row = rows[i]
            room = self.max_response_length - len(row.response_ids)
            obs, cut = self._observation_ids(res.documents, min(self.max_obs_length, room))
            row.append_observation(obs)
            row.num_searches += 1
            stats["obs_cut"] += int(cut)

    # ------------------------------------------------------------------ output
    def _assemble(
        self, batch: DataProto, rows: list[_Trajectory], p_noisy: float, stats: dict, tool: SearchTool | None
    ) -> DataProto:
        pad = self.pad_token_id
        prompts = pad_2d_list_to_length([r.prompt_ids for r in rows], pad, left_pad=True)
        # Responses are padded to the longest in this batch (not data.max_response_length) to save compute.
        width = max(1, max(len(r.response_ids) for r in rows))
        responses = pad_2d_list_to_length([r.response_ids for r in rows], pad, max_length=width)
        response_mask = pad_2d_list_to_length([r.response_mask for r in rows], 0, max_length=width)
        log_probs = _pad_floats([r.response_log_probs for r in rows], width)
        prompt_attn = pad_2d_list_to_length([[1] * len(r.prompt_ids) for r in rows], 0, left_pad=True)
        resp_attn = pad_2d_list_to_length([[1] * len(r.response_ids) for r in rows], 0, max_length=width)
        attention_mask = torch.cat([prompt_attn, resp_attn], dim=1)

        def column(values: list) -> np.ndarray:
            arr = np.empty(len(values), dtype=object)
            for k, v in enumerate(values):
                arr[k] = v
            return arr

        non_tensors = dict(batch.non_tensor_batch)
        non_tensors.update(
            num_turns=column([r.num_turns for r in rows]),
            num_searches=column([r.num_searches for r in rows]),
            num_valid_actions=column([r.num_valid_actions for r in rows]),
            answered=column([r.answered for r in rows]),
            search_queries=column([list(r.search_queries) for r in rows]),
            trajectory_text=column(
                [self.tokenizer.decode(r.prompt_ids + r.response_ids, skip_special_tokens=True) for r in rows]
            ),
        )
        meta = dict(batch.meta_info)
        meta["metrics"] = self._metrics(rows, p_noisy, stats, tool)
        return DataProto.from_dict(
            tensors={
                "prompts": prompts,
                "responses": responses,
                "input_ids": torch.cat([prompts, responses], dim=1),
                "attention_mask": attention_mask,
                "position_ids": compute_position_id_with_mask(attention_mask),
                "response_mask": response_mask,
                "rollout_log_probs": log_probs,
            },
            non_tensors=non_tensors,
            meta_info=meta,
        )

    def _metrics(self, rows: list[_Trajectory], p_noisy: float, stats: dict, tool: SearchTool | None) -> dict:
        n = len(rows)
        turns = [r.num_turns for r in rows]
        generations = sum(turns)
        response_tokens = sum(len(r.response_ids) for r in rows)
        observation_tokens = sum(r.observation_tokens for r in rows)
        requests = stats["requests"]
        metrics = {f"search/{key}": float(value) for key, value in (tool.pop_metrics() if tool else {}).items()}
        metrics.update({
            "search/turns_mean": sum(turns) / n,
            "search/turns_max": float(max(turns)),
            "search/valid_action_rate": sum(r.num_valid_actions for r in rows) / generations if generations else 0.0,
            "search/searches_per_row": sum(r.num_searches for r in rows) / n,
            "search/answered_rate": sum(r.answered for r in rows) / n,
            "search/length_cap_rate": sum(r.hit_length_cap for r in rows) / n,
            "search/p_noisy": p_noisy,
            "search/noisy_share": stats["noisy"] / requests if requests else 0.0,
            "search/obs_tokens_share": observation_tokens / response_tokens if response_tokens else 0.0,
            "search/obs_truncated_share": stats["obs_cut"] / requests if requests else 0.0,
            "search/failure_rate": stats["failed"] / requests if requests else 0.0,
            "search/malformed_rate": stats["malformed"] / requests if requests else 0.0,
        })
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The curriculum state (step and RNG) and the training tool's state (e.g. the simulator's
        request counter that its per-request seeds derive from), so a resumed run continues the same
        schedule and sends the same requests. The failure windows (``SearchHealth``) are left out on
        purpose: a resumed run starts judging its servers afresh, since the server it meets after a
        restart is not the one whose replies filled the window (and an outage that killed the run
        must not count against the server that came back)."""
        state = {"curriculum": self._curriculum.state_dict()} if self._curriculum is not None else {}
        tool = self._tools["train"]
        if tool is not None and hasattr(tool, "state_dict"):
            state["train_tool"] = tool.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "curriculum" in state:
            self._get_curriculum().load_state_dict(state["curriculum"])
        if "train_tool" in state:
            tool = self._tool(validate=False)
            if not hasattr(tool, "load_state_dict"):
                raise ValueError(
                    f"SearchAgentLoop: the checkpoint holds search-tool state but {tool.describe()} cannot load it "
                    "(retriever.search_mode changed since the checkpoint?)"
                )
            tool.load_state_dict(state["train_tool"])

    def close(self) -> None:
        """Close the tools this loop built (injected tools belong to the caller)."""
        while self._owned_tools:
            self._owned_tools.pop().close()
