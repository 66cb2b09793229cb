"""Independent references for the rollout tests: plain forward passes, float64 log-softmax."""

from __future__ import annotations

import torch

# Texts for the test tokenizer; tags such as </search> become single tokens (tests/verl/tiny_models.AGENT_TAGS).
CORPUS = (
    ["Answer the given question. <think> I need to search for it. </think> <search> who wrote hamlet </search> "
     "<information> Doc 1: Hamlet is a tragedy written by William Shakespeare. </information> "
     "<answer> William Shakespeare </answer>"] * 10
    + [f"The quick brown fox jumps over the lazy dog {i} times, then it rests in the shade." for i in range(40)]
)
PROMPT_TEXTS = (
    "Answer the given question. <think> I need",
    "The quick brown fox",
    "Doc 1: Hamlet is a tragedy written by William Shakespeare, the lazy dog rests.",
)
LOGIT_SCALE = 10.0  # spreads the random model's logits (entropy ~4 nats instead of ~log V)
BOOST_STEP = 3  # </search> is made to win at this greedy step of PROMPT_TEXTS[0]
STOP_TAG = "</search>"


@torch.no_grad()
def next_logits(model, ids: list[int]) -> torch.Tensor:
    """Float64 logits (V,) of the token after ``ids`` from one plain, unpadded forward pass."""
    return model(torch.tensor([ids])).logits[0, -1].double()


@torch.no_grad()
def greedy_reference(model, prompt: list[int], steps: int, end_ids: set[int] = frozenset()) -> list[int]:
    """Greedy continuation by repeated full forward passes (no KV cache, no padding)."""
    out: list[int] = []
    for _ in range(steps):
        tok = int(next_logits(model, prompt + out).argmax())
        out.append(tok)
        if tok in end_ids:
            break
    return out


@torch.no_grad()
def rescore(model, prompt: list[int], response: list[int], temperature: float = 1.0, top_k: int = -1) -> list[float]:
    """Float64 log-probs of ``response`` after ``prompt`` at ``temperature`` (top-k renormalised)."""
    logits = model(torch.tensor([prompt + response])).logits[0].double()
    logits = logits[len(prompt) - 1 : len(prompt) - 1 + len(response)] / temperature
    if top_k > 0:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    lp = torch.log_softmax(logits, dim=-1)
    return lp.gather(-1, torch.tensor(response)[:, None]).squeeze(-1).tolist()


def first_stop_index(tokenizer, ids: list[int], stop: str) -> int | None:
    """Smallest k with ``stop`` in decode(ids[:k]), or None."""
    for k in range(1, len(ids) + 1):
        if stop in tokenizer.decode(ids[:k], skip_special_tokens=False):
            return k
    return None


def multi_token_stop(tokenizer, ids: list[int], start: int = 3) -> tuple[str, int]:
    """A stop string spelled by two or more tokens of ``ids`` (at or after ``start``) and the
    length of the shortest prefix of ``ids`` whose text contains it."""
    for a in range(start, len(ids) - 1):
        for b in range(a + 2, min(a + 4, len(ids)) + 1):
            text = tokenizer.decode(ids[a:b], skip_special_tokens=False)
            if "\ufffd" in text or not text.strip() or len(tokenizer.encode(text)) < 2:
                continue
            k = first_stop_index(tokenizer, ids, text)
            if k is not None and k < len(ids):
                return text, k
    raise AssertionError(f"no multi-token stop string found in {ids}")


def boost_token(model, token_id: int, like_token: int, factor: float = 1.5) -> None:
    """Make ``token_id``'s output row ``factor`` times ``like_token``'s (wins where that one did)."""
    with torch.no_grad():
        model.lm_head.weight[token_id] = factor * model.lm_head.weight[like_token]
