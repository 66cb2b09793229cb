"""The data-parallel critic: values of response positions and the value update.

Shapes: B = rows, P = prompt length, R = response length, T = P + R.
The value model outputs one scalar per position, (B, T). The value of the state in which
response token j (at position P + j) is chosen is read at position P + j - 1, so values are the
outputs at positions P-1 .. T-2, like the actor's log-probs.

``compute_values`` zeroes padding (``attention_mask`` of the response part) but keeps values on
observation tokens, which take part in the GAE recursion; ``update_critic`` trains only where
``response_mask`` is 1. Micro-batching, loss normalisation by the mini-batch, gradient clipping,
non-finite skip and the once-per-call scheduler step are the actor's (verl/workers/micro_batches.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import compute_value_loss
from verl.utils.model import pad_input, unpad_input
from verl.utils.torch_functional import masked_mean
from verl.workers.micro_batches import DataParallelModel, check_keys

VALUE_KEYS = ("input_ids", "attention_mask", "position_ids", "responses")
UPDATE_KEYS = VALUE_KEYS + ("values", "returns", "response_mask")


class DataParallelPPOCritic(DataParallelModel):
    """Critic over a (possibly wrapped) value model whose ``.logits`` are (B, T, 1).

    Args:
        config: the ``critic`` block (see its yaml for the keys).
        module, optimizer, scheduler: the value model and its optimizer / lr schedule.
        options: ``dp_size``, ``use_remove_padding``, ``device`` (see ``DataParallelModel``).
    """

    def __init__(self, config: Mapping, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, **options: Any) -> None:
        super().__init__(config, module, optimizer, scheduler, **options)

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

    def compute_values(self, data: DataProto) -> torch.Tensor:
        """Values (B, R), 0 on response padding. meta_info: ``micro_batch_size`` / ``use_dynamic_bsz`` / ``max_token_len``."""
        check_keys(data, VALUE_KEYS, "compute_values")
        (values,) = self.forward_micro_batches(data.select(batch_keys=list(VALUE_KEYS)), data.meta_info,
                                               "compute_values", lambda micro: (self._forward_micro_batch(micro),))
        r = data.batch["responses"].shape[-1]
        return values * data.batch["attention_mask"][:, -r:].to(values.device, values.dtype)

    def update_critic(self, data: DataProto) -> dict[str, float]:
        """One training step of value updates; returns mean metrics over optimizer steps."""
        check_keys(data, UPDATE_KEYS, "update_critic")
        return self.ppo_update(data.select(batch_keys=list(UPDATE_KEYS)), "critic", self._micro_loss)

    def _micro_loss(self, micro: dict[str, torch.Tensor], mask: torch.Tensor, agg_kwargs: dict[str, float]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One micro-batch's clipped value loss, its summed and token-weighted metrics.

        ``mask`` is the micro-batch's ``response_mask`` (b, R) in float32; ``agg_kwargs`` carry
        the mini-batch's token and row counts that the loss is normalised by.
        """
        cfg = self.config
        vpreds = self._forward_micro_batch(micro)
        vf_loss, vf_clipfrac = compute_value_loss(vpreds, micro["returns"], micro["values"], mask,
                                                  float(cfg.cliprange_value), cfg.loss_agg_mode, **agg_kwargs)
        token_weighted = {"critic/vf_clipfrac": vf_clipfrac, "critic/vpred_mean": masked_mean(vpreds.detach(), mask)}
        return vf_loss, {"critic/vf_loss": vf_loss.detach()}, token_weighted
