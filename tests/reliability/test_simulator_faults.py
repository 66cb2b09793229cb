"""Point 1: the simulation server misbehaves (a real process on 127.0.0.1 that the test controls).

The agent loop (scripted policy, 4 rows, 2 search turns, 4 queries per turn) talks to the server
through the real ``SimulationSearchTool``, under the failure policy of configs/retriever/default.yaml
unless a test says otherwise. For every fault: the rollout never hangs (wall time below the retry
policy's worst case) and retries are counted. Transport faults (slow, HTTP 500, refused) are
failures: counted in ``search/failure_rate``; a dead server stops the run after two search rounds
with no reply (``SearchFailureError`` naming the server's address), a failure share under
``retriever.max_failure_rate`` in the window goes on, one over it stops. Content faults (a reply
without a ``Doc 1`` line, an empty one, one that is not JSON) are malformed, not failures: the text
becomes the observation, ``search/malformed_rate`` counts them, and only a server that answers
garbage to (nearly) everything stops the run, with ``MalformedRepliesError`` saying so. A killed
server that comes back is used again without any user action.
"""

from __future__ import annotations

import threading
import time

import pytest
from fault_sim_server import garbage_for
from reliability_helpers import FaultServer, SearchingPolicy, agent_config, free_port, prompt_batch

from zerosearch.agent import SearchAgentLoop
from zerosearch.tools import NO_INFORMATION, MalformedRepliesError, SearchFailureError
from zerosearch.tools.retry import RetryPolicy

pytestmark = pytest.mark.slow

ROWS = 4
QUERIES = [f"topic {k}" for k in range(ROWS)]
TIMEOUT, RETRIES, BACKOFF = 1.0, 1, 0.05
# One round: every query of the turn runs concurrently, so a round takes at most one query's worst case.
ROUND_WORST_S = RetryPolicy(TIMEOUT, RETRIES, BACKOFF).worst_case_s()
SLACK_S = 3.0


# Failure policy that never stops a run, to count what a fault does.
NEVER_STOP = {"max_failure_rate": 1.0, "max_malformed_rate": 1.0, "failure_streak_rounds": 0}


def make_loop(tok, port, policy=None, **simulation):
    """The agent loop on the server at ``port``; ``policy`` overrides failure-policy keys of the
    defaults, ``simulation`` keys of ``retriever.simulation``."""
    sim = {"timeout": TIMEOUT, "max_retries": RETRIES, "backoff": BACKOFF, **simulation}
    return SearchAgentLoop(agent_config(port, simulation=sim, **(policy or {})), tok)


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
    assert (m["search/requests"], m["search/failures"], m["search/malformed"], m["search/retries"]) == (8, 0, 0, 0)
    assert server.stats()["received"] == 8
    for k, text in enumerate(observations(small_tokenizer, out)):
        assert text.count(f"Doc 1: Useful result 1 for topic {k} (seed") == 2  # two rounds, own query each time


@pytest.mark.parametrize("mode", ["slow", "500"])
def test_transport_fault_is_bounded_counted_and_a_dead_server_stops_in_two_rounds(fault_server_factory,
                                                                                   small_tokenizer, mode):
    server = fault_server_factory(mode=mode, slow_s=TIMEOUT * 5)

    tolerant = make_loop(small_tokenizer, server.port, policy=NEVER_STOP)
    try:
        out, wall = rollout(tolerant, small_tokenizer)
    finally:
        tolerant.close()
    m = out.meta_info["metrics"]
    assert wall < 2 * ROUND_WORST_S + SLACK_S
    assert (m["search/requests"], m["search/failures"], m["search/malformed"]) == (8, 8, 0)
    assert m["search/failure_rate"] == 1.0 and m["search/malformed_rate"] == 0.0
    assert m["search/retries"] == 8 * RETRIES
    assert all(text.count(NO_INFORMATION) == 2 for text in observations(small_tokenizer, out))

    strict = make_loop(small_tokenizer, server.port)  # the defaults
    start = time.monotonic()
    try:
        with pytest.raises(SearchFailureError, match=rf"^8 of 8 search requests failed against .*127\.0\.0\.1:"
                                                     rf"{server.port}.* in 2 search rounds in a row.*check that the "
                                                     "server is up and reachable"):
            rollout(strict, small_tokenizer)
    finally:
        strict.close()
    assert time.monotonic() - start < 2 * ROUND_WORST_S + SLACK_S  # stops after the second round


@pytest.mark.parametrize("mode", ["garbage", "empty", "not_json"])
def test_content_fault_is_passed_through_counted_apart_and_stops_only_when_nearly_all_replies_are_bad(
        fault_server_factory, small_tokenizer, mode):
    server = fault_server_factory(mode=mode)
    loop = make_loop(small_tokenizer, server.port)  # the defaults: window 200, min 20, malformed share 0.9
    try:
        start = time.monotonic()
        out, wall = rollout(loop, small_tokenizer)
        m = out.meta_info["metrics"]
        assert wall < 2 * ROUND_WORST_S + SLACK_S
        assert (m["search/requests"], m["search/failures"], m["search/malformed"]) == (8, 0, 8)
        assert m["search/failure_rate"] == 0.0 and m["search/malformed_rate"] == 1.0
        assert m["search/retries"] == 8 * RETRIES  # each resampled, then passed on
        for k, text in enumerate(observations(small_tokenizer, out)):
            expected = garbage_for(QUERIES[k]) if mode == "garbage" else NO_INFORMATION  # nothing else usable
            assert text.count(f"<information>{expected}</information>") == 2

        # 8 replies per rollout: the second ends at 16 (< failure_min_requests=20, goes on); the third's
        # first round brings 20 replies, 20 of 20 malformed > 0.9: the run stops, saying so.
        rollout(loop, small_tokenizer, step=2)
        with pytest.raises(MalformedRepliesError) as err:
            rollout(loop, small_tokenizer, step=3)
    finally:
        loop.close()
    message = str(err.value)
    assert message.startswith(f"20 of 20 replies from simulate_sft simulation server(s) http://127.0.0.1:{server.port}")
    assert "were malformed" in message and "the server is up, but its replies do not parse" in message
    assert "reachable" not in message
    assert time.monotonic() - start < 5 * (2 * ROUND_WORST_S + SLACK_S)


def test_a_malformed_reply_to_the_only_search_of_a_turn_does_not_stop_training(fault_server_factory,
                                                                             small_tokenizer):
    """What killed a demo run: one row, one search per turn, and the simulator's reply to it has no
    ``Doc 1`` line. Under the defaults the rollout goes on with that text as the observation."""
    server = fault_server_factory(mode="garbage")
    server.control(fail_match="Grumdouth")
    loop = make_loop(small_tokenizer, server.port)
    try:
        out, _ = rollout(loop, small_tokenizer, queries=["Grumdouth"])
        out2, _ = rollout(loop, small_tokenizer, queries=["topic 0"], step=2)  # and the next step is served
    finally:
        loop.close()
    assert out.non_tensor_batch["answered"][0]
    (text,) = observations(small_tokenizer, out)
    assert text.count("<information>Doc 19987. Its. Its in Grumdouth</information>") == 2
    m = out.meta_info["metrics"]
    assert (m["search/requests"], m["search/malformed"], m["search/failures"]) == (2, 2, 0)
    assert m["search/malformed_rate"] == 1.0 and m["search/failure_rate"] == 0.0
    assert out2.meta_info["metrics"]["search/malformed"] == 0 and "Doc 1: Useful result 1 for topic 0" in \
        observations(small_tokenizer, out2)[0]


def test_partial_failures_under_threshold_continue_and_over_threshold_stop(fault_server_factory, small_tokenizer):
    server = fault_server_factory(mode="500")
    server.control(fail_match="bad")
    # A window of the last 8 searches, judged from 8 on, so that the numbers stay small.
    loop = make_loop(small_tokenizer, server.port, policy={"failure_window": 8, "failure_min_requests": 8})
    try:
        out, _ = rollout(loop, small_tokenizer, queries=["bad one", "good 1", "good 2", "good 3"])
        m = out.meta_info["metrics"]
        # Window after step 1: [F O O O] [F O O O] -> 2 / 8 = 0.25, goes on.
        assert (m["search/requests"], m["search/failures"], m["search/failure_rate"]) == (8.0, 2.0, 0.25)
        texts = observations(small_tokenizer, out)
        assert texts[0].count(NO_INFORMATION) == 2 and NO_INFORMATION not in texts[1]
        # Step 2, round 1: [F O O O] [F F F O] -> 4 / 8 = 0.5, not over 0.5, goes on;
        # round 2: [F F F O] [F F F O] -> 6 / 8 = 0.75 > 0.5: stops.
        with pytest.raises(SearchFailureError, match=rf"^6 of 8 search requests failed against .*127\.0\.0\.1:"
                                                     rf"{server.port}.* over the run's last 8 searches \(failure rate 0\.750"):
            rollout(loop, small_tokenizer, queries=["bad a", "bad b", "bad c", "good"], step=2)
    finally:
        loop.close()


def test_connection_refused_from_the_start_fails_fast_naming_the_server(small_tokenizer):
    port = free_port()  # nothing listens there
    loop = make_loop(small_tokenizer, port)
    start = time.monotonic()
    try:
        with pytest.raises(SearchFailureError, match=rf"^8 of 8 search requests failed against .*127\.0\.0\.1:{port}"
                                                     r".* in 2 search rounds in a row.*check that the server is up"):
            rollout(loop, small_tokenizer)
    finally:
        loop.close()
    assert time.monotonic() - start < 2 * ROUND_WORST_S + SLACK_S


def test_server_killed_mid_request_and_restarted_is_recovered_by_retries(small_tokenizer, tmp_path):
    """SIGKILL while the turn's requests are in flight; the server comes back on the same port
    during the backoff, and the retries finish the rollout with no failure."""
    server = FaultServer(free_port(), delay=1.0).start()
    # Any failure at all stops this run: a share over 0 in a window judged from its first search.
    loop = make_loop(small_tokenizer, server.port, policy={"max_failure_rate": 0.0, "failure_min_requests": 1},
                     timeout=5.0, max_retries=4, backoff=1.0)
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
        # 8 answered searches, then rounds of 4 refused: the second such round in a row stops.
        with pytest.raises(SearchFailureError, match=rf"^8 of 8 search requests failed against .*127\.0\.0\.1:"
                                                     rf"{server.port}.* in 2 search rounds in a row"):
            rollout(loop, small_tokenizer, step=2)

        server.start()
        out, _ = rollout(loop, small_tokenizer, step=3)  # the same loop and tool: nothing rebuilt by hand
        assert loop._tool(validate=False) is tool
        m = out.meta_info["metrics"]
        assert m["search/failures"] == 0 and m["search/requests"] == 8
    finally:
        loop.close()
