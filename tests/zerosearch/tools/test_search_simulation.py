"""SimulationSearchTool against a real local fake server (tests/zerosearch/tools/search_fakes.py)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from search_fakes import dead_port

from zerosearch.tools import NO_INFORMATION, SearchRequest
from zerosearch.tools.retry import MalformedResponseError
from zerosearch.tools.simulation import SimulationSearchTool, clean_simulated_documents

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"


def make_tool(server, **kwargs) -> SimulationSearchTool:
    args = dict(hosts="127.0.0.1", port=server.port, model="sim-model", topk=5, temperature=0.7, max_tokens=321,
                concurrency=8, timeout=5.0, max_retries=2, backoff=0.01, seed=7)
    args.update(kwargs)
    return SimulationSearchTool(**args)


def rows(n: int, noisy=None) -> list[SearchRequest]:
    return [
        SearchRequest(
            query=f"query {i}",
            question=f"question number {i}?",
            golden_answers=[f"answer{i}", f"alias{i}"],
            noisy=bool(noisy[i]) if noisy is not None else False,
            row=i,
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- post-processing (no server)
def test_clean_keeps_topk_documents_and_collapses_blank_lines():
    text = "\n\n".join(f"Doc {i}: text {i}" for i in range(1, 13)) + "\n"
    assert clean_simulated_documents(text, 3) == "Doc 1: text 1\nDoc 2: text 2\nDoc 3: text 3"
    # "Doc 10" must not be taken for "Doc 1", nor "Doc 1" cut at "Doc 10".
    nine = clean_simulated_documents(text, 9)
    assert nine.splitlines() == [f"Doc {i}: text {i}" for i in range(1, 10)]
    assert clean_simulated_documents("  Doc 1: only one\n\n \n", 5) == "Doc 1: only one"


def test_clean_rejects_replies_without_a_first_document():
    for garbage in ["", "I cannot help with that.", "Here: Document one is ...", "Doc 2: starts late"]:
        with pytest.raises(MalformedResponseError) as err:
            clean_simulated_documents(garbage, 5)
        assert err.value.text == garbage  # kept for use as the documents
    # The tiny simulator's way: "Doc 19987" is not "Doc 1"; cleaned (blank lines, cut at Doc 6) but kept.
    with pytest.raises(MalformedResponseError) as err:
        clean_simulated_documents("Doc 19987. Its.\n\n\nIts in Grumdouth.\nDoc 6: cut here\n", 5)
    assert err.value.text == "Doc 19987. Its.\nIts in Grumdouth."


def test_missing_question_or_answer_is_an_error_before_any_request(fake_server):
    with make_tool(fake_server) as tool:
        with pytest.raises(ValueError, match="row 3"):
            tool.search([SearchRequest(query="q", question="Q?", golden_answers=[], row=3)])
        with pytest.raises(ValueError, match="row 4"):
            tool.search([SearchRequest(query="q", question="", golden_answers=["a"], row=4)])
    assert fake_server.state.bodies(CHAT) == []


def test_bad_arguments_name_the_key():
    with pytest.raises(ValueError, match="protocol"):
        SimulationSearchTool(protocol="grpc")
    with pytest.raises(ValueError, match="mode"):
        SimulationSearchTool(mode="google")
    with pytest.raises(ValueError, match="concurrency"):
        SimulationSearchTool(concurrency=0)
    with pytest.raises(ValueError, match="timeout"):
        SimulationSearchTool(timeout=0)


# ---------------------------------------------------------------- against the fake server
def test_each_query_gets_its_own_rows_question_and_answer(fake_server):
    noisy = [False, True, False, True, True, False]
    requests = rows(6, noisy)
    # Reverse order so that a positional mix-up could not pass by accident.
    requests = requests[::-1]
    with make_tool(fake_server, mode="simulate_sft") as tool:
        results = tool.search(requests)
    assert [r.ok for r in results] == [True] * 6
    for request, result in zip(requests, results):
        i = request.row
        kind = "Noisy" if noisy[i] else "Useful"
        expected_first = f"Doc 1: kind={kind} question=question number {i}? answer=answer{i} query=query {i}"
        assert result.documents.splitlines()[0] == expected_first
    prompts = {b["messages"][-1]["content"] for b in fake_server.state.bodies(CHAT)}
    for i in range(6):
        word = "noisy" if noisy[i] else "useful"
        assert any(
            f'question: "question number {i}?" whose answer is answer{i}.' in p and f"Query: query {i}\n" in p
            and f"generate five {word} documents" in p
            for p in prompts
        )


def test_openai_payload_fields(fake_server):
    with make_tool(fake_server, system_prompt="") as tool:
        tool.search(rows(2))
    bodies = fake_server.state.bodies(CHAT)
    assert len(bodies) == 2
    for body in bodies:
        assert body["model"] == "sim-model"
        assert body["max_tokens"] == 321
        assert body["temperature"] == 0.7
        assert isinstance(body["seed"], int)
        assert [m["role"] for m in body["messages"]] == ["system", "user"]
        assert body["messages"][0]["content"] == ""
    assert bodies[0]["seed"] != bodies[1]["seed"]


def test_topk_truncation_and_blank_lines(fake_server):
    fake_server.state.n_docs = 8
    with make_tool(fake_server, topk=3) as tool:
        (result,) = tool.search(rows(1))
    lines = result.documents.split("\n")
    assert [line.split(":")[0] for line in lines] == ["Doc 1", "Doc 2", "Doc 3"]
    assert "" not in lines


def test_all_requests_of_a_call_are_in_flight_together(fake_server):
    fake_server.state.delay = 0.8
    with make_tool(fake_server, concurrency=3) as tool:
        start = time.monotonic()
        results = tool.search(rows(7))
        elapsed = time.monotonic() - start
    assert all(r.ok for r in results)
    assert fake_server.state.max_in_flight == 3  # min(n=7, concurrency=3)
    assert elapsed < 7 * 0.8  # not one after another

    fake_server.state.reset()
    fake_server.state.delay = 0.8
    with make_tool(fake_server, concurrency=16) as tool:
        tool.search(rows(5))
    assert fake_server.state.max_in_flight == 5  # min(n=5, concurrency=16)


def test_tool_is_reusable_across_calls_and_event_loops(fake_server):
    with make_tool(fake_server) as tool:
        assert all(r.ok for r in tool.search(rows(2)))
        assert all(r.ok for r in tool.search(rows(3)))
        # Awaited from an unrelated loop, twice: the pooled client lives on the tool's own loop.
        for _ in range(2):
            assert all(r.ok for r in asyncio.run(tool.asearch(rows(2))))
    with pytest.raises(RuntimeError, match="closed"):
        tool.search(rows(1))


def test_garbage_is_resampled_at_once_then_passed_through_as_malformed(fake_server):
    fake_server.state.mode = "garbage"
    # A backoff of 5 s would make the 2 retries sleep >= 5 + 10 s; a malformed reply is resampled at once.
    with make_tool(fake_server, max_retries=2, backoff=5.0) as tool:
        start = time.monotonic()
        results = tool.search(rows(3))
        elapsed = time.monotonic() - start
        metrics = tool.pop_metrics()
    assert elapsed < 5.0
    assert [r.documents for r in results] == ["I cannot help with that."] * 3  # the reply, as written
    assert [(r.ok, r.malformed, r.failed) for r in results] == [(False, True, False)] * 3
    assert all("simulated reply has no 'Doc 1' line: 'I cannot help with that.'" in r.error for r in results)
    seeds = [b["seed"] for b in fake_server.state.bodies(CHAT)]
    assert len(seeds) == 3 * 3 and len(set(seeds)) == 9  # 1 attempt + 2 resamples each, every one a fresh seed
    assert metrics["requests"] == 3 and metrics["failures"] == 0 and metrics["malformed"] == 3
    assert metrics["retries"] == 6 and metrics["failure_rate"] == 0.0 and metrics["malformed_rate"] == 1.0


def test_a_resample_that_parses_is_an_ordinary_answer(fake_server):
    fake_server.state.mode = "garbage"
    with make_tool(fake_server, max_retries=0) as tool:
        (bad,) = tool.search(rows(1))
        fake_server.state.mode = "ok"
        (good,) = tool.search(rows(1))
    assert bad.malformed and good.ok and not good.malformed and good.documents.startswith("Doc 1:")


def test_transient_errors_recover(fake_server):
    fake_server.state.fail_first = 2
    with make_tool(fake_server, max_retries=3) as tool:
        results = tool.search(rows(1))
        metrics = tool.pop_metrics()
    assert results[0].ok and results[0].documents.startswith("Doc 1:")
    assert metrics["retries"] == 2 and metrics["failures"] == 0
    assert metrics["latency_max_s"] >= metrics["latency_mean_s"] > 0


def test_client_errors_are_not_retried(fake_server):
    fake_server.state.mode = "error400"
    with make_tool(fake_server, max_retries=3) as tool:
        results = tool.search(rows(2))
    assert not any(r.ok for r in results)
    assert "HTTP 400" in results[0].error and "does not exist" in results[0].error
    assert len(fake_server.state.bodies(CHAT)) == 2


def test_server_errors_fail_and_non_json_is_malformed_after_retries(fake_server):
    # HTTP 500: no reply, an outage signal. A 200 that is not JSON: a reply that does not parse.
    for mode, failed, malformed in (("error500", True, False), ("not_json", False, True)):
        fake_server.state.reset()
        fake_server.state.mode = mode
        with make_tool(fake_server, max_retries=1) as tool:
            results = tool.search(rows(2))
        assert [(r.ok, r.failed, r.malformed) for r in results] == [(False, failed, malformed)] * 2
        assert [r.documents for r in results] == [NO_INFORMATION] * 2  # nothing of the reply is usable
        assert len(fake_server.state.bodies(CHAT)) == 4


def test_timeouts_are_bounded(fake_server):
    fake_server.state.mode = "hang"
    with make_tool(fake_server, timeout=0.3, max_retries=1, backoff=0.05) as tool:
        start = time.monotonic()
        results = tool.search(rows(4))
        elapsed = time.monotonic() - start
        metrics = tool.pop_metrics()
    # 2 attempts of 0.3 s + one backoff of at most 0.1 s; generous slack for a busy machine.
    assert elapsed < 3.0
    assert [r.documents for r in results] == [NO_INFORMATION] * 4
    assert all("no reply within 0.3 s" in r.error for r in results)
    assert metrics["failures"] == 4 and metrics["retries"] == 4


def test_server_down_gives_no_information():
    with SimulationSearchTool(port=dead_port(), max_retries=2, backoff=0.01, timeout=2.0) as tool:
        start = time.monotonic()
        results = tool.search(rows(3))
        metrics = tool.pop_metrics()
    assert time.monotonic() - start < 5.0
    assert [r.ok for r in results] == [False] * 3
    assert [r.documents for r in results] == [NO_INFORMATION] * 3
    assert metrics["failures"] == 3 and metrics["retries"] == 6


def test_several_hosts_retries_move_to_the_next_host(fake_server):
    hosts = f"127.0.0.1:{dead_port()},127.0.0.1:{fake_server.port}"
    with make_tool(fake_server, hosts=hosts, max_retries=1) as tool:
        results = tool.search(rows(4))
        metrics = tool.pop_metrics()
    assert all(r.ok for r in results)
    # Requests 0 and 2 try the dead host first, requests 1 and 3 the live one.
    assert metrics["retries"] == 2
    assert len(fake_server.state.bodies(CHAT)) == 4


def test_seeds_reproduce_and_resume(fake_server):
    with make_tool(fake_server, seed=11) as tool:
        tool.search(rows(3))
        state = tool.state_dict()
        tool.search(rows(2))
    first_run = [b["seed"] for b in fake_server.state.bodies(CHAT)]
    fake_server.state.reset()
    with make_tool(fake_server, seed=11) as tool:
        tool.search(rows(3))
    assert sorted(b["seed"] for b in fake_server.state.bodies(CHAT)) == sorted(first_run[:3])
    fake_server.state.reset()
    with make_tool(fake_server, seed=11) as tool:
        tool.load_state_dict(state)
        tool.search(rows(2))
    assert sorted(b["seed"] for b in fake_server.state.bodies(CHAT)) == sorted(first_run[3:])
    fake_server.state.reset()
    with make_tool(fake_server, seed=12) as tool:
        tool.search(rows(3))
    assert not set(b["seed"] for b in fake_server.state.bodies(CHAT)) & set(first_run[:3])


def test_cache_hits_and_duplicates(fake_server):
    request = SearchRequest(query="q", question="Q?", golden_answers=["A"])
    noisy = SearchRequest(query="q", question="Q?", golden_answers=["A"], noisy=True)
    with make_tool(fake_server, cache_size=8) as tool:
        first = tool.search([request, request])
        second = tool.search([request, noisy])
        metrics = tool.pop_metrics()
    assert [r.cached for r in first] == [False, True]
    assert first[0].documents == first[1].documents
    assert [r.cached for r in second] == [True, False]
    assert len(fake_server.state.bodies(CHAT)) == 2  # (q, useful) once, (q, noisy) once
    assert metrics["requests"] == 4 and metrics["cache_hits"] == 2


def test_failures_are_not_cached(fake_server):
    fake_server.state.mode = "error500"
    with make_tool(fake_server, cache_size=8, max_retries=0) as tool:
        assert not tool.search(rows(1))[0].ok
        fake_server.state.mode = "ok"
        result = tool.search(rows(1))[0]
    assert result.ok and not result.cached


def test_no_cache_means_every_query_is_sampled(fake_server):
    request = SearchRequest(query="q", question="Q?", golden_answers=np.array(["A", "B"], dtype=object))
    with make_tool(fake_server, cache_size=0) as tool:
        results = tool.search([request, request])
    assert all(r.ok and not r.cached for r in results)
    assert "answer=A" in results[0].documents
    assert len(fake_server.state.bodies(CHAT)) == 2


def test_sglang_native_protocol(fake_server, qwen2_style_tokenizer_dir):
    with make_tool(fake_server, protocol="sglang_native", mode="simulate_prompt",
                   tokenizer=str(qwen2_style_tokenizer_dir)) as tool:
        results = tool.search(rows(2, noisy=[False, True]))
    bodies = fake_server.state.bodies("/generate")
    assert len(bodies) == 2
    for body in bodies:
        assert set(body) == {"text", "sampling_params"}
        assert body["sampling_params"] == {"max_new_tokens": 321, "temperature": 0.7}
        assert body["text"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nYou are the Google search engine.\n")
    assert all(r.ok for r in results)
    # The prompt-based noisy variant carries no question/answer line.
    assert "question=question number 0? answer=answer0" in results[0].documents
    assert "question=- answer=-" in results[1].documents
