"""A reward for trainer-level tests: a fixed pseudo-random score of the response text.

Different responses get different scores, so group advantages are non-zero and every step really
moves the weights; the same response always gets the same score, so two runs can be compared.
"""

from __future__ import annotations

import hashlib
from typing import Any


def score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **_: Any) -> float:
    """sha256 of the response mapped to [0, 1)."""
    digest = hashlib.sha256(solution_str.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little") / 2**32
