"""Helpers the workers use: token-budget micro-batches, mini-batch arithmetic, lr schedules, packing."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from verl.protocol import DataProto
from verl.utils.model import pad_input, unpad_input
from verl.utils.optim import build_lr_scheduler, build_optimizer, num_warmup_steps
from verl.utils.seqlen_balancing import (partition_by_tokens, per_rank_mini_batch_size, rearrange_micro_batches,
                                         restore_order)


def test_partition_respects_budget_and_covers_every_row():
    costs = [7, 3, 5, 2, 6, 1]
    groups = partition_by_tokens(costs, max_token_len=10)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert all(sum(costs[i] for i in g) <= 10 for g in groups)
    assert len(groups) == 3  # 24 tokens need at least 3 groups of 10


def test_a_row_longer_than_the_budget_runs_alone_and_others_keep_the_budget():
    costs = [3, 14, 4, 12, 2, 5]  # rows 1 and 3 exceed 10 tokens; the other 14 tokens need 2 groups
    groups = partition_by_tokens(costs, max_token_len=10)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert [1] in groups and [3] in groups
    assert all(sum(costs[i] for i in g) <= 10 for g in groups if len(g) > 1)
    assert len(groups) == 4
    assert partition_by_tokens([11], max_token_len=10) == [[0]]
    with pytest.raises(ValueError, match="max_token_len must be positive"):
        partition_by_tokens([1], max_token_len=0)


def test_rearrange_and_restore_round_trip():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    data = DataProto.from_dict({"attention_mask": mask, "row": torch.arange(5)})
    micros, order = rearrange_micro_batches(data, max_token_len=6)
    assert all(int(m.batch["attention_mask"].sum()) <= 6 for m in micros)
    outs = [m.batch["row"] * 10 for m in micros]
    assert restore_order(outs, order).tolist() == [0, 10, 20, 30, 40]


def test_per_rank_mini_batch_size_checks_divisibility():
    assert per_rank_mini_batch_size(8, 8, 2, 2, "actor") == 4
    with pytest.raises(ValueError, match="multiple of the data-parallel size"):
        per_rank_mini_batch_size(8, 5, 2, 1, "actor")
    with pytest.raises(ValueError, match="not a multiple of its mini-batch"):
        per_rank_mini_batch_size(10, 8, 2, 1, "actor")  # 10 rows, mini 4 per rank: uneven
    with pytest.raises(ValueError, match="ppo_micro_batch_size_per_gpu"):
        per_rank_mini_batch_size(8, 8, 2, 3, "actor")


def _optim_cfg(**over):
    cfg = {"lr": 1.0, "betas": [0.9, 0.999], "weight_decay": 0.0, "lr_warmup_steps": -1,
           "lr_warmup_steps_ratio": 0.0, "warmup_style": "constant", "min_lr_ratio": 0.0, "total_training_steps": None}
    cfg.update(over)
    return OmegaConf.create(cfg)


def _lrs(cfg, n):
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    sched = build_lr_scheduler(opt, cfg)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_ratio_gives_linear_ramp_then_constant():
    # ratio 0.95 of 203 steps -> int(192.85) = 192 warmup steps
    assert num_warmup_steps(_optim_cfg(lr_warmup_steps_ratio=0.95), 203) == 192
    lrs = _lrs(_optim_cfg(lr_warmup_steps_ratio=0.5, total_training_steps=8), 7)
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert _lrs(_optim_cfg(lr_warmup_steps=2, lr_warmup_steps_ratio=0.9), 3) == pytest.approx([0.0, 0.5, 1.0])


def test_cosine_decays_to_min_lr():
    lrs = _lrs(_optim_cfg(warmup_style="cosine", lr_warmup_steps=0, total_training_steps=4, min_lr_ratio=0.1), 5)
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(5)]
    assert lrs == pytest.approx(expected)


def test_wsd_holds_lr_then_decays_over_the_last_share_of_the_steps():
    """warmup 2, 10 steps, lr_decay_steps_ratio 0.4: 4 decay steps (6-9) after 4 stable ones (2-5)."""
    cfg = _optim_cfg(warmup_style="wsd", lr_warmup_steps=2, total_training_steps=10, lr_decay_steps_ratio=0.4)
    decay = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert _lrs(cfg, 11) == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0, *decay, 0.0])
    floor = _lrs(_optim_cfg(warmup_style="wsd", lr_warmup_steps=0, total_training_steps=4, lr_decay_steps_ratio=0.5,
                            min_lr_ratio=0.2), 5)
    assert floor == pytest.approx([1.0, 1.0, 1.0, 0.2 + 0.8 * 0.5, 0.2])
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    with pytest.raises(ValueError, match="lr_decay_steps_ratio"):
        build_lr_scheduler(opt, _optim_cfg(warmup_style="wsd", total_training_steps=10, lr_decay_steps_ratio=0.0))
    with pytest.raises(ValueError, match="do not fit"):
        build_lr_scheduler(opt, _optim_cfg(warmup_style="wsd", lr_warmup_steps=8, total_training_steps=10,
                                           lr_decay_steps_ratio=0.4))
    with pytest.raises(ValueError, match="total_training_steps"):
        build_lr_scheduler(opt, _optim_cfg(warmup_style="wsd", lr_decay_steps_ratio=0.4))


def test_optim_config_errors_name_the_key():
    with pytest.raises(ValueError, match="total_training_steps"):
        build_lr_scheduler(build_optimizer([torch.nn.Parameter(torch.zeros(1))], _optim_cfg()),
                           _optim_cfg(lr_warmup_steps_ratio=0.1))
    with pytest.raises(ValueError, match="warmup_style"):
        build_lr_scheduler(build_optimizer([torch.nn.Parameter(torch.zeros(1))], _optim_cfg()),
                           _optim_cfg(warmup_style="linear"))
    with pytest.raises(KeyError, match="lr"):
        build_optimizer([torch.nn.Parameter(torch.zeros(1))], OmegaConf.create({"betas": [0.9, 0.99]}))


def test_unpad_pad_round_trip():
    ids = torch.tensor([[0, 0, 5, 6], [7, 8, 9, 0]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    pos = torch.tensor([[0, 0, 0, 1], [0, 1, 2, 2]])
    packed, packed_pos, idx = unpad_input(ids, mask, pos)
    assert packed.tolist() == [[5, 6, 7, 8, 9]]
    assert packed_pos.tolist() == [[0, 1, 0, 1, 2]]
    back = pad_input(packed[0], idx, 2, 4)
    assert back.tolist() == [[0, 0, 5, 6], [7, 8, 9, 0]]
