"""Answer extraction and the EM / SubEM / F1 metrics against the shared vectors and hand cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zerosearch.prompts import make_prefix
from zerosearch.reward import compute_score, em, extract_answer, f1, gold_answers, hotpot_f1, normalize_answer, sub_em

VECTORS = Path(__file__).resolve().parents[2] / "data" / "metrics" / "em_f1_vectors.jsonl"


def load_vectors() -> list[dict]:
    return [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_all_forty_vectors_are_present():
    assert len(load_vectors()) == 40


@pytest.mark.parametrize("vec", load_vectors(), ids=lambda v: v["id"])
def test_metric_vectors(vec):
    pred, golds = vec["prediction"], vec["golden_answers"]
    assert normalize_answer(pred) == vec["normalized_prediction"]
    assert [normalize_answer(g) for g in golds] == vec["normalized_golden_answers"]
    assert em(pred, golds) == vec["expected_em"]
    assert sub_em(pred, golds) == vec["expected_subem"]
    assert f1(pred, golds) == pytest.approx(vec["expected_f1"], abs=1e-9)
    assert hotpot_f1(pred, golds) == pytest.approx(vec["expected_hotpot_f1"], abs=1e-9)
    # Through the reward seam, with the answer wrapped in tags.
    scores = compute_score("nq", f"<think>x</think><answer>{pred}</answer>", {"target": golds})
    assert scores["em"] == vec["expected_em"] and scores["sub_em"] == vec["expected_subem"]
    assert scores["score"] == pytest.approx(vec["expected_f1"], abs=1e-9)


@pytest.mark.parametrize(
    "response, expected",
    [
        ("no tags at all", None),
        ("<answer>unclosed", None),
        ("</answer> stray close", None),
        ("<answer> Paris </answer>", "Paris"),
        ("<answer>first</answer> then <answer>second</answer>", "second"),
        ("<answer>a <answer>b</answer>", "b"),
        ("<answer>x</answer> <answer>y", "x"),
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
        ("<answer></answer>", ""),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_answer_in_the_prompt_does_not_count():
    prompt = make_prefix("What is the capital of China")
    assert extract_answer(prompt) == "Beijing"  # the instruction's own example
    response = "<think>I do not know.</think>"
    assert extract_answer(response) is None
    scores = compute_score("nq", response, {"target": ["Beijing"]})
    assert scores == {"score": 0.0, "em": 0.0, "sub_em": 0.0, "f1": 0.0, "hotpot_f1": 0.0, "has_answer": 0.0}


def test_compute_score_metric_choice_and_ground_truth_forms():
    response = "<answer>the city of Paris</answer>"
    # Hand-worked: pred tokens [city, of, paris], gold [paris]: P=1/3, R=1, F1=0.5.
    for truth in ({"target": ["Paris"]}, {"target": np.array(["Paris"], dtype=object)}, ["Paris"], "Paris",
                  np.array(["Lyon", "Paris"])):
        scores = compute_score("nq", response, truth)
        assert scores["f1"] == pytest.approx(0.5) and scores["score"] == pytest.approx(0.5)
        assert scores["em"] == 0.0 and scores["sub_em"] == 1.0 and scores["has_answer"] == 1.0
    assert compute_score("nq", response, "Paris", metric="sub_em")["score"] == 1.0
    assert compute_score("nq", response, "Paris", metric="em")["score"] == 0.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="metric"):
        compute_score("nq", "<answer>a</answer>", "a", metric="bleu")
    with pytest.raises(ValueError, match="'target'"):
        gold_answers({"answers": ["a"]})
    with pytest.raises(ValueError, match="no gold answers"):
        gold_answers({"target": []})
    with pytest.raises(ValueError, match="strings"):
        gold_answers({"target": [1, 2]})
