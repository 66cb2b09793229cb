"""Fixtures of the reliability suite (helpers live in reliability_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest
from reliability_helpers import FaultServer, free_port


@pytest.fixture
def fault_server_factory():
    started: list[FaultServer] = []

    def make(**flags: Any) -> FaultServer:
        server = FaultServer(free_port(), **flags)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def small_tokenizer():
    from zerosearch.miniature.tiny import build_tokenizer

    texts = ["question number answer document search result for the query seed"] * 20
    return build_tokenizer(texts, vocab_size=300)



@pytest.fixture(scope="session")
def searching_model_dir(tmp_path_factory):
    from searching_model import build_searching_model

    return str(build_searching_model(tmp_path_factory.mktemp("searching_policy")))


@pytest.fixture(scope="session")
def train_parquet(tmp_path_factory):
    from scripts.data_process.qa_search import main as qa_search

    out = tmp_path_factory.mktemp("qa")
    return str(qa_search(["--out", str(out)])["train"])
