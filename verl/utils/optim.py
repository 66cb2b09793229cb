"""Optimizer and learning-rate schedule builders from an ``optim`` config block.

Keys read (all documented in the role yaml files): ``lr``, ``betas``, ``weight_decay``,
``lr_warmup_steps``, ``lr_warmup_steps_ratio``, ``warmup_style`` (constant | cosine | wsd),
``min_lr_ratio`` (decay floor as a share of lr), ``lr_decay_steps_ratio`` (wsd only; the SFT
trainer's yaml has it) and ``total_training_steps`` (set by the trainer).

The schedule counts *training steps*: the actor and critic call ``scheduler.step()`` once per
update call, however many optimizer steps (mini-batches, epochs) the update makes.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from transformers.optimization import (get_constant_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup,
                                       get_wsd_schedule)

WARMUP_STYLES = ("constant", "cosine", "wsd")


def _get(cfg: Mapping, key: str, where: str) -> Any:
    if key not in cfg:
        raise KeyError(f"{where}: missing key '{key}'")
    return cfg[key]


def build_optimizer(params: Iterable[torch.nn.Parameter], optim_cfg: Mapping, where: str = "optim") -> torch.optim.AdamW:
    """AdamW with ``lr``, ``betas`` and ``weight_decay`` from ``optim_cfg``."""
    lr = float(_get(optim_cfg, "lr", where))
    betas = tuple(float(b) for b in _get(optim_cfg, "betas", where))
    weight_decay = float(_get(optim_cfg, "weight_decay", where))
    if lr < 0:
        raise ValueError(f"{where}.lr must be >= 0, got {lr}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"{where}.betas must be two numbers in [0, 1), got {list(betas)}")
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)


def num_warmup_steps(optim_cfg: Mapping, total_steps: int | None, where: str = "optim") -> int:
    """``lr_warmup_steps`` when >= 0, else ``int(lr_warmup_steps_ratio * total_steps)``."""
    steps = int(_get(optim_cfg, "lr_warmup_steps", where))
    if steps >= 0:
        return steps
    ratio = float(_get(optim_cfg, "lr_warmup_steps_ratio", where))
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"{where}.lr_warmup_steps_ratio must be in [0, 1], got {ratio}")
    if ratio == 0.0:
        return 0
    if total_steps is None:
        raise ValueError(f"{where}.lr_warmup_steps_ratio={ratio} needs {where}.total_training_steps (set by the trainer)")
    return int(ratio * total_steps)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Mapping,
                       where: str = "optim") -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to lr, then constant (``constant``), a cosine decay to ``min_lr_ratio * lr``
    over the remaining steps (``cosine``), or constant and then that cosine decay over the last
    ``lr_decay_steps_ratio`` of the steps (``wsd``: warmup, stable, decay; its warmup starts from
    ``min_lr_ratio * lr``).

    During warmup the factor at scheduler step s is s / warmup (so step 0 trains with lr 0 when
    warmup > 0).
    """
    style = _get(optim_cfg, "warmup_style", where)
    if style not in WARMUP_STYLES:
        raise ValueError(f"{where}.warmup_style must be one of {WARMUP_STYLES}, got {style!r}")
    total = optim_cfg.get("total_training_steps")
    if total is not None:
        total = int(total)
        if total <= 0:
            raise ValueError(f"{where}.total_training_steps must be positive, got {total}")
    warmup = num_warmup_steps(optim_cfg, total, where)
    if style == "constant":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup)
    if total is None:
        raise ValueError(f"{where}.warmup_style={style} needs {where}.total_training_steps (set by the trainer)")
    min_lr_ratio = float(_get(optim_cfg, "min_lr_ratio", where))
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"{where}.min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if style == "wsd":
        ratio = float(_get(optim_cfg, "lr_decay_steps_ratio", where))
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"{where}.lr_decay_steps_ratio must be in (0, 1], got {ratio}")
        decay = max(1, int(round(ratio * total)))
        if warmup + decay > total:
            raise ValueError(f"{where}: {warmup} warmup and {decay} decay steps (lr_decay_steps_ratio={ratio}) do not "
                             f"fit in total_training_steps={total}")
        return get_wsd_schedule(optimizer, num_warmup_steps=warmup, num_decay_steps=decay, num_training_steps=total,
                                min_lr_ratio=min_lr_ratio)
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=total,
                                                       min_lr_rate=min_lr_ratio)
