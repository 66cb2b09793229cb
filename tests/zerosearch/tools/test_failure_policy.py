"""The search failure policy (zerosearch/tools/failure.py): hand-worked sequences of outcomes.

Notation: ``O`` answered, ``F`` failed (no reply), ``M`` malformed (a reply that did not parse). A
list is one search round. Every expected number below is worked out by hand in the comment next to
it; the default policy is ``max_failure_rate=0.5, max_malformed_rate=0.9, window=200,
min_requests=20, streak_rounds=2``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zerosearch.tools import FailurePolicy, MalformedRepliesError, SearchFailureError, SearchHealth, SearchResult

SERVER = "simulate_sft simulation server(s) http://127.0.0.1:6001"


def O(cached: bool = False) -> SearchResult:
    return SearchResult("Doc 1: fine", cached=cached)


def F(error: str = "ClientConnectorError: Connection refused") -> SearchResult:
    return SearchResult("No information available", ok=False, error=error)


def M(text: str = "Doc 19987. Its. Its in Grumdouth") -> SearchResult:
    return SearchResult(text, ok=False, malformed=True, error=f"simulated reply has no 'Doc 1' line: {text!r}")


def health(max_failure_rate=0.5, max_malformed_rate=0.9, window=200, min_requests=20, streak_rounds=2):
    policy = FailurePolicy(max_failure_rate, max_malformed_rate, window, min_requests, streak_rounds)
    return SearchHealth(policy, SERVER)


def feed(h: SearchHealth, rounds) -> None:
    for r in rounds:
        h.observe(r)


# ---------------------------------------------------------------- rule 1: failure share over the window
def test_one_failure_in_the_first_three_requests_does_not_stop():
    h = health()
    feed(h, [[F(), O(), O()]])  # 1 of 3 failed; the window (3) is under min_requests (20)
    assert h.counts() == {"requests": 3, "answered": 2, "malformed": 0, "failed": 1}


def test_a_lone_failed_round_of_one_search_does_not_stop():
    feed(health(), [[F()], [O()]])  # a streak of 1 round, then broken


def test_twenty_failures_out_of_twenty_five_stop():
    h = health()
    # One round, not all failed (so no streak): 20 / 25 = 0.8 > 0.5 with 25 >= 20 searches.
    with pytest.raises(SearchFailureError, match=r"^20 of 25 search requests failed against .*127\.0\.0\.1:6001 "
                                                 r".*failure rate 0\.800 > retriever\.max_failure_rate 0\.5.*"
                                                 r"check that the server is up and reachable; last error: "
                                                 r"ClientConnectorError: Connection refused"):
        feed(h, [[F()] * 20 + [O()] * 5])


def test_min_requests_is_respected():
    h = health()
    feed(h, [[F()] * 18 + [O()]])  # 18 / 19 = 0.95, but 19 < 20 searches: not judged yet
    with pytest.raises(SearchFailureError, match=r"^18 of 20 search requests failed"):
        feed(h, [[O()]])  # 20 searches, 18 failed: 0.9 > 0.5


def test_the_rate_must_exceed_the_threshold():
    h = health()
    feed(h, [[F()] * 10 + [O()] * 10])  # 10 / 20 = 0.5, not > 0.5
    feed(h, [[F(), O()]])  # 11 / 22 = 0.5
    with pytest.raises(SearchFailureError, match=r"^12 of 23 search requests failed"):
        feed(h, [[F()]])  # 12 / 23 = 0.52 > 0.5 (a streak of one round only)


def test_the_window_slides_over_the_run_not_the_step():
    h = health(window=10, min_requests=10)
    feed(h, [[O()] * 10])
    # Last 10 of O*10 + (F*6 + O): O*3, F*6, O -> 6 / 10 = 0.6 > 0.5.
    # Counted since the start it would be 6 / 17 = 0.35, which would not stop.
    with pytest.raises(SearchFailureError, match=r"^6 of 10 search requests failed"):
        feed(h, [[F()] * 6 + [O()]])


def test_a_round_larger_than_the_window_is_judged_by_its_last_searches():
    h = health(window=10, min_requests=10)
    feed(h, [[F()] * 30 + [O()] * 5])  # last 10: F*5, O*5 -> 5 / 10 = 0.5, not > 0.5
    assert h.counts() == {"requests": 10, "answered": 5, "malformed": 0, "failed": 5}


# ---------------------------------------------------------------- rule 2: rounds with no reply at all
def test_a_dead_server_stops_after_two_rounds_however_small():
    h = health()
    feed(h, [[F()]])
    with pytest.raises(SearchFailureError, match=r"^2 of 2 search requests failed against .*127\.0\.0\.1:6001 in 2 "
                                                 r"search rounds in a row, with no reply at all "
                                                 r"\(retriever\.failure_streak_rounds=2\); check that the server is up"):
        feed(h, [[F()]])


def test_streak_counts_every_search_of_its_rounds():
    h = health(streak_rounds=3)
    feed(h, [[F()] * 4, [F()] * 3])
    with pytest.raises(SearchFailureError, match=r"^9 of 9 search requests failed .* in 3 search rounds"):
        feed(h, [[F()] * 2])  # 4 + 3 + 2 = 9 searches over 3 rounds (and 9 < 20: rule 1 not yet judged)


def test_any_reply_breaks_the_streak_even_a_malformed_one():
    h = health()
    feed(h, [[F()], [O()], [F()], [M()], [F()], [F(), F(), O()], [F()]])  # never 2 empty rounds in a row


def test_streak_rule_off_with_zero():
    h = health(max_failure_rate=1.0, streak_rounds=0)
    feed(h, [[F()]] * 300)  # a dead server, and both outage rules off
    assert h.counts()["failed"] == 200  # the window keeps the last 200


def test_cached_results_are_not_judged():
    h = health()
    feed(h, [[O(cached=True)] * 5 + [F()]])  # judged: [F] -> a round with no reply
    assert h.counts() == {"requests": 1, "answered": 0, "malformed": 0, "failed": 1}
    with pytest.raises(SearchFailureError, match=r"^2 of 2 search requests failed .* in 2 search rounds"):
        feed(h, [[F(), O(cached=True)]])


# ---------------------------------------------------------------- rule 3: replies that do not parse
def test_malformed_replies_are_not_failures():
    h = health()
    feed(h, [[M()]])  # the only search of a round: no failure, no streak
    feed(h, [[M()]])
    assert h.counts() == {"requests": 2, "answered": 0, "malformed": 2, "failed": 0}


def test_garbage_to_everything_stops_saying_the_replies_are_malformed():
    h = health()
    feed(h, [[M()] * 19])  # 19 replies < 20: not judged yet
    with pytest.raises(MalformedRepliesError) as err:
        feed(h, [[O()]])  # 19 of 20 replies malformed: 0.95 > 0.9
    message = str(err.value)
    assert message.startswith(f"19 of 20 replies from {SERVER} over the run's last 20 searches were malformed "
                              "(malformed share 0.950 > retriever.max_malformed_rate 0.9): the server is up")
    assert message.endswith("last malformed reply: simulated reply has no 'Doc 1' line: "
                            "'Doc 19987. Its. Its in Grumdouth'")
    assert "reachable" not in message
    assert isinstance(err.value, SearchFailureError)  # callers that stop on search failures stop on it too


def test_malformed_share_at_the_threshold_goes_on():
    feed(health(), [[M()] * 18 + [O()] * 2])  # 18 / 20 = 0.9, not > 0.9


def test_malformed_share_is_of_the_replies_that_arrived():
    h = health(max_failure_rate=1.0, min_requests=10, streak_rounds=0)
    feed(h, [[F()] * 10 + [M()] * 9 + [O()]])  # replies: 10, malformed 9 -> 0.9, not > 0.9
    with pytest.raises(MalformedRepliesError, match=r"^10 of 11 replies .* over the run's last 21 searches"):
        feed(h, [[M()]])  # 10 / 11 = 0.91 > 0.9 (of all 21 searches it would be 0.48)


def test_an_error_clears_the_window_so_a_caller_that_goes_on_is_judged_afresh():
    h = health()
    with pytest.raises(SearchFailureError):
        feed(h, [[F()], [F()]])
    assert h.counts() == {"requests": 0, "answered": 0, "malformed": 0, "failed": 0}
    feed(h, [[F()]])  # a streak of one round again, not three


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(max_failure_rate=1.5), "retriever.max_failure_rate"),
        (dict(max_failure_rate="0.5"), "retriever.max_failure_rate"),
        (dict(max_malformed_rate=-0.1), "retriever.max_malformed_rate"),
        (dict(window=0), "retriever.failure_window"),
        (dict(window=True), "retriever.failure_window"),
        (dict(min_requests=0), "retriever.failure_min_requests"),
        (dict(min_requests=2.5), "retriever.failure_min_requests"),
        (dict(streak_rounds=-1), "retriever.failure_streak_rounds"),
    ],
)
def test_bad_values_name_the_key(kwargs, key):
    args = dict(max_failure_rate=0.5, max_malformed_rate=0.9, window=200, min_requests=20, streak_rounds=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        FailurePolicy(**args)


def test_min_requests_above_the_window_is_refused_naming_both_keys():
    with pytest.raises(ValueError, match=r"retriever\.failure_min_requests=30.*retriever\.failure_window=20"):
        FailurePolicy(0.5, 0.9, window=20, min_requests=30, streak_rounds=2)


def test_documented_defaults_and_missing_keys():
    cfg = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "retriever" / "default.yaml")
    assert FailurePolicy.from_config(cfg) == FailurePolicy(0.5, 0.9, 200, 20, 2)
    del cfg["failure_window"]
    del cfg["max_malformed_rate"]
    with pytest.raises(KeyError, match=r"retriever\.max_malformed_rate, retriever\.failure_window are required"):
        FailurePolicy.from_config(cfg)
