"""Shared fixtures for the worker tests: a tiny random Qwen2 folder and hand-made PPO batches."""

import pytest
import torch

from verl.protocol import DataProto
from verl.utils.torch_functional import compute_position_id_with_mask


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tests.verl.tiny_models import model

    return model(tmp_path_factory.mktemp("tiny_policy"), size="tiny", seed=0)


def build_batch(vocab: int, prompt_lens: list[int], resp_lens: list[int], P: int, R: int, seed: int = 0,
                pad_id: int = 0, holes: dict[int, list[int]] | None = None) -> DataProto:
    """Left-padded prompts (P) + right-padded responses (R), with ids drawn from [3, vocab).

    ``holes`` marks response positions (row -> positions) that are real tokens but carry no loss
    (like tool observations): attention_mask 1, response_mask 0.
    """
    g = torch.Generator().manual_seed(seed)
    B = len(prompt_lens)
    input_ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(B, P + R, dtype=torch.long)
    for b, (pl, rl) in enumerate(zip(prompt_lens, resp_lens)):
        input_ids[b, P - pl:P] = torch.randint(3, vocab, (pl,), generator=g)
        input_ids[b, P:P + rl] = torch.randint(3, vocab, (rl,), generator=g)
        attention_mask[b, P - pl:P + rl] = 1
    response_mask = attention_mask[:, P:].clone()
    for b, positions in (holes or {}).items():
        response_mask[b, positions] = 0
    return DataProto.from_dict({
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": compute_position_id_with_mask(attention_mask),
        "responses": input_ids[:, P:].clone(),
        "response_mask": response_mask,
    })


@pytest.fixture
def make_batch():
    return build_batch
