"""Sampling settings of one generation request, read from sglang's or OpenAI's request format.

Both protocols of the simulation server end up as a list of ``GenerationRequest`` (prompt token
ids + ``SamplingSpec``) handed to a backend, and a ``GenerationResult`` per request coming back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RequestError(ValueError):
    """The client sent something the server cannot serve (answered with HTTP 400)."""


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample one completion.

    Attributes:
        max_new_tokens: cap on generated tokens.
        min_new_tokens: tokens to generate before EOS / stop tokens may end the completion.
        temperature: 0 means greedy.
        top_p: nucleus mass (1.0 = off); top_k: -1 = off.
        stop: stop strings; the completion ends at the first one to appear.
        stop_token_ids: extra token ids that end the completion (EOS always does, unless ignore_eos).
        ignore_eos: keep generating past EOS.
        seed: per-request seed (None = the server's global RNG state).
        repetition_penalty: HF-style multiplicative penalty (1.0 = off).
        skip_special_tokens: drop special tokens when decoding the text.
        no_stop_trim: keep the matched stop string at the end of the text.
    """

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    repetition_penalty: float = 1.0
    skip_special_tokens: bool = True
    no_stop_trim: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            raise RequestError(f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}")
        if self.temperature < 0:
            raise RequestError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            raise RequestError(f"top_k must be -1 (off) or >= 1, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise RequestError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError(f"stop must be non-empty strings, got {list(self.stop)!r}")


@dataclass
class GenerationRequest:
    """One prompt to complete: prompt_ids (token ids, no padding) and its sampling spec."""

    prompt_ids: list[int]
    sampling: SamplingSpec


@dataclass
class GenerationResult:
    """One completion.

    Attributes:
        text: decoded completion (stop string trimmed unless no_stop_trim).
        output_ids: generated token ids, up to and including the token that ended the completion.
        finish_reason: sglang's form: {"type": "stop", "matched": str | int} or
            {"type": "length", "length": int}.
        prompt_tokens: length of the prompt in tokens.
    """

    text: str
    output_ids: list[int]
    finish_reason: dict[str, Any]
    prompt_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def openai_finish_reason(self) -> str:
        return "length" if self.finish_reason.get("type") == "length" else "stop"


def _as_tuple_of(kind: type, value: Any, name: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, kind):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise RequestError(f"{name} must be a {kind.__name__} or a list of them, got {value!r}")


def _number(params: dict, key: str, default: Any, kind: type) -> Any:
    value = params.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{key} must be a number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise RequestError(f"{key} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RequestError(f"{key} must be true or false, got {value!r}")
    return value


# sglang sampling_params keys this server honours, and the ones it accepts only at their no-op value.
SGLANG_KEYS = {"max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "stop", "stop_token_ids",
               "ignore_eos", "sampling_seed", "seed", "repetition_penalty", "skip_special_tokens",
               "spaces_between_special_tokens", "no_stop_trim"}
_NOOP_VALUES = {"n": 1, "min_p": 0.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "json_schema": None,
                "regex": None, "ebnf": None, "logit_bias": None, "stop_regex": None, "custom_params": None}


def _check_noops(params: dict, noop: dict[str, Any], where: str) -> None:
    for key, neutral in noop.items():
        if key in params and params[key] not in (neutral, None):
            raise RequestError(f"{where}: {key}={params[key]!r} is not supported by this server (only {neutral!r})")


def _read_spec(params: dict, max_key: str, max_default: int, min_key: str, **extra: Any) -> SamplingSpec:
    """The SamplingSpec of ``params``, read under the keys sglang and the OpenAI API share.

    The token-count keys differ between the two and are named by the caller (``max_key`` with its
    default, ``min_key``); ``extra`` holds fields only one of them has, already read.
    """
    return SamplingSpec(
        max_new_tokens=_number(params, max_key, max_default, int),
        min_new_tokens=_number(params, min_key, 0, int),
        temperature=_number(params, "temperature", 1.0, float),
        top_p=_number(params, "top_p", 1.0, float),
        top_k=_number(params, "top_k", -1, int),
        stop=_as_tuple_of(str, params.get("stop"), "stop"),
        stop_token_ids=_as_tuple_of(int, params.get("stop_token_ids"), "stop_token_ids"),
        ignore_eos=_flag(params, "ignore_eos", False),
        seed=_number(params, "seed", None, int),
        repetition_penalty=_number(params, "repetition_penalty", 1.0, float),
        skip_special_tokens=_flag(params, "skip_special_tokens", True),
        **extra,
    )


def from_sglang(params: dict | None) -> SamplingSpec:
    """Read sglang's ``sampling_params`` (defaults as in sglang: max_new_tokens 128, temperature 1)."""
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise RequestError(f"sampling_params must be an object, got {params!r}")
    unknown = sorted(set(params) - SGLANG_KEYS - set(_NOOP_VALUES))
    if unknown:
        raise RequestError(f"sampling_params: unknown key(s) {unknown}; supported: {sorted(SGLANG_KEYS)}")
    _check_noops(params, _NOOP_VALUES, "sampling_params")
    seed = params.get("sampling_seed", params.get("seed"))
    return _read_spec(dict(params, seed=seed), "max_new_tokens", 128, "min_new_tokens",
                      no_stop_trim=_flag(params, "no_stop_trim", False))


_OPENAI_NOOPS = {"n": 1, "stream": False, "logprobs": False, "top_logprobs": None, "frequency_penalty": 0.0,
                 "presence_penalty": 0.0, "logit_bias": None, "tools": None, "response_format": None}


def from_openai(body: dict, default_max_tokens: int) -> SamplingSpec:
    """Read the sampling fields of an OpenAI chat-completions body.

    ``max_tokens`` (or ``max_completion_tokens``) defaults to ``default_max_tokens``; temperature
    defaults to 1 as in the OpenAI API. ``top_k``, ``min_tokens``, ``repetition_penalty``,
    ``ignore_eos`` and ``stop_token_ids`` are accepted as the vLLM/sglang extensions.
    """
    _check_noops(body, _OPENAI_NOOPS, "chat.completions")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    return _read_spec(dict(body, max_tokens=max_tokens), "max_tokens", default_max_tokens, "min_tokens")


def message_text(content: Any, index: int) -> str:
    """Content of an OpenAI message: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"messages[{index}].content: only text parts are supported, got {part!r}")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts, got {content!r}")
