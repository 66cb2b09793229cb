"""Action parsing: well-formed, malformed, nested, unclosed and multiple tags; huge inputs."""

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zerosearch.actions import ANSWER, INVALID, SEARCH, Action, parse_action


@pytest.mark.parametrize(
    "text, kind, content",
    [
        ("<think>hmm</think><search> capital of France </search>", SEARCH, "capital of France"),
        ("<answer>Paris</answer>", ANSWER, "Paris"),
        ("<answer>\n  Paris \n</answer>", ANSWER, "Paris"),
        ("<answer></answer>", ANSWER, ""),
        # the first closed action wins
        ("<search>a</search><answer>b</answer>", SEARCH, "a"),
        ("<answer>b</answer><search>a</search>", ANSWER, "b"),
        ("<search>a</search> then <search>b</search>", SEARCH, "a"),
        # repeated opening: content starts at the nearest opening tag
        ("<search>x <search>y</search>", SEARCH, "y"),
        # a search closed inside an unfinished answer ends the turn first
        ("<answer>a <search>q</search> b</answer>", SEARCH, "q"),
        # an unclosed opening tag is skipped
        ("<search>never closed <answer>42</answer>", ANSWER, "42"),
        # a closing tag with no opening before it is ignored
        ("</search> <search>q</search>", SEARCH, "q"),
        ("</answer><answer>x</answer>", ANSWER, "x"),
        ("<search>line1\nline2</search>", SEARCH, "line1\nline2"),
    ],
)
def test_parse_cases(text, kind, content):
    action = parse_action(text)
    assert (action.kind, action.content) == (kind, content)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no tags at all",
        "<search>unclosed",
        "</search>",
        "<search></search>",  # empty query
        "<search>   \n </search>",
        "<Search>q</Search>",  # tags are case-sensitive
        "<search>q</answer>",  # mismatched kinds
        "<answer>a</search>",
        "< search>q</ search>",
    ],
)
def test_invalid_cases(text):
    assert parse_action(text) == Action(INVALID)


def test_end_is_just_after_the_closing_tag():
    text = "abc<search>q</search>tail"
    assert parse_action(text).end == len("abc<search>q</search>")
    assert parse_action("<answer>x</answer>").end == len("<answer>x</answer>")
    assert parse_action("junk").end == 0


def test_answer_only_kinds_ignore_search():
    text = "<search>q</search> <answer>A</answer>"
    assert parse_action(text, kinds=(ANSWER,)) == Action(ANSWER, "A", len(text))
    assert parse_action("<search>q</search>", kinds=(ANSWER,)).kind == INVALID


def test_query_is_capped_then_stripped():
    assert parse_action("<search>abcdef</search>", max_query_chars=3).content == "abc"
    assert parse_action("<search>ab   cd</search>", max_query_chars=4).content == "ab"
    # answers are not capped
    assert parse_action("<answer>abcdef</answer>", max_query_chars=3).content == "abcdef"


def test_bad_arguments():
    with pytest.raises(TypeError, match="text"):
        parse_action(b"<answer>x</answer>")
    with pytest.raises(ValueError, match="kinds"):
        parse_action("x", kinds=("think",))
    with pytest.raises(ValueError, match="kinds"):
        parse_action("x", kinds=())
    with pytest.raises(ValueError, match="max_query_chars"):
        parse_action("x", max_query_chars=0)


@pytest.mark.parametrize(
    "text",
    [
        "<search>" * 200_000,
        "</search>" * 200_000,
        "<search>" * 100_000 + "</answer>" * 100_000,
        "<answer>" + "<search>x" * 100_000 + "</answer>",
        "<" * 2_000_000,
        "<search>" + "a" * 2_000_000,
    ],
)
def test_huge_inputs_parse_in_bounded_time(text):
    start = time.perf_counter()
    parse_action(text, max_query_chars=100)
    assert time.perf_counter() - start < 0.5


def test_huge_valid_input_found():
    text = "x" * 1_000_000 + "<answer>y</answer>"
    start = time.perf_counter()
    assert parse_action(text) == Action(ANSWER, "y", len(text))
    assert time.perf_counter() - start < 0.5


_PIECES = st.sampled_from(["<search>", "</search>", "<answer>", "</answer>", "<", ">", "/", "a", " ", "\n", "é"])


@settings(max_examples=300, deadline=200)
@given(st.lists(_PIECES, max_size=60).map("".join), st.integers(min_value=1, max_value=20))
def test_random_tag_soup_never_crashes(text, cap):
    action = parse_action(text, max_query_chars=cap)
    assert action.kind in (SEARCH, ANSWER, INVALID)
    if action.kind == INVALID:
        assert action == Action(INVALID)
        return
    # the action ends with its own closing tag, and its content appears right before it
    closing = f"</{action.kind}>"
    assert text[: action.end].endswith(closing)
    assert action.content == action.content.strip()
    assert action.content in text[: action.end - len(closing)]
    if action.kind == SEARCH:
        assert 0 < len(action.content) <= cap
    # no earlier closing tag of either kind that had an opening tag before it
    prefix = text[: action.end - len(closing)]
    for kind in (SEARCH, ANSWER):
        first_open = prefix.find(f"<{kind}>")
        if first_open >= 0:
            assert f"</{kind}>" not in prefix[first_open:]


@settings(max_examples=100, deadline=200)
@given(st.text(max_size=2000))
def test_arbitrary_text_never_crashes(text):
    assert parse_action(text).kind in (SEARCH, ANSWER, INVALID)
