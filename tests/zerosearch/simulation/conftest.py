"""Fixtures of the simulation-server tests: a tiny offline model and a live server on 127.0.0.1
(``zerosearch.retrieval.background.BackgroundServer``)."""

from __future__ import annotations

import pytest

from zerosearch.retrieval.background import BackgroundServer

CORPUS = [
    "Doc 1: The George Washington Bridge spans the Hudson River between New York and New Jersey.",
    "Doc 2: It opened in 1931 and was designed by Othmar Ammann.",
    "Query: who designed the bridge? Useful Output: Doc 1: ... Doc 2: ...",
    "<search> bridge designer </search> <information> Doc 1: text </information> <answer> Ammann </answer>",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from zerosearch.miniature.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("sim") / "tiny", size="tiny", corpus_texts=CORPUS,
                                vocab_size=512, kind="simulation"))


@pytest.fixture(scope="session")
def hf_backend(tiny_model_dir):
    from zerosearch.simulation.hf_backend import HFBackend

    return HFBackend(tiny_model_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def reference_model(tiny_model_dir):
    """The same weights loaded independently of the server, for greedy references."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def greedy(reference_model):
    """``greedy(prompt_ids, n)``: n greedy tokens of the reference model, by argmax over full forward
    passes (no generate, no cache)."""
    import torch

    model, _ = reference_model

    def run(prompt_ids: list[int], n: int) -> list[int]:
        ids = torch.tensor([prompt_ids])
        out = []
        with torch.no_grad():
            for _ in range(n):
                nxt = int(model(ids).logits[0, -1].argmax())
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        return out

    return run


@pytest.fixture(scope="module")
def live_server(hf_backend, tiny_model_dir):
    """The app on the HF backend; requests wait up to 150 ms for company so batching is observable."""
    from zerosearch.simulation.server import create_app

    app = create_app(hf_backend, served_model_name="sim-test", model_path=tiny_model_dir, max_batch=16,
                     max_wait_s=0.15, default_max_tokens=8)
    with BackgroundServer(app, lifespan="on") as server:
        yield server
