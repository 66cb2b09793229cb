"""Point 2, the search side in isolation: a resumed agent loop sends the same simulator requests.

The simulation tool derives each request's sampling seed from a request counter, and the noise
curriculum draws useful/noisy per query. A loop rebuilt from ``state_dict()`` (what a checkpoint
holds) must send exactly the requests the uninterrupted loop sends; the fault server writes the
seed and the useful/noisy kind into its documents, so equal responses mean equal requests.
"""

from __future__ import annotations

import pytest
import torch
from reliability_helpers import SearchingPolicy, agent_config, prompt_batch

from zerosearch.agent import SearchAgentLoop

pytestmark = pytest.mark.slow

QUERIES = ["alpha", "beta", "gamma", "delta"]


def run(loop, tok, step):
    return loop.run(prompt_batch(tok, len(QUERIES)), SearchingPolicy(tok, QUERIES), step=step)


def test_resumed_loop_sends_the_requests_of_the_uninterrupted_one(fault_server_factory, small_tokenizer):
    server = fault_server_factory()
    cfg = agent_config(server.port, start_threshold=0.5, end_threshold=0.5)  # noisy or useful, half and half
    tok = small_tokenizer
    straight, first, resumed = (SearchAgentLoop(cfg, tok) for _ in range(3))
    try:
        run(straight, tok, 1)
        expected = run(straight, tok, 2)

        run(first, tok, 1)
        resumed.load_state_dict(first.state_dict())
        got = run(resumed, tok, 2)
    finally:
        for loop in (straight, first, resumed):
            loop.close()
    text = tok.decode(expected.batch["responses"].flatten().tolist())
    assert "Useful result" in text and "Noisy result" in text and "(seed " in text
    assert torch.equal(got.batch["responses"], expected.batch["responses"])
