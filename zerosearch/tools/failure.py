"""Failure policy: stop the run when a search server is down, or answers nothing but garbage.

Every search ends in one of three outcomes (``SearchResult``): answered, malformed (a reply arrived
but did not parse, even after its resamples: a content problem; the text still serves as the
observation) or failed (no reply after the retries: an outage signal). One failure, or one malformed
reply, among a few searches says little, so ``SearchHealth`` judges the run's most recent searches,
not one round's: after every search round it keeps the outcomes of the last ``window`` searches
(across rounds and steps, for the whole run) and raises when

1. outage: the window holds at least ``min_requests`` searches and more than ``max_failure_rate``
   of them failed -> ``SearchFailureError`` ("check that the server is up and reachable");
2. outage, fast path: ``streak_rounds`` search rounds in a row got no reply at all (every search
   failed) -> ``SearchFailureError``. The searches of one round run concurrently, so their
   failures are one piece of evidence, not many; rounds are separated by a generation phase, and
   each failed search already spent its retries (seconds of backoff), so consecutive empty rounds
   mean the server stayed unreachable across separate moments. This stops a dead server after that
   many rounds however few searches they hold, where rule 1 would wait for ``min_requests``;
3. garbage: the window holds at least ``min_requests`` replies (searches answered or malformed)
   and more than ``max_malformed_rate`` of them were malformed -> ``MalformedRepliesError`` (the
   server is up, but training on its replies is meaningless). The share is of the replies that
   arrived, so that outages do not dilute it.

Searches answered from the cache never reached the server and are not judged.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from zerosearch.tools.base import SearchResult

ANSWERED, MALFORMED, FAILED = "answered", "malformed", "failed"


class SearchFailureError(RuntimeError):
    """Raised when the search server looks down or unreachable (see the module docstring)."""


class MalformedRepliesError(SearchFailureError):
    """Raised when the search server is up but nearly all its replies are malformed."""


def _rate(name: str, value: Any) -> float:
    """``value`` as a share in [0, 1], or a ValueError naming ``retriever.<name>``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} (retriever.{name}) must be a number in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``retriever.<name>``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} (retriever.{name}) must be an int >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class FailurePolicy:
    """The thresholds of the three rules (configs/retriever/default.yaml documents each key).

    Attributes:
        max_failure_rate: tolerated share of failed searches in the window (``retriever.max_failure_rate``).
        max_malformed_rate: tolerated share of malformed replies among the window's replies
            (``retriever.max_malformed_rate``).
        window: searches judged, the most recent ones of the run (``retriever.failure_window``).
        min_requests: searches (rule 1) or replies (rule 3) the window needs before a rate is judged
            (``retriever.failure_min_requests``), at most ``window``.
        streak_rounds: rounds in a row with every search failed that stop the run; 0 turns the
            rule off (``retriever.failure_streak_rounds``).
    """

    max_failure_rate: float
    max_malformed_rate: float
    window: int
    min_requests: int
    streak_rounds: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_failure_rate", _rate("max_failure_rate", self.max_failure_rate))
        object.__setattr__(self, "max_malformed_rate", _rate("max_malformed_rate", self.max_malformed_rate))
        _count("failure_window", self.window, 1)
        _count("failure_min_requests", self.min_requests, 1)
        _count("failure_streak_rounds", self.streak_rounds, 0)
        if self.min_requests > self.window:
            raise ValueError(
                f"failure_min_requests (retriever.failure_min_requests={self.min_requests}) must not exceed "
                f"failure_window (retriever.failure_window={self.window}): no rate would ever be judged"
            )

    @classmethod
    def from_config(cls, retriever_cfg: Any) -> "FailurePolicy":
        """The policy of a ``retriever`` config block, with an error naming any missing key."""
        keys = ("max_failure_rate", "max_malformed_rate", "failure_window", "failure_min_requests",
                "failure_streak_rounds")
        missing = [k for k in keys if k not in retriever_cfg]
        if missing:
            raise KeyError(
                f"config keys {', '.join('retriever.' + k for k in missing)} are required "
                "(see configs/retriever/default.yaml)"
            )
        return cls(
            max_failure_rate=retriever_cfg["max_failure_rate"],
            max_malformed_rate=retriever_cfg["max_malformed_rate"],
            window=retriever_cfg["failure_window"],
            min_requests=retriever_cfg["failure_min_requests"],
            streak_rounds=retriever_cfg["failure_streak_rounds"],
        )


def outcome(result: SearchResult) -> str:
    """``ANSWERED``, ``MALFORMED`` or ``FAILED``."""
    if result.malformed:
        return MALFORMED
    return FAILED if not result.ok else ANSWERED


class SearchHealth:
    """The outcomes of one server's most recent searches, judged after every round.

    It lives as long as the run's search tool (across rounds and steps). A resumed run starts with
    an empty window: the server it meets may well not be the one that failed before.

    Args:
        policy: the thresholds.
        server_desc: the server, for the error messages (e.g. ``tool.describe()``).
    """

    def __init__(self, policy: FailurePolicy, server_desc: str):
        self.policy = policy
        self.server_desc = server_desc
        self._window: deque[str] = deque(maxlen=policy.window)
        self._failed_rounds = 0  # rounds in a row with every search failed
        self._failed_in_streak = 0  # searches of those rounds
        self._last_error: str | None = None
        self._last_malformed: str | None = None

    def counts(self) -> dict[str, int]:
        """``requests`` in the window and how many were ``answered``, ``malformed``, ``failed``."""
        return {
            "requests": len(self._window),
            ANSWERED: self._window.count(ANSWERED),
            MALFORMED: self._window.count(MALFORMED),
            FAILED: self._window.count(FAILED),
        }

    def observe(self, results: Sequence[SearchResult]) -> None:
        """Record one round's results and apply the rules (``record`` then ``check``)."""
        self.record(results)
        self.check()

    def record(self, results: Sequence[SearchResult]) -> None:
        """Add one round's results to the window (cached ones are skipped) and update the streak."""
        judged = [r for r in results if not r.cached]
        if not judged:
            return
        for result in judged:
            kind = outcome(result)
            self._window.append(kind)
            if kind == FAILED:
                self._last_error = result.error
            elif kind == MALFORMED:
                self._last_malformed = result.error
        if all(outcome(r) == FAILED for r in judged):
            self._failed_rounds += 1
            self._failed_in_streak += len(judged)
        else:
            self._failed_rounds = self._failed_in_streak = 0

    def check(self) -> None:
        """Raise the error of the first rule of the module docstring that fires; the state is
        cleared first, so a caller that goes on anyway is judged afresh."""
        error = self.verdict()
        if error is not None:
            self.reset()
            raise error

    def verdict(self) -> SearchFailureError | None:
        """The error that the first rule to fire calls for (not raised), or None."""
        p, c = self.policy, self.counts()
        n, failed, malformed = c["requests"], c[FAILED], c[MALFORMED]
        hint = f"check that the server is up and reachable; last error: {self._last_error}"
        if n >= p.min_requests and failed / n > p.max_failure_rate:
            return SearchFailureError(
                f"{failed} of {n} search requests failed against {self.server_desc} over the run's last {n} "
                f"searches (failure rate {failed / n:.3f} > retriever.max_failure_rate {p.max_failure_rate}); "
                + hint
            )
        if p.streak_rounds and self._failed_rounds >= p.streak_rounds:
            k = self._failed_in_streak
            return SearchFailureError(
                f"{k} of {k} search requests failed against {self.server_desc} in {self._failed_rounds} search "
                f"rounds in a row, with no reply at all (retriever.failure_streak_rounds={p.streak_rounds}); "
                + hint
            )
        replies = n - failed
        if replies >= p.min_requests and malformed / replies > p.max_malformed_rate:
            return MalformedRepliesError(
                f"{malformed} of {replies} replies from {self.server_desc} over the run's last {n} searches were "
                f"malformed (malformed share {malformed / replies:.3f} > retriever.max_malformed_rate "
                f"{p.max_malformed_rate}): the server is up, but its replies do not parse; check the served "
                f"model, its prompt format and max_tokens; last malformed reply: {self._last_malformed}"
            )
        return None

    def reset(self) -> None:
        """Forget every outcome."""
        self._window.clear()
        self._failed_rounds = self._failed_in_streak = 0
        self._last_error = self._last_malformed = None
