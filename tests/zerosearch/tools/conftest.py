"""Fixtures of the search-tool tests: one fake server for the session, reset before each test."""

from __future__ import annotations

import pytest
from search_fakes import FakeServer


@pytest.fixture(scope="session")
def _fake_server_session():
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture
def fake_server(_fake_server_session):
    _fake_server_session.state.reset()
    yield _fake_server_session
    _fake_server_session.state.reset()
