"""SingleTurnAgentLoop + HFRollout on a tiny model: the padded output re-scores to its log-probs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from verl.agent_loop.single_turn import SingleTurnAgentLoop
from verl.protocol import DataProto
from verl.workers.rollout.base import SamplingConfig
from verl.workers.rollout.hf_rollout import HFRollout

TEXTS = ["who wrote hamlet", "the quick brown fox jumps", "a b"]


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.verl.tiny_models import model

    corpus = [f"{t} over the lazy dog {i}" for i in range(20) for t in TEXTS]
    path = model(tmp_path_factory.mktemp("single_turn"), "tiny", corpus, seed=2, vocab_size=320)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # a peaked distribution, closer to a trained model
    return model, AutoTokenizer.from_pretrained(path)


def test_output_rescored_by_a_padded_forward_gives_the_rollout_log_probs(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    enc = tokenizer(TEXTS, padding="max_length", max_length=8, return_tensors="pt")  # left padding
    batch = DataProto.from_dict(
        tensors={"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
        non_tensors={"uid": ["0", "1", "2"]},
    )
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {
        "max_new_tokens": 6, "temperature": 0.8, "top_p": 1.0, "top_k": -1,
        "val_kwargs": {"do_sample": False, "temperature": 0.0, "top_p": 1.0}}}})
    rollout = HFRollout(model, tokenizer, {})

    def generate(prompts: list[list[int]], sampling: SamplingConfig):
        return rollout.generate(prompts, dataclasses.replace(sampling, seed=0))

    out = SingleTurnAgentLoop(config, tokenizer).run(batch, generate, step=1)
    b = out.batch
    # the dataset's padding to 8 is dropped: prompts are left-padded to the longest one (5 tokens)
    longest = int(enc["attention_mask"].sum(-1).max())
    assert longest < 8 and torch.equal(b["prompts"], enc["input_ids"][:, -longest:])
    with torch.no_grad():
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], position_ids=b["position_ids"]).logits
    width = b["prompts"].shape[1]
    logits = logits[:, width - 1 : -1].double() / 0.8
    expected = torch.log_softmax(logits, -1).gather(-1, b["responses"][..., None]).squeeze(-1)
    mask = b["response_mask"].bool()
    assert mask.sum() > 0
    assert torch.allclose(b["rollout_log_probs"][mask].double(), expected[mask], atol=1e-5)
    assert torch.all(b["rollout_log_probs"][~mask] == 0)
