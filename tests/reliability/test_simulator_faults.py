"""Point 1: the simulation server misbehaves (a real process on 127.0.0.1 that the test controls).

The agent loop (scripted policy, 4 rows, 2 search turns, 4 queries per turn) talks to the server
through the real ``SimulationSearchTool``. For every fault: the rollout never hangs (wall time below
the retry policy's worst case), failures and retries are counted in the metrics, a round under
``retriever.max_failure_rate`` goes on, a round over it stops with ``SearchFailureError`` naming the
server's address, and a killed server that comes back is used again without any user action.
"""

from __future__ import annotations

import threading
import time

import pytest
from reliability_helpers import FaultServer, SearchingPolicy, agent_config, free_port, prompt_batch

from zerosearch.agent import SearchAgentLoop
from zerosearch.tools import NO_INFORMATION, SearchFailureError
from zerosearch.tools.retry import RetryPolicy

pytestmark = pytest.mark.slow

ROWS = 4
QUERIES = [f"topic {k}" for k in range(ROWS)]
TIMEOUT, RETRIES, BACKOFF = 1.0, 1, 0.05
# One round: every query of the turn runs concurrently, so a round takes at most one query's worst case.
ROUND_WORST_S = RetryPolicy(TIMEOUT, RETRIES, BACKOFF).worst_case_s()
SLACK_S = 3.0


def make_loop(tok, port, max_failure_rate=0.5, **simulation):
    sim = {"timeout": TIMEOUT, "max_retries": RETRIES, "backoff": BACKOFF, **simulation}
    return SearchAgentLoop(agent_config(port, max_failure_rate=max_failure_rate, simulation=sim), tok)


def rollout(loop, tok, queries=QUERIES, step=1):
    start = time.monotonic()
    out = loop.run(prompt_batch(tok, len(queries)), SearchingPolicy(tok, queries), step=step)
    return out, time.monotonic() - start


def observations(tok, out):
    return [tok.decode(out.batch["responses"][i][out.batch["response_mask"][i] == 0].tolist()) for i in range(len(out))]


def test_healthy_server_answers_every_query_with_its_own_documents(fault_server_factory, small_tokenizer):
    server = fault_server_factory()
    loop = make_loop(small_tokenizer, server.port)
    try:
        out, _ = rollout(loop, small_tokenizer)
    finally:
        loop.close()
    m = out.meta_info["metrics"]
    assert (m["search/requests"], m["search/failures"], m["search/retries"]) == (8.0, 0.0, 0.0)
    assert server.stats()["received"] == 8
    for k, text in enumerate(observations(small_tokenizer, out)):
        assert text.count(f"Doc 1: Useful result 1 for topic {k} (seed") == 2  # two rounds, own query each time


@pytest.mark.parametrize("mode", ["slow", "500", "garbage", "empty", "not_json"])
def test_fault_is_bounded_counted_and_fatal_over_threshold(fault_server_factory, small_tokenizer, mode):
    server = fault_server_factory(mode=mode, slow_s=TIMEOUT * 5)

    tolerant = make_loop(small_tokenizer, server.port, max_failure_rate=1.0)
    try:
        out, wall = rollout(tolerant, small_tokenizer)
    finally:
        tolerant.close()
    m = out.meta_info["metrics"]
    assert wall < 2 * ROUND_WORST_S + SLACK_S
    assert m["search/requests"] == 8 and m["search/failures"] == 8 and m["search/failure_rate"] == 1.0
    assert m["search/retries"] == 8 * RETRIES
    assert all(text.count(NO_INFORMATION) == 2 for text in observations(small_tokenizer, out))

    strict = make_loop(small_tokenizer, server.port, max_failure_rate=0.5)
    start = time.monotonic()
    try:
        with pytest.raises(SearchFailureError, match=rf"4 of 4 search requests failed against .*127\.0\.0\.1:{server.port}"):
            rollout(strict, small_tokenizer)
    finally:
        strict.close()
    assert time.monotonic() - start < ROUND_WORST_S + SLACK_S  # stops after the first round


def test_partial_failures_under_threshold_continue_and_over_threshold_stop(fault_server_factory, small_tokenizer):
    server = fault_server_factory(mode="500")
    server.control(fail_match="bad")
    loop = make_loop(small_tokenizer, server.port, max_failure_rate=0.5)
    try:
        out, _ = rollout(loop, small_tokenizer, queries=["bad one", "good 1", "good 2", "good 3"])
        m = out.meta_info["metrics"]
        assert (m["search/requests"], m["search/failures"], m["search/failure_rate"]) == (8.0, 2.0, 0.25)
        texts = observations(small_tokenizer, out)
        assert texts[0].count(NO_INFORMATION) == 2 and NO_INFORMATION not in texts[1]
        with pytest.raises(SearchFailureError, match=rf"3 of 4 .*127\.0\.0\.1:{server.port}"):
            rollout(loop, small_tokenizer, queries=["bad a", "bad b", "bad c", "good"], step=2)
    finally:
        loop.close()


def test_connection_refused_from_the_start_fails_fast_naming_the_server(small_tokenizer):
    port = free_port()  # nothing listens there
    loop = make_loop(small_tokenizer, port)
    start = time.monotonic()
    try:
        with pytest.raises(SearchFailureError, match=rf"127\.0\.0\.1:{port}.*check that the server is up"):
            rollout(loop, small_tokenizer)
    finally:
        loop.close()
    assert time.monotonic() - start < ROUND_WORST_S + SLACK_S


def test_server_killed_mid_request_and_restarted_is_recovered_by_retries(small_tokenizer, tmp_path):
    """SIGKILL while the turn's requests are in flight; the server comes back on the same port
    during the backoff, and the retries finish the rollout with no failure."""
    server = FaultServer(free_port(), delay=1.0).start()
    loop = make_loop(small_tokenizer, server.port, max_failure_rate=0.0, timeout=5.0, max_retries=4, backoff=1.0)
    result: dict = {}

    def run() -> None:
        try:
            result["out"], _ = rollout(loop, small_tokenizer)
        except BaseException as exc:  # reported below
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while server.stats()["received"] < ROWS:
            assert time.monotonic() < deadline, "the rollout never reached the server"
            time.sleep(0.02)
        server.kill()  # every first-round request is in flight (each waits 1 s)
        server.start()  # same port; no request can have been answered
        worker.join(timeout=120)
        assert not worker.is_alive(), "the rollout hangs after the server restart"
    finally:
        server.kill()
        loop.close()
    assert "error" not in result, result.get("error")
    m = result["out"].meta_info["metrics"]
    assert m["search/failures"] == 0 and m["search/requests"] == 8
    assert m["search/retries"] >= ROWS  # each in-flight request was retried at least once


def test_dead_server_stops_the_step_and_a_restart_needs_no_user_action(fault_server_factory, small_tokenizer):
    server = fault_server_factory()
    loop = make_loop(small_tokenizer, server.port)
    try:
        out, _ = rollout(loop, small_tokenizer, step=1)
        assert out.meta_info["metrics"]["search/failures"] == 0
        tool = loop._tool(validate=False)

        server.kill()
        with pytest.raises(SearchFailureError, match=rf"127\.0\.0\.1:{server.port}"):
            rollout(loop, small_tokenizer, step=2)

        server.start()
        out, _ = rollout(loop, small_tokenizer, step=3)  # the same loop and tool: nothing rebuilt by hand
        assert loop._tool(validate=False) is tool
        m = out.meta_info["metrics"]
        assert m["search/failures"] == 0 and m["search/requests"] == 8
    finally:
        loop.close()
