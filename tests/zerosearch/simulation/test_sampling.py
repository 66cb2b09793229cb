"""Request parsing: sglang sampling_params and OpenAI bodies -> SamplingSpec, with clear errors."""

from __future__ import annotations

import pytest

from zerosearch.simulation.backend import earliest_stop
from zerosearch.simulation.sampling import RequestError, SamplingSpec, from_openai, from_sglang, message_text


def test_sglang_defaults_match_sglang():
    spec = from_sglang(None)
    assert (spec.max_new_tokens, spec.temperature, spec.top_p, spec.top_k) == (128, 1.0, 1.0, -1)
    assert spec.stop == () and spec.ignore_eos is False and spec.seed is None


def test_sglang_fields():
    spec = from_sglang({"max_new_tokens": 600, "temperature": 0.8, "top_p": 0.9, "top_k": 20,
                        "stop": "</search>", "stop_token_ids": [7], "ignore_eos": True, "sampling_seed": 11,
                        "no_stop_trim": True, "n": 1, "frequency_penalty": 0.0})
    assert spec == SamplingSpec(max_new_tokens=600, temperature=0.8, top_p=0.9, top_k=20, stop=("</search>",),
                                stop_token_ids=(7,), ignore_eos=True, seed=11, no_stop_trim=True)
    assert from_sglang({"stop": ["a", "b"]}).stop == ("a", "b")


@pytest.mark.parametrize("params, needle", [
    ({"foo": 1}, "foo"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": "5"}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"stop": [""]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"n": 2}, "n=2"),
    ({"regex": "a+"}, "regex"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens"),
])
def test_sglang_errors_name_the_field(params, needle):
    with pytest.raises(RequestError, match=needle):
        from_sglang(params)


def test_openai_fields_and_defaults():
    spec = from_openai({"model": "m", "messages": [], "max_tokens": 600, "temperature": 0.8, "seed": 5}, 99)
    assert (spec.max_new_tokens, spec.temperature, spec.seed, spec.top_p) == (600, 0.8, 5, 1.0)
    assert from_openai({}, 99).max_new_tokens == 99
    assert from_openai({"max_completion_tokens": 7}, 99).max_new_tokens == 7
    assert from_openai({"stop": ["x"], "stream": False, "n": 1}, 9).stop == ("x",)


@pytest.mark.parametrize("body, needle", [({"stream": True}, "stream"), ({"n": 3}, "n=3"),
                                          ({"logprobs": True}, "logprobs"), ({"seed": "a"}, "seed")])
def test_openai_unsupported_options_are_refused(body, needle):
    with pytest.raises(RequestError, match=needle):
        from_openai(body, 8)


def test_message_text_accepts_string_parts_and_none():
    assert message_text("hi", 0) == "hi"
    assert message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], 0) == "ab"
    assert message_text(None, 0) == ""
    with pytest.raises(RequestError, match=r"messages\[2\]"):
        message_text([{"type": "image_url", "image_url": {"url": "x"}}], 2)
    with pytest.raises(RequestError, match=r"messages\[1\]"):
        message_text(5, 1)


def test_earliest_stop_prefers_first_position_then_longest():
    assert earliest_stop("abc</search>def</answer>", ("</answer>", "</search>")) == (3, "</search>")
    assert earliest_stop("xx</s>", ("</s", "</s>")) == (2, "</s>")
    assert earliest_stop("nothing", ("a1",)) is None
