"""Rule reward of ZeroSearch: answer extraction, SQuAD-style normalisation, EM / substring-EM / F1.

Only the policy's response is parsed, never the prompt (the instruction itself contains an
``<answer> Beijing </answer>`` example). A response with no complete ``<answer>...</answer>``
scores 0 on every metric.

Metrics, each the maximum over the gold answers:
    em         strict exact match of the normalised strings;
    sub_em     the normalised gold is a substring of the normalised prediction (character level,
               so gold "paris" matches "parisian"; a gold that normalises to "" always matches);
    f1         SQuAD token F1 with multiset overlap (0 when nothing overlaps, even for two empty
               strings);
    hotpot_f1  f1 plus the HotpotQA rule: when either side normalises to yes / no / noanswer and
               the two differ, the score is 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_HOTPOT_SPECIAL = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the as words, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _golds(golden_answers: str | Sequence[str]) -> list[str]:
    if isinstance(golden_answers, str):
        return [golden_answers]
    return [str(g) for g in golden_answers]


def em(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(golden_answers)))


def sub_em(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """1.0 when some normalised gold answer is a substring of the normalised prediction."""
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) in pred for g in _golds(golden_answers)))


def f1(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """SQuAD token F1, maximum over the gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    return max((_token_f1(pred_tokens, normalize_answer(g).split()) for g in _golds(golden_answers)), default=0.0)


def hotpot_f1(prediction: str, golden_answers: str | Sequence[str]) -> float:
    """HotpotQA F1 (yes/no/noanswer must match exactly), maximum over the gold answers."""
    pred = normalize_answer(prediction)
    best = 0.0
    for gold in _golds(golden_answers):
        norm_gold = normalize_answer(gold)
        if (pred in _HOTPOT_SPECIAL or norm_gold in _HOTPOT_SPECIAL) and pred != norm_gold:
            continue
        best = max(best, _token_f1(pred.split(), norm_gold.split()))
    return best


METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "em": em,
    "sub_em": sub_em,
    "f1": f1,
    "hotpot_f1": hotpot_f1,
}


def extract_answer(response_text: str) -> str | None:
    """The stripped content of the last complete ``<answer>...</answer>`` in the response.

    With nested or repeated openings the innermost one counts (``<answer>a <answer>b</answer>``
    gives ``"b"``). Returns None when the response has no complete pair. Pass the response only:
    the policy prompt contains answer tags of its own.
    """
    if not isinstance(response_text, str):
        raise TypeError(f"extract_answer: response_text must be str, got {type(response_text).__name__}")
    found: str | None = None
    pos = 0
    while True:
        start = response_text.find(ANSWER_OPEN, pos)
        if start < 0:
            break
        close = response_text.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if close < 0:
            break
        inner = response_text.rfind(ANSWER_OPEN, start, close)
        found = response_text[inner + len(ANSWER_OPEN) : close].strip()
        pos = close + len(ANSWER_CLOSE)
    return found


def gold_answers(ground_truth: Any) -> list[str]:
    """Gold answers from ``{"target": [...]}``, a list / tuple / numpy array of strings, or one string."""
    target = ground_truth
    if isinstance(ground_truth, dict):
        if "target" not in ground_truth:
            raise ValueError(f"ground_truth dict must have a 'target' key, got keys {sorted(ground_truth)}")
        target = ground_truth["target"]
    if isinstance(target, str):
        answers = [target]
    elif isinstance(target, (list, tuple, np.ndarray)):
        answers = list(np.asarray(target, dtype=object).reshape(-1))
    else:
        raise ValueError(
            f"ground_truth target must be a string or a list/array of strings, got {type(target).__name__}"
        )
    if not answers:
        raise ValueError("ground_truth has no gold answers")
    bad = [a for a in answers if not isinstance(a, str)]
    if bad:
        raise ValueError(f"ground_truth answers must be strings, got {bad[:3]!r}")
    return answers


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    metric: str = "f1",
) -> dict[str, float]:
    """Score one response (the reward seam of the trainer).

    Args:
        data_source: the row's data set name (unused by the rule; part of the seam).
        solution_str: the decoded policy response only (no prompt).
        ground_truth: ``{"target": [answers]}``, a list / array of answers, or one answer.
        extra_info: unused; part of the seam.
        metric: which metric becomes ``score``: ``f1`` (the paper), ``em``, ``sub_em`` or ``hotpot_f1``.

    Returns:
        ``{"score", "em", "sub_em", "f1", "hotpot_f1", "has_answer"}``, all floats; every value is
        0.0 when the response has no answer.
    """
    if metric not in METRICS:
        raise ValueError(f"compute_score: metric must be one of {sorted(METRICS)}, got {metric!r}")
    golds = gold_answers(ground_truth)
    answer = extract_answer(solution_str)
    if answer is None:
        scores = {name: 0.0 for name in METRICS}
        has_answer = 0.0
    else:
        scores = {name: fn(answer, golds) for name, fn in METRICS.items()}
        has_answer = 1.0
    return {"score": scores[metric], **scores, "has_answer": has_answer}
