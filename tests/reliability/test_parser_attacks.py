"""Point 4: model output that attacks the parser, through the whole agent-loop path.

``tests/zerosearch/test_actions.py`` checks ``parse_action`` alone (tag soup, huge inputs). Here the
hostile text is what the policy "generates": nested, unclosed, huge or many ``<search>`` tags,
control characters, megabyte queries. The loop must do bounded work, never crash, send only capped
queries, train exactly the sampled tokens and never exceed the response budget. A regex reference
parser (independent of the ``find``-based one) checks the chosen action on small inputs.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import agent_config, prompt_batch

from verl.workers.rollout.base import GenerationOutput
from zerosearch.actions import parse_action
from zerosearch.agent import SearchAgentLoop
from zerosearch.tools.base import SearchResult, SearchTool

CAP = 64  # retriever.max_query_chars in these tests


class RecordingTool(SearchTool):
    """Answers every query with one short document and records the queries."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    async def _search_uncached(self, requests):
        self.queries.extend(r.query for r in requests)
        return [SearchResult(documents="Doc 1: fine") for _ in requests]

    def describe(self) -> str:
        return "recording tool"


class HostilePolicy:
    """Row k emits ``turns[k][t]`` (text) in its t-th generation; records the ids it returned."""

    def __init__(self, tok, turns: list[list[str]]) -> None:
        self.tok, self.turns = tok, turns
        self.count = [0] * len(turns)
        self.emitted: list[list[list[int]]] = [[] for _ in turns]

    def __call__(self, prompts, sampling):
        outs = []
        for p in prompts:
            row = int(re.search(r"row (\d+):", self.tok.decode(p)).group(1))
            text = self.turns[row][min(self.count[row], len(self.turns[row]) - 1)]
            self.count[row] += 1
            ids = self.tok.encode(text, add_special_tokens=False)
            self.emitted[row].append(ids)
            outs.append(GenerationOutput(token_ids=ids, log_probs=[-1.0] * len(ids), finish_reason="stop"))
        return outs


def run_loop(tok, turns, max_response_length=512, max_turns=2):
    cfg = agent_config(6001, max_query_chars=CAP, max_turns=max_turns, max_obs_length=32)
    cfg.data.max_response_length = max_response_length
    tool = RecordingTool()
    loop = SearchAgentLoop(cfg, tok, search_tool=tool)
    policy = HostilePolicy(tok, turns)
    try:
        out = loop.run(prompt_batch(tok, len(turns)), policy, step=1)
    finally:
        loop.close()
        tool.close()
    return out, policy, tool


def sampled_segments(out, row):
    """The runs of response tokens with loss (one per generation turn), as id lists."""
    ids = out.batch["responses"][row].tolist()
    mask = out.batch["response_mask"][row].tolist()
    segments, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


def check_invariants(out, policy, tool, max_response_length):
    width = out.batch["responses"].shape[1]
    assert width <= max_response_length
    for row in range(len(out)):
        assert int(out.batch["attention_mask"][row, -width:].sum()) <= max_response_length
        # each trained segment is a prefix of what the policy emitted in that turn: the trained
        # tokens are exactly sampled tokens, never re-tokenized text
        segments = sampled_segments(out, row)
        assert len(segments) <= len(policy.emitted[row])
        for seg, emitted in zip(segments, policy.emitted[row]):
            assert seg == emitted[: len(seg)]
    for q in tool.queries:
        assert 0 < len(q) <= CAP and "<search>" not in q and "</search>" not in q


def reference_search(text: str) -> str | None:
    """The query of the first action if it is a search, by regex (None when the first closed action is
    an answer or there is none): the innermost ``<search>`` before the first ``</search>``."""
    s = re.search(r"<search>((?:(?!<search>).)*?)</search>", text, re.S)
    a = re.search(r"<answer>((?:(?!<answer>).)*?)</answer>", text, re.S)
    if s is None or (a is not None and a.end() < s.end()):
        return None
    return s.group(1).strip()[:CAP].strip() or None


_PIECES = st.sampled_from(["<search>", "</search>", "<answer>", "</answer>", "<search", "search>", "</", "<",
                           "q", "é", " ", "\n", "\x00", "\x1b[2J", "\r", "\t", "\u202e", "\ufeff"])
_TEXT = st.lists(_PIECES, min_size=1, max_size=40).map("".join)


@settings(max_examples=150, deadline=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_TEXT)
def test_parser_matches_a_regex_reference_on_hostile_text(text):
    action = parse_action(text, kinds=("search", "answer"), max_query_chars=CAP)
    expected = reference_search(text)
    assert (action.content if action.kind == "search" else None) == expected


@settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_TEXT, min_size=1, max_size=3), min_size=1, max_size=3))
def test_agent_loop_survives_hostile_generations(small_tokenizer, turns):
    out, policy, tool = run_loop(small_tokenizer, turns, max_response_length=256)
    check_invariants(out, policy, tool, 256)
    assert len(tool.queries) <= 2 * len(turns)  # at most max_turns searches per row


@pytest.mark.parametrize("name,text,queries", [
    ("megabyte query", "<search>" + "x" * 1_000_000 + "</search>", ["x" * CAP]),
    ("many opening tags", "<search>" * 100_000 + "q</search>", ["q"]),
    ("many closed searches", "<search>q</search>" * 50_000, ["q"]),
    ("unclosed megabyte", "<search>" + "y" * 1_000_000, []),
    ("control characters", "<search>\x00\x1b[31m\r\n" * 20_000 + "</search>", ["\x00\x1b[31m"]),
])
def test_huge_generations_do_bounded_work(small_tokenizer, name, text, queries):
    n_ids = len(small_tokenizer.encode(text, add_special_tokens=False))
    budget = n_ids + 1000  # room for the whole generation: the parser, not the budget, must cope
    start = time.perf_counter()
    out, policy, tool = run_loop(small_tokenizer, [[text]], max_response_length=budget, max_turns=1)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"{name}: {elapsed:.1f} s"
    check_invariants(out, policy, tool, budget)
    assert tool.queries == queries


def test_generation_longer_than_the_budget_is_cut_to_it(small_tokenizer):
    text = "<search>" + "z" * 200_000 + "</search>"
    out, policy, tool = run_loop(small_tokenizer, [[text]], max_response_length=300)
    assert int(out.batch["response_mask"][0].sum()) <= 300
    assert tool.queries == []  # the closing tag lies past the budget: no search
    check_invariants(out, policy, tool, 300)
