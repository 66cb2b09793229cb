"""The data-parallel PPO actor: log-probs and entropy of responses, and the policy update.

Shapes: B = rows, P = prompt length, R = response length, T = P + R, V = vocabulary.
The logits at positions P-1 .. T-2 predict the response tokens at P .. T-1.

Update (``update_policy``), for ``ppo_epochs`` passes over the step's rows:
  for each mini-batch (``ppo_mini_batch_size`` global trajectories / data-parallel size):
    for each micro-batch (fixed size, or token-budgeted with ``use_dynamic_bsz``):
      loss = policy_loss - entropy_coeff * entropy + kl_loss_coef * kl_loss (if use_kl_loss)
      every term aggregated with ``loss_agg_mode`` under ``response_mask``, normalised by the
      *mini-batch*'s token count (token-mean) or non-empty row count (seq-mean modes), so the
      micro-batch gradients add up exactly to the mini-batch gradient whatever the split;
      backward (gradients accumulate)
    clip the gradient norm; step the optimizer, or skip the step (and count it) when the norm
    is not finite.
  The lr scheduler steps once per ``update_policy`` call, i.e. once per training step.
Across data-parallel ranks the gradients are averaged (each rank normalises by its own
mini-batch). The epoch / mini-batch / micro-batch loop is shared with the critic
(``verl/workers/micro_batches.py``); this file holds the policy's forward and loss.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Optional

import torch

from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import agg_loss, compute_kl_loss, get_policy_loss_fn
from verl.utils.chunked_logprob import log_probs_and_entropy
from verl.utils.fsdp_utils import unwrap_model
from verl.utils.model import pad_input, unpad_input
from verl.workers.micro_batches import DataParallelModel, check_keys

LOG_PROB_KEYS = ("input_ids", "attention_mask", "position_ids", "responses")
UPDATE_KEYS = LOG_PROB_KEYS + ("old_log_probs", "advantages", "response_mask")


def _check_temperature(temperature: Optional[float]) -> Optional[float]:
    if temperature is None:
        return None
    temperature = float(temperature)
    if temperature <= 0:
        raise ValueError(f"meta_info['temperature'] must be > 0 to scale logits, got {temperature}")
    return temperature


class DataParallelPPOActor(DataParallelModel):
    """PPO actor over a (possibly FSDP/DDP-wrapped) causal LM.

    Args:
        config: the ``actor_rollout_ref.actor`` block (see its yaml for the keys).
        module: the causal LM, wrapped or not; its ``.logits`` are (B, T, V).
        optimizer, scheduler: None for a frozen policy (the reference model).
        options: ``dp_size``, ``use_remove_padding``, ``device`` (see ``DataParallelModel``).
    """

    def __init__(self, config: Mapping, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, **options: Any) -> None:
        super().__init__(config, module, optimizer, scheduler, **options)
        # Hugging Face causal LMs take ``logits_to_keep`` (the LM head on the last positions only)
        forward = getattr(unwrap_model(module), "forward", None)
        self._logits_to_keep = forward is not None and "logits_to_keep" in inspect.signature(forward).parameters

    # ------------------------------------------------------------------ forward
    def _forward_micro_batch(self, micro: dict[str, torch.Tensor], temperature: Optional[float],
                             calculate_entropy: bool, entropy_grad: bool = False
                             ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Log-probs (b, R) of ``responses`` and optionally their entropy (b, R)."""
        input_ids, attention_mask = micro["input_ids"], micro["attention_mask"]
        position_ids, responses = micro["position_ids"], micro["responses"]
        b, t = input_ids.shape
        r = responses.shape[-1]
        if self.use_remove_padding:
            packed_ids, packed_pos, indices = unpad_input(input_ids, attention_mask, position_ids)
            logits = self.module(input_ids=packed_ids, position_ids=packed_pos, attention_mask=None,
                                 use_cache=False).logits[0]  # (N, V)
            # token i of the packed row predicts token i + 1; across row borders the label is
            # meaningless, but those positions are never response-predicting ones.
            labels = torch.roll(packed_ids[0], shifts=-1)
        else:
            # only the R positions that predict response tokens need the LM head (b x R x V, not b x T x V)
            keep = {"logits_to_keep": r + 1} if self._logits_to_keep else {}
            logits = self.module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False, **keep).logits[:, -(r + 1):-1]  # (b, R, V)
            labels = responses
        if temperature is not None:
            logits.div_(temperature)  # in place: no second (tokens x V) tensor
        # chunked over tokens: O(chunk x V) extra memory in forward and backward, float32 outputs
        log_probs, entropy = log_probs_and_entropy(logits, labels, calculate_entropy)
        if entropy is not None and not entropy_grad:
            entropy = entropy.detach()
        if self.use_remove_padding:
            log_probs = pad_input(log_probs, indices, b, t)[:, t - r - 1: t - 1]
            if entropy is not None:
                entropy = pad_input(entropy, indices, b, t)[:, t - r - 1: t - 1]
        return log_probs, entropy

    # ------------------------------------------------------------------ log-probs
    def compute_log_prob(self, data: DataProto, calculate_entropy: bool = False
                         ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Log-probs (B, R) of ``responses`` under the module, and entropy (B, R) or None.

        Needs tensors ``input_ids, attention_mask, position_ids`` (B, T) and ``responses`` (B, R)
        and meta_info ``micro_batch_size`` and ``use_dynamic_bsz`` (+ ``max_token_len`` when
        dynamic); logits are divided by meta_info ``temperature`` when given.
        """
        where = "compute_log_prob"
        check_keys(data, LOG_PROB_KEYS, where)
        meta = data.meta_info
        temperature = _check_temperature(meta.get("temperature"))
        return self.forward_micro_batches(
            data.select(batch_keys=list(LOG_PROB_KEYS)), meta, where,
            lambda micro: self._forward_micro_batch(micro, temperature, calculate_entropy))

    # ------------------------------------------------------------------ update
    def update_policy(self, data: DataProto) -> dict[str, float]:
        """One training step of PPO updates on ``data``; returns mean metrics over optimizer steps.

        Needs ``input_ids, attention_mask, position_ids, responses, old_log_probs, advantages,
        response_mask`` (+ ``ref_log_prob`` with ``use_kl_loss``). meta_info ``temperature``
        scales the logits when given (use the rollout temperature).
        """
        if self.optimizer is None:
            raise RuntimeError("update_policy: this actor has no optimizer (a frozen reference policy)")
        cfg = self.config
        use_kl_loss = bool(cfg.use_kl_loss)
        keys = UPDATE_KEYS + (("ref_log_prob",) if use_kl_loss else ())
        check_keys(data, keys, "update_policy")
        temperature = _check_temperature(data.meta_info.get("temperature"))
        micro_loss = functools.partial(self._micro_loss, temperature=temperature,
                                       policy_loss_fn=get_policy_loss_fn(cfg.policy_loss), use_kl_loss=use_kl_loss)
        return self.ppo_update(data.select(batch_keys=list(keys)), "actor", micro_loss)

    def _micro_loss(self, micro: dict[str, torch.Tensor], mask: torch.Tensor, agg_kwargs: dict[str, float], *,
                    temperature: Optional[float], policy_loss_fn: Callable, use_kl_loss: bool
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One micro-batch's loss (policy - entropy bonus + KL), its summed and token-weighted metrics.

        ``mask`` is the micro-batch's ``response_mask`` (b, R) in float32; ``agg_kwargs`` carry
        the mini-batch's token and row counts that every term is normalised by.
        """
        cfg = self.config
        mode = cfg.loss_agg_mode
        entropy_coeff = float(cfg.entropy_coeff)
        clip_low = cfg.clip_ratio if cfg.clip_ratio_low is None else cfg.clip_ratio_low
        clip_high = cfg.clip_ratio if cfg.clip_ratio_high is None else cfg.clip_ratio_high
        log_prob, entropy = self._forward_micro_batch(micro, temperature, calculate_entropy=True,
                                                      entropy_grad=entropy_coeff != 0.0)
        pg_loss, pg_metrics = policy_loss_fn(
            old_log_prob=micro["old_log_probs"], log_prob=log_prob, advantages=micro["advantages"],
            response_mask=mask, clip_ratio_low=clip_low, clip_ratio_high=clip_high,
            clip_ratio_c=cfg.clip_ratio_c, loss_agg_mode=mode, **agg_kwargs)
        entropy_loss = agg_loss(entropy, mask, mode, **agg_kwargs)
        loss = pg_loss - entropy_coeff * entropy_loss
        sums = {}
        if use_kl_loss:
            kl_loss = compute_kl_loss(log_prob, micro["ref_log_prob"], mask, cfg.kl_loss_type, mode, **agg_kwargs)
            loss = loss + float(cfg.kl_loss_coef) * kl_loss
            sums["actor/kl_loss"] = kl_loss.detach()
        sums["actor/pg_loss"] = pg_loss.detach()
        sums["actor/entropy_loss"] = entropy_loss.detach()
        token_weighted = {"actor/pg_clipfrac": pg_metrics["clipfrac"], "actor/ppo_kl": pg_metrics["ppo_kl"],
                          "actor/pg_clipfrac_lower": pg_metrics["clipfrac_lower"]}
        return loss, sums, token_weighted
