"""Supervised fine-tuning on prompt/response pairs (loss on the response only).

    python -m verl.trainer.sft_trainer data.train_files=sft.parquet model.path=MODEL trainer.device=cpu

Writes resumable checkpoints (model, optimizer, scheduler, data position, RNG) under
``trainer.default_local_dir`` and a Hugging Face folder ``<default_local_dir>/huggingface`` at
the end, which transformers, vLLM and sglang load as is. The simulation-LLM tuning pipeline
(zerosearch/simulation_tuning) uses it.
"""

from __future__ import annotations

import contextlib
import os
import random

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from verl.utils.checkpoint import CheckpointManager, load_trainer_state
from verl.utils.tracking import Tracking


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _dtype(name: str, key: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"{key} must be one of {sorted(dtypes)}, got {name!r}")
    return dtypes[name]


def resolve_autocast_dtype(name: str | None, device: torch.device, key: str = "model.autocast_dtype") -> torch.dtype | None:
    """The autocast compute dtype for ``name``: None (off), a dtype name, or ``auto``.

    ``auto`` picks bfloat16 where the hardware computes it natively (a CUDA device that supports it;
    a CPU with AMX or AVX512-BF16 instructions) and no autocast elsewhere: on a CPU without them
    (AVX2 only) bfloat16 matmuls are emulated: a training step of the CPU miniature's 1M-parameter
    policy measured 16x *slower* than in float32 on such a CPU."""
    if name is None:
        return None
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return _dtype(name, key)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags include ``amx_bf16`` or ``avx512_bf16`` (False when unknown)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def response_loss(hidden: torch.Tensor, lm_head: torch.nn.Module, input_ids: torch.Tensor,
                  loss_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``sft_loss`` from the last hidden states, projecting only the positions that predict a
    response token onto the vocabulary (prompt positions never reach the output head).

    Args:
        hidden: (B, T, H) last hidden states; lm_head: the output projection H -> V;
        input_ids: (B, T); loss_mask: (B, T), 1 on response tokens.
    Returns:
        (sum of token losses, number of response tokens that were predicted).
    """
    keep = loss_mask[:, 1:].bool()
    logits = lm_head(hidden[:, :-1][keep])
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float32 at least
    targets = input_ids[:, 1:][keep]
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum"), int(keep.sum().item())


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> int:
    """Length P of the token prefix that every row of the batch shares and that predicts no
    response token (so hidden states at positions < P are needed only as keys and values).

    Args:
        input_ids, attention_mask, loss_mask: (B, T), right-padded rows.
    Returns:
        P in [0, T): ``input_ids[:, :P]`` is the same real tokens in every row, and no row has a
        response token at a position <= P (position P - 1 predicts token P).
    """
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)
    prefix = int(same.long().cumprod(dim=0).sum())
    has_loss = loss_mask.bool().any(dim=0)
    first_loss = int(has_loss.long().argmax()) if bool(has_loss.any()) else input_ids.shape[1]
    return max(0, min(prefix, first_loss - 1, input_ids.shape[1] - 1))


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over response tokens.

    Args:
        logits: (B, T, V); input_ids: (B, T); loss_mask: (B, T), 1 on response tokens.
    Returns:
        (sum of token losses, number of response tokens that were predicted).
    """
    shift_logits = logits[:, :-1]
    shift_logits = shift_logits.to(torch.promote_types(shift_logits.dtype, torch.float32))  # float32 at least
    targets = input_ids[:, 1:]
    mask = loss_mask[:, 1:].to(shift_logits.dtype)
    nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), targets.reshape(-1),
                                            reduction="none").view_as(mask)
    return (nll * mask).sum(), int(mask.sum().item())


class SFTTrainer:
    """Single-process (CPU or one GPU) SFT with gradient accumulation and resumable checkpoints."""

    def __init__(self, config: DictConfig) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from verl.utils.dataset.sampler import StatefulBatchIterator
        from verl.utils.dataset.sft_dataset import SFTDataset
        from verl.utils.optim import build_lr_scheduler, build_optimizer

        self.config = config
        seed = int(config.trainer.seed)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        model_path = config.model.path
        if not os.path.exists(os.path.join(str(model_path), "config.json")):
            raise FileNotFoundError(f"model.path={model_path!r} is not a Hugging Face model folder (no config.json)")
        if config.trainer.device not in ("cpu", "cuda"):
            raise ValueError(f"trainer.device must be cpu or cuda, got {config.trainer.device!r}")
        if config.trainer.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("trainer.device=cuda but no CUDA device is visible; use trainer.device=cpu")
        self.device = torch.device(config.trainer.device)
        self.tokenizer = AutoTokenizer.from_pretrained(config.model.tokenizer_path or model_path)
        dtype = _dtype(config.model.dtype, "model.dtype")
        self.autocast_dtype = resolve_autocast_dtype(config.model.autocast_dtype, self.device)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                          attn_implementation=config.model.attn_implementation,
                                                          trust_remote_code=config.model.trust_remote_code).to(self.device)
        if config.model.enable_gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        # Output head on response positions only (most SFT tokens are prompt): needs a decoder and a
        # plain linear head (no logit soft-capping or scaling after it).
        self.head_on_response_only = (hasattr(self.model, "get_decoder") and hasattr(self.model, "lm_head")
                                      and getattr(self.model.config, "final_logit_softcapping", None) is None
                                      and getattr(self.model.config, "logits_scaling", None) is None)
        # A prompt prefix shared by every row of a micro-batch (a system prompt, an instruction) is
        # run once and its keys/values repeated for the rows; it needs the decoder's cache, which
        # gradient checkpointing turns off.
        self.min_shared_prefix = int(config.model.min_shared_prefix)
        self.share_prefix = (self.head_on_response_only and self.min_shared_prefix > 0
                             and not config.model.enable_gradient_checkpointing)
        print(f"[sft] autocast: {self.autocast_dtype or 'off'} (model.autocast_dtype={config.model.autocast_dtype}); "
              f"output head on response tokens only: {self.head_on_response_only}; "
              f"shared prompt prefix computed once: {self.share_prefix}", flush=True)
        self.train_ds = SFTDataset(config.data.train_files, self.tokenizer, config.data)
        self.val_ds = SFTDataset(config.data.val_files, self.tokenizer, config.data) if config.data.val_files else None
        self.bs = int(config.data.train_batch_size)
        self.micro = int(config.data.micro_batch_size)
        self.sort_by_length = bool(config.data.sort_by_length)
        self._lengths: dict[int, int] = {}
        if self.bs % self.micro:
            raise ValueError(f"data.train_batch_size={self.bs} must be a multiple of data.micro_batch_size={self.micro}")
        if len(self.train_ds) < self.bs:
            raise ValueError(f"data.train_batch_size={self.bs} exceeds the training set ({len(self.train_ds)} rows)")
        per_epoch = len(self.train_ds) // self.bs
        self.total_steps = int(config.trainer.total_training_steps or per_epoch * int(config.trainer.total_epochs))
        self.iterator = StatefulBatchIterator(len(self.train_ds), self.bs, shuffle=bool(config.data.shuffle), seed=seed,
                                              drop_last=True)
        if self.total_steps < 1:
            raise ValueError(f"trainer.total_training_steps must be >= 1, got {self.total_steps}")
        optim_cfg = OmegaConf.to_container(config.optim, resolve=True)
        optim_cfg["total_training_steps"] = self.total_steps
        self.optimizer = build_optimizer(self.model.parameters(), optim_cfg)
        self.scheduler = build_lr_scheduler(self.optimizer, optim_cfg)
        self.ckpt = CheckpointManager(config.trainer.default_local_dir, int(config.trainer.max_ckpt_to_keep))
        self.step = 0

    def _row_length(self, index: int) -> int:
        """Real tokens of training row ``index`` (cached)."""
        if index not in self._lengths:
            self._lengths[index] = int(self.train_ds[index]["attention_mask"].sum())
        return self._lengths[index]

    def _batch(self, indices: list[int], ds) -> dict[str, torch.Tensor]:
        """Rows ``indices`` of ``ds`` stacked to (b, L') tensors, L' = the longest row of the batch
        (rows are right-padded, so the cut columns hold padding only)."""
        rows = [ds[i] for i in indices]
        batch = {k: torch.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask", "position_ids", "loss_mask")}
        width = max(1, int(batch["attention_mask"].sum(dim=1).max()))
        return {k: v[:, :width].to(self.device) for k, v in batch.items()}

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        autocast = (torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype is not None else contextlib.nullcontext())
        inputs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      position_ids=batch["position_ids"], use_cache=False)
        prefix = (shared_prefix_length(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
                  if self.share_prefix and len(batch["input_ids"]) > 1 else 0)
        with autocast:
            if prefix >= self.min_shared_prefix:
                return self._forward_shared_prefix(batch, prefix)
            if self.head_on_response_only:
                hidden = self.model.get_decoder()(**inputs).last_hidden_state
                return response_loss(hidden, self.model.lm_head, batch["input_ids"], batch["loss_mask"])
            out = self.model(**inputs)
        return sft_loss(out.logits, batch["input_ids"], batch["loss_mask"])

    def _forward_shared_prefix(self, batch: dict[str, torch.Tensor], prefix: int) -> tuple[torch.Tensor, int]:
        """The loss of ``_forward`` with the first ``prefix`` tokens (the same in every row) run
        once: their keys and values are repeated along the batch (a differentiable copy, so the
        gradient through them is the sum over rows, as in the plain forward)."""
        decoder = self.model.get_decoder()
        ids, positions = batch["input_ids"], batch["position_ids"]
        cache = decoder(input_ids=ids[:1, :prefix], position_ids=positions[:1, :prefix], use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        hidden = decoder(input_ids=ids[:, prefix:], attention_mask=batch["attention_mask"],
                         position_ids=positions[:, prefix:], past_key_values=cache, use_cache=True).last_hidden_state
        return response_loss(hidden, self.model.lm_head, ids[:, prefix:], batch["loss_mask"][:, prefix:])

    def train_step(self, indices: list[int]) -> dict[str, float]:
        """One optimizer step over ``indices`` (mean token loss over the whole step's response tokens)."""
        self.model.train()
        if self.sort_by_length:  # the same step, cut into micro-batches of similar lengths: less padding
            indices = sorted(indices, key=self._row_length)
        batches = [self._batch(indices[i:i + self.micro], self.train_ds) for i in range(0, len(indices), self.micro)]
        n_tokens = sum(int(b["loss_mask"][:, 1:].sum()) for b in batches)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for b in batches:
            loss_sum, _ = self._forward(b)
            (loss_sum / max(n_tokens, 1)).backward()
            total += loss_sum.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.config.optim.grad_clip))
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        self.scheduler.step()
        return {"train/loss": total / max(n_tokens, 1), "train/grad_norm": float(grad_norm),
                "train/lr": self.scheduler.get_last_lr()[0], "train/tokens": float(n_tokens)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        total, tokens = 0.0, 0
        for start in range(0, len(self.val_ds), self.micro):
            loss_sum, n = self._forward(self._batch(list(range(start, min(start + self.micro, len(self.val_ds)))), self.val_ds))
            total += loss_sum.item()
            tokens += n
        return {"val/loss": total / max(tokens, 1)}

    def save(self) -> None:
        def write(folder: str) -> None:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "rng": _rng_state()}, os.path.join(folder, "state.pt"))

        self.ckpt.save(self.step, {"global_step": self.step, "iterator": self.iterator.state_dict()}, write)

    def maybe_resume(self) -> None:
        mode = self.config.trainer.resume_mode
        path = None
        if mode == "auto":
            path = self.ckpt.latest()
        elif mode == "path":
            path = self.config.trainer.resume_from_path
        elif mode != "disable":
            raise ValueError(f"trainer.resume_mode={mode!r}; valid: auto, disable, path")
        if not path:
            return
        meta = load_trainer_state(path)
        state = torch.load(os.path.join(path, "state.pt"), map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        self.iterator.load_state_dict(meta["iterator"])
        self.step = int(meta["global_step"])
        print(f"[sft] resumed from {path} at step {self.step}", flush=True)

    def export_hf(self, folder: str) -> str:
        os.makedirs(folder, exist_ok=True)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)
        return folder

    def fit(self) -> dict[str, float]:
        cfg = self.config.trainer
        tracker = Tracking(cfg.project_name, cfg.experiment_name, list(cfg.logger),
                           config=OmegaConf.to_container(self.config, resolve=True), log_dir=cfg.log_dir)
        self.maybe_resume()
        metrics: dict[str, float] = {}
        try:
            for _ in tqdm(range(self.step, self.total_steps), desc="sft steps", initial=self.step, total=self.total_steps):
                self.step += 1
                metrics = self.train_step(next(self.iterator))
                last = self.step == self.total_steps
                if self.val_ds is not None and ((cfg.test_freq > 0 and self.step % cfg.test_freq == 0) or last):
                    metrics.update(self.validate())
                if (cfg.save_freq > 0 and self.step % cfg.save_freq == 0) or last:
                    self.save()
                tracker.log(metrics, step=self.step)
        finally:
            tracker.finish()
        out = self.export_hf(os.path.join(cfg.default_local_dir, "huggingface"))
        print(f"[sft] done: {self.step} steps; Hugging Face folder at {out}", flush=True)
        return metrics


def run_sft(config: DictConfig) -> dict[str, float]:
    OmegaConf.resolve(config)
    return SFTTrainer(config).fit()


@hydra.main(config_path="config", config_name="sft_trainer", version_base="1.3")
def main(config: DictConfig) -> None:
    run_sft(config)


if __name__ == "__main__":
    main()
