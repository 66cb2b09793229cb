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


# A Qwen2-style chat template: like Qwen2.5's, it writes a default system message when the
# conversation has none, so a missing system message and an empty one render differently.
QWEN2_STYLE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="session")
def qwen2_style_tokenizer_dir(tmp_path_factory):
    """A small byte-level BPE tokenizer (built offline) with the Qwen2-style template, saved."""
    from zerosearch import prompts
    from zerosearch.miniature import tiny

    texts = [prompts.simulate_sft_prompt(f"query {i}", f"question number {i}?", f"answer{i}", i % 2 == 1)
             for i in range(8)]
    tokenizer = tiny.build_tokenizer(texts, vocab_size=400)
    tokenizer.chat_template = QWEN2_STYLE_TEMPLATE
    path = tmp_path_factory.mktemp("qwen2_style_tokenizer")
    tokenizer.save_pretrained(path)
    return path
