"""Running a model over micro-batches, shared by the PPO actor and the critic.

Shapes: B = rows, R = response length, b = rows of one micro-batch.

``DataParallelModel`` holds what both roles hold (module, optimizer, schedule, device) and runs
the two passes:

``forward_micro_batches`` (no gradient): split the rows into micro-batches (fixed size, or
token-budgeted with ``use_dynamic_bsz``), run a forward on each in eval mode, and join each output
back into the original row order.

``ppo_update``: for ``ppo_epochs`` passes over the rows, for each mini-batch
(``ppo_mini_batch_size`` global rows / data-parallel size), for each micro-batch, add up the
gradients of a caller-given loss (normalised by the *mini-batch*'s token or row count, so the
micro-batch gradients sum to the mini-batch gradient); clip the gradient norm and step the
optimizer, or skip the step (and count it) when the norm is not finite. The lr scheduler steps
once per call. Metrics are averaged over optimizer steps.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Callable, Mapping, Optional

import torch

from verl.protocol import DataProto
from verl.utils.fsdp_utils import clip_grad_norm, gradient_sync
from verl.utils.seqlen_balancing import per_rank_mini_batch_size, restore_order, split_micro_batches

logger = logging.getLogger(__name__)

# (micro-batch tensors, response_mask (b, R) as float32, aggregation kwargs) ->
# (loss to back-propagate, metrics to add up, metrics to weight by the micro-batch's token share)
MicroLoss = Callable[[dict[str, torch.Tensor], torch.Tensor, dict[str, float]],
                     tuple[torch.Tensor, Mapping[str, Any], Mapping[str, Any]]]


class DataParallelModel:
    """What the actor and the critic hold: a (possibly FSDP/DDP-wrapped) module, its optimizer and
    lr schedule, and where its micro-batches run.

    Args:
        config: the role's config block (see its yaml for the keys).
        module: the model, wrapped or not.
        optimizer, scheduler: None for a frozen model (the reference policy).
        dp_size: data-parallel world size (divides ``ppo_mini_batch_size``).
        use_remove_padding: pack the real tokens of each micro-batch into one sequence.
        device: where micro-batches are moved before the forward.
    """

    def __init__(self, config: Mapping, module: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, *, dp_size: int = 1,
                 use_remove_padding: bool = False, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.dp_size = int(dp_size)
        self.use_remove_padding = bool(use_remove_padding)
        self.device = torch.device(device)

    def forward_micro_batches(self, data: DataProto, meta: Mapping, where: str,
                              forward: Callable[[dict[str, torch.Tensor]], tuple[Optional[torch.Tensor], ...]]
                              ) -> tuple[Optional[torch.Tensor], ...]:
        """Run ``forward`` without gradient on each micro-batch of ``data``; outputs in row order.

        ``meta`` needs ``use_dynamic_bsz`` and either ``micro_batch_size`` or ``max_token_len``.
        ``forward`` gets one micro-batch's tensors on ``self.device`` and returns a tuple of (b, ...)
        tensors, or None in a slot it does not fill; each slot comes back as a (B, ...) tensor in the
        rows' original order (None where every micro-batch gave None). The module's training mode is
        restored afterwards.
        """
        use_dynamic = bool(require(meta, "use_dynamic_bsz", f"{where} meta_info"))
        micros, idx_order = split_micro_batches(
            data, None if use_dynamic else require(meta, "micro_batch_size", f"{where} meta_info"),
            use_dynamic, meta.get("max_token_len"), device=self.device)
        if not micros:
            raise ValueError(f"{where}: the batch has no rows")
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():
            outs = [forward(to_device(micro, self.device)) for micro in micros]
        self.module.train(was_training)
        return tuple(None if parts[0] is None else
                     (torch.cat(parts) if idx_order is None else restore_order(list(parts), idx_order))
                     for parts in zip(*outs))

    def ppo_update(self, batch: DataProto, where: str, micro_loss: MicroLoss) -> dict[str, float]:
        """One training step of updates on ``batch``; returns metrics averaged over optimizer steps.

        ``self.config`` is the actor's or critic's block (``ppo_epochs, shuffle, ppo_mini_batch_size,
        ppo_micro_batch_size_per_gpu, use_dynamic_bsz, ppo_max_token_len_per_gpu, grad_clip``);
        ``batch`` needs ``response_mask`` (B, R) and whatever ``micro_loss`` reads. Metric names start
        with ``where`` (``actor`` / ``critic``), which also names the config block in errors.
        """
        cfg = self.config
        use_dynamic = bool(cfg.use_dynamic_bsz)
        micro_size = None if use_dynamic else int(cfg.ppo_micro_batch_size_per_gpu)
        mini_size = per_rank_mini_batch_size(len(batch), int(cfg.ppo_mini_batch_size), self.dp_size, micro_size,
                                             where)
        lr = float(self.optimizer.param_groups[0]["lr"])
        step_metrics: list[dict[str, float]] = []
        skipped = 0
        self.module.train()
        for _ in range(int(cfg.ppo_epochs)):
            epoch_batch = batch[torch.randperm(len(batch))] if cfg.shuffle else batch
            for mini in epoch_batch.split(mini_size):
                metrics, finite = self._optimizer_step(mini, micro_size, where, micro_loss)
                skipped += int(not finite)
                step_metrics.append(metrics)
        if self.scheduler is not None:
            self.scheduler.step()
        out = {k: sum(m[k] for m in step_metrics) / len(step_metrics) for k in step_metrics[0]}
        out[f"{where}/lr"] = lr
        out[f"{where}/skipped_steps"] = float(skipped)
        return out

    def _optimizer_step(self, mini: DataProto, micro_size: Optional[int], where: str, micro_loss: MicroLoss
                        ) -> tuple[dict[str, float], bool]:
        """Accumulate the gradients of one mini-batch's micro-batches and step the optimizer, or skip
        the step when the gradient norm is not finite; returns the metrics and whether it stepped."""
        cfg, module, optimizer, device = self.config, self.module, self.optimizer, self.device
        mask_all = mini.batch["response_mask"]
        n_tokens = float(mask_all.sum())
        agg_kwargs = {"batch_num_tokens": n_tokens, "global_batch_size": float((mask_all.sum(-1) > 0).sum())}
        micros, _ = split_micro_batches(mini, micro_size, micro_size is None, cfg.ppo_max_token_len_per_gpu,
                                        device=device)
        metrics: dict[str, float] = defaultdict(float)
        optimizer.zero_grad(set_to_none=True)
        for j, micro_data in enumerate(micros):
            micro = to_device(micro_data, device)
            mask = micro["response_mask"].to(torch.float32)
            with gradient_sync(module, sync=j == len(micros) - 1):
                loss, sums, token_weighted = micro_loss(micro, mask, agg_kwargs)
                loss.backward()
            share = float(mask.sum()) / n_tokens if n_tokens > 0 else 0.0
            for key, value in sums.items():
                metrics[key] += float(value)
            for key, value in token_weighted.items():
                metrics[key] += share * float(value)
        grad_norm = clip_grad_norm(module, float(cfg.grad_clip), device)
        finite = bool(torch.isfinite(torch.tensor(grad_norm)).item())
        if finite:
            optimizer.step()
        else:
            logger.warning("%s: gradient norm is %s; skipping this optimizer step", where, grad_norm)
        optimizer.zero_grad(set_to_none=True)
        metrics[f"{where}/grad_norm"] = grad_norm
        return dict(metrics), finite


def require(mapping: Mapping, key: str, where: str) -> Any:
    """``mapping[key]``, or a KeyError naming ``where`` and the missing key."""
    if key not in mapping:
        raise KeyError(f"{where}: missing '{key}'")
    return mapping[key]


def check_keys(data: DataProto, keys: tuple[str, ...], where: str) -> None:
    """Raise a KeyError naming ``where`` when ``data.batch`` lacks any of ``keys``."""
    missing = [k for k in keys if k not in data.batch]
    if missing:
        raise KeyError(f"{where}: the batch lacks tensors {missing} (has {sorted(data.batch)})")


def to_device(data: DataProto, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors of ``data.batch`` moved to ``device``."""
    return {k: v.to(device) for k, v in data.batch.items()}
