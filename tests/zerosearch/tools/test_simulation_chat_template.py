"""The simulator receives the same text through both protocols, and the SFT rows the same messages.

With a Qwen2-style chat template (a default system message when none is given), the OpenAI-chat
request rendered as the server renders it and the sglang-native text the client renders itself
must be the same tokens, with an empty system block by default.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from zerosearch import prompts
from zerosearch.tools import SearchRequest, build_search_tool
from zerosearch.tools.simulation import SimulationSearchTool

pytestmark = pytest.mark.slow

REQUEST = SearchRequest(query="Tala Menz", question="Where was Tala Menz born?", golden_answers=["Vostrand"])
# The simulate_sft prompt of REQUEST, written out by hand.
PROMPT = ("You are the Google search engine.\n"
          "Given a query, you need to generate five useful documents for the query.\n"
          "\n"
          'The user is trying to answer the question: "Where was Tala Menz born?" whose answer is Vostrand.\n'
          "Each document should contain about 30 words, and these documents should contain useful information.\n"
          "\n"
          "Query: Tala Menz\n"
          "Useful Output:\n")


def _texts_sent(fake_server, tokenizer_dir, **kwargs) -> tuple[list[int], list[int], str]:
    """(tokens of the OpenAI request as the server renders it, tokens of the sglang-native text,
    that text), one search of REQUEST through each protocol."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(hosts="127.0.0.1", port=fake_server.port, mode="simulate_sft", max_retries=0, timeout=5.0, **kwargs)
    with SimulationSearchTool(protocol="openai", **common) as tool:
        assert tool.search([REQUEST])[0].ok
    with SimulationSearchTool(protocol="sglang_native", tokenizer=str(tokenizer_dir), **common) as tool:
        assert tool.search([REQUEST])[0].ok
    (chat,) = fake_server.state.bodies("/v1/chat/completions")
    (native,) = fake_server.state.bodies("/generate")
    served = tok.apply_chat_template(chat["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(served), tok(native["text"])["input_ids"], native["text"]


def test_both_protocols_send_the_empty_system_message_token_for_token(fake_server, qwen2_style_tokenizer_dir):
    served, native, text = _texts_sent(fake_server, qwen2_style_tokenizer_dir, system_prompt="")
    expected = f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    assert text == expected
    assert native == served
    tok = AutoTokenizer.from_pretrained(qwen2_style_tokenizer_dir)
    empty_system = tok("<|im_start|>system\n<|im_end|>\n")["input_ids"]
    assert served[: len(empty_system)] == empty_system
    # The point of the empty system message: without one, this template writes its default text.
    user_only = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        tokenize=False)
    assert "You are Qwen" in user_only and "You are Qwen" not in text


def test_system_prompt_overrides_the_message_in_both_protocols(fake_server, qwen2_style_tokenizer_dir):
    served, native, text = _texts_sent(fake_server, qwen2_style_tokenizer_dir, system_prompt="Write documents.")
    assert text.startswith("<|im_start|>system\nWrite documents.<|im_end|>\n<|im_start|>user\nYou are the Google")
    assert native == served


def test_the_default_config_sends_the_empty_system_message(fake_server, qwen2_style_tokenizer_dir):
    """configs/retriever/default.yaml's system_prompt; sglang_native with tokenizer null asks the
    server's /get_model_info for the model folder."""
    cfg = OmegaConf.load("configs/retriever/default.yaml")
    cfg.seed = 0
    cfg.simulation.port = fake_server.port
    cfg.simulation.protocol = "sglang_native"
    assert cfg.simulation.system_prompt == "" and cfg.simulation.tokenizer is None
    fake_server.state.model_path = str(qwen2_style_tokenizer_dir)
    with build_search_tool(cfg, "simulate_sft") as tool:
        assert tool.search([REQUEST])[0].ok
    (native,) = fake_server.state.bodies("/generate")
    assert native["text"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")


def test_sglang_native_without_a_tokenizer_names_the_key(fake_server):
    with SimulationSearchTool(protocol="sglang_native", hosts="127.0.0.1", port=fake_server.port) as tool:
        with pytest.raises(RuntimeError, match="retriever.simulation.tokenizer"):
            tool.search([REQUEST])  # the fake reports no model_path
    assert fake_server.state.bodies("/generate") == []


def test_sft_rows_carry_the_messages_the_client_sends(fake_server):
    """The simulation-tuning rows and the serving-time request hold the same messages."""
    from zerosearch.simulation_tuning.build_sft import candidate_rows

    record = {"query": REQUEST.query, "question": REQUEST.question, "golden_answers": ["Vostrand"],
              "documents": [f"doc {i}" for i in range(5)], "labels": ["useful"] * 5}
    for system_prompt in ("", "Write documents.", None):
        fake_server.state.reset()
        (row,) = candidate_rows([record], system_prompt, topk=5)
        with SimulationSearchTool(protocol="openai", hosts="127.0.0.1", port=fake_server.port,
                                  system_prompt=system_prompt) as tool:
            tool.search([REQUEST])
        (chat,) = fake_server.state.bodies("/v1/chat/completions")
        assert row["prompt"] == chat["messages"] == prompts.simulation_messages(PROMPT, system_prompt)
