"""The data-parallel critic: values of response positions and the value update.

Shapes: B = rows, P = prompt length, R = response length, T = P + R.
The value model outputs one scalar per position, (B, T). The value of the state in which
response token j (at position P + j) is chosen is read at position P + j - 1, so values are the
outputs at positions P-1 .. T-2, like the actor's log-probs.

``compute_values`` zeroes padding (``attention_mask`` of the response part) but keeps values on
observation tokens, which take part in the GAE recursion; ``update_critic`` trains only where
``response_mask`` is 1. Micro-batching, loss normalisation by the mini-batch, gradient clipping,
non-finite skip and the once-per-call scheduler step follow the actor (see dp_actor.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Mapping, Optional

import torch

from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import compute_value_loss
from verl.utils.fsdp_utils import clip_grad_norm, gradient_sync
from verl.utils.model import pad_input, unpad_input
from verl.utils.seqlen_balancing import per_rank_mini_batch_size, restore_order, split_micro_batches
from verl.utils.torch_functional import masked_mean

logger = logging.getLogger(__name__)

VALUE_KEYS = ("input_ids", "attention_mask", "position_ids", "responses")
UPDATE_KEYS = VALUE_KEYS + ("values", "returns", "response_mask")


def _check_keys(data: DataProto, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in data.batch]
    if missing:
        raise KeyError(f"{where}: the batch lacks tensors {missing} (has {sorted(data.batch)})")


class DataParallelPPOCritic:
    """Critic over a (possibly wrapped) value model whose ``.logits`` are (B, T, 1).

    Args:
        config: the ``critic`` block (see its yaml for the keys).
        module, optimizer, scheduler: the value model and its optimizer / lr schedule.
        dp_size: data-parallel world size.
        use_remove_padding: pack the real tokens of each micro-batch into one sequence.
        device: where micro-batches are moved before the forward.
    """

    def __init__(self, config: Mapping, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, *, dp_size: int = 1,
                 use_remove_padding: bool = False, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.dp_size = int(dp_size)
        self.use_remove_padding = bool(use_remove_padding)
        self.device = torch.device(device)

    def _forward_micro_batch(self, micro: dict[str, torch.Tensor]) -> torch.Tensor:
        """Values (b, R) in float32 at positions P-1 .. T-2."""
        input_ids, attention_mask, position_ids = micro["input_ids"], micro["attention_mask"], micro["position_ids"]
        b, t = input_ids.shape
        r = micro["responses"].shape[-1]
        if self.use_remove_padding:
            packed_ids, packed_pos, indices = unpad_input(input_ids, attention_mask, position_ids)
            packed = self.module(input_ids=packed_ids, position_ids=packed_pos, attention_mask=None,
                                 use_cache=False).logits[0, :, 0]  # (N,)
            values = pad_input(packed, indices, b, t)
        else:
            values = self.module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).logits[..., 0]  # (b, T)
        return values[:, t - r - 1: t - 1].float()

    def _to_device(self, data: DataProto) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in data.batch.items()}

    def compute_values(self, data: DataProto) -> torch.Tensor:
        """Values (B, R), 0 on response padding. meta_info: ``micro_batch_size`` / ``use_dynamic_bsz`` / ``max_token_len``."""
        _check_keys(data, VALUE_KEYS, "compute_values")
        meta = data.meta_info
        if "use_dynamic_bsz" not in meta:
            raise KeyError("compute_values meta_info: missing 'use_dynamic_bsz'")
        use_dynamic = bool(meta["use_dynamic_bsz"])
        if not use_dynamic and "micro_batch_size" not in meta:
            raise KeyError("compute_values meta_info: missing 'micro_batch_size'")
        micros, idx_order = split_micro_batches(data.select(batch_keys=list(VALUE_KEYS)), meta.get("micro_batch_size"),
                                                use_dynamic, meta.get("max_token_len"), device=self.device)
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():
            outs = [self._forward_micro_batch(self._to_device(m)) for m in micros]
        self.module.train(was_training)
        values = torch.cat(outs) if idx_order is None else restore_order(outs, idx_order)
        r = data.batch["responses"].shape[-1]
        return values * data.batch["attention_mask"][:, -r:].to(values.device, values.dtype)

    def update_critic(self, data: DataProto) -> dict[str, float]:
        """One training step of value updates; returns mean metrics over optimizer steps."""
        cfg = self.config
        _check_keys(data, UPDATE_KEYS, "update_critic")
        batch = data.select(batch_keys=list(UPDATE_KEYS))
        use_dynamic = bool(cfg.use_dynamic_bsz)
        micro_size = None if use_dynamic else int(cfg.ppo_micro_batch_size_per_gpu)
        mini_size = per_rank_mini_batch_size(len(batch), int(cfg.ppo_mini_batch_size), self.dp_size, micro_size,
                                             "critic")
        lr = float(self.optimizer.param_groups[0]["lr"])
        step_metrics: list[dict[str, float]] = []
        skipped = 0
        self.module.train()
        for _ in range(int(cfg.ppo_epochs)):
            epoch_batch = batch[torch.randperm(len(batch))] if cfg.shuffle else batch
            for mini in epoch_batch.split(mini_size):
                metrics = self._optimizer_step(mini, micro_size)
                skipped += int(not torch.isfinite(torch.tensor(metrics["critic/grad_norm"])).item())
                step_metrics.append(metrics)
        if self.scheduler is not None:
            self.scheduler.step()
        out = {k: sum(m[k] for m in step_metrics) / len(step_metrics) for k in step_metrics[0]}
        out["critic/lr"] = lr
        out["critic/skipped_steps"] = float(skipped)
        return out

    def _optimizer_step(self, mini: DataProto, micro_size: Optional[int]) -> dict[str, float]:
        cfg = self.config
        mask_all = mini.batch["response_mask"]
        n_tokens = float(mask_all.sum())
        agg_kwargs = {"batch_num_tokens": n_tokens, "global_batch_size": float((mask_all.sum(-1) > 0).sum())}
        micros, _ = split_micro_batches(mini, micro_size, micro_size is None, cfg.ppo_max_token_len_per_gpu,
                                        device=self.device)
        metrics: dict[str, float] = defaultdict(float)
        self.optimizer.zero_grad(set_to_none=True)
        for j, micro_data in enumerate(micros):
            micro = self._to_device(micro_data)
            mask = micro["response_mask"].to(torch.float32)
            with gradient_sync(self.module, sync=j == len(micros) - 1):
                vpreds = self._forward_micro_batch(micro)
                vf_loss, vf_clipfrac = compute_value_loss(vpreds, micro["returns"], micro["values"], mask,
                                                          float(cfg.cliprange_value), cfg.loss_agg_mode, **agg_kwargs)
                vf_loss.backward()
            share = float(mask.sum()) / n_tokens if n_tokens > 0 else 0.0
            metrics["critic/vf_loss"] += float(vf_loss.detach())
            metrics["critic/vf_clipfrac"] += share * float(vf_clipfrac)
            metrics["critic/vpred_mean"] += share * float(masked_mean(vpreds.detach(), mask))
        grad_norm = clip_grad_norm(self.module, float(cfg.grad_clip), self.device)
        if torch.isfinite(torch.tensor(grad_norm)).item():
            self.optimizer.step()
        else:
            logger.warning("critic: gradient norm is %s; skipping this optimizer step", grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        metrics["critic/grad_norm"] = grad_norm
        return dict(metrics)
