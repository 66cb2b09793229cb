"""Rollout engine on Hugging Face ``model.generate``.

Works wherever the policy module lives (CPU or GPU, plain or DDP): it generates with the module
it is given. With FSDP and more than one rank, give it a plain (unsharded) copy that
``sync_weights`` refreshes: ranks that generate different numbers of tokens would otherwise
deadlock in the sharded forward's all-gathers (the FSDP worker does exactly that).

Log-probs. Every returned log-prob is ``log_softmax(processed_logits)[sampled_id]`` where
``processed_logits`` is exactly the distribution the token was drawn from: raw logits (float32)
divided by the temperature, then the top-k and top-p cuts (HF's own ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, in that order, as vLLM does). They are recorded during
generation by a logits processor (no second forward pass and no ``output_scores`` tensor of size
steps x B x V). With ``top_k == -1`` and ``top_p == 1`` this is ``log_softmax(logits / T)``, i.e.
what the actor's ``compute_log_prob`` returns at the same temperature; with a top-k/top-p cut the
values are those of the truncated (renormalised) sampling distribution, matching vLLM's
``processed_logprobs``. Greedy decoding (``do_sample=False``) reports ``log_softmax(logits)``
(temperature 1).

The model's own ``generation_config`` (for example an instruct checkpoint's repetition penalty or
top-k) is deliberately *not* applied: sampling is fully described by ``SamplingConfig`` so that the
sampled tokens come from the policy whose log-probs the trainer uses.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Mapping

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.generation.stopping_criteria import StopStringCriteria

from verl.utils.torch_functional import pad_2d_list_to_length
from verl.workers.rollout.base import BaseRollout, GenerationOutput, SamplingConfig, check_generate_args
from verl.workers.rollout.weight_sync import SyncStats, full_tensor

ModuleOrGetter = torch.nn.Module | Callable[[], torch.nn.Module]


class _SamplingLogProbs(LogitsProcessor):
    """Applies temperature / top-k / top-p and remembers ``log_softmax`` of the result.

    It is the only logits processor ``generate`` runs (HF's own warpers are switched off), so the
    distribution it returns is exactly the one HF samples from (or takes the argmax of).
    """

    def __init__(self, warpers: list[LogitsProcessor]) -> None:
        self.warpers = warpers
        self.last_log_probs: torch.Tensor | None = None  # (B, V) float32, of the latest step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """scores: (B, V) float32 logits of the next token -> processed scores (B, V)."""
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        self.last_log_probs = torch.log_softmax(scores.float(), dim=-1)
        return scores


class _StepRecorder(StoppingCriteria):
    """Called by ``generate`` after each new token: records its log-prob and stop-string hits.

    Returns True for rows whose newest token completed one of the stop strings (HF's
    ``StopStringCriteria``), so ``generate`` finishes them.
    """

    def __init__(self, sampler: _SamplingLogProbs, stop_criteria: StopStringCriteria | None, prompt_width: int) -> None:
        self.sampler = sampler
        self.stop_criteria = stop_criteria
        self.prompt_width = prompt_width
        self.step_log_probs: list[torch.Tensor] = []  # one (B,) tensor per generated position
        self.first_stop_step: torch.Tensor | None = None  # (B,) long, -1 = no stop string yet

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """input_ids: (B, prompt_width + steps) -> (B,) bool, True where a stop string just completed."""
        if self.sampler.last_log_probs is None:
            raise RuntimeError("HFRollout: the log-prob processor did not run before the stopping check")
        new_tokens = input_ids[:, -1:]
        self.step_log_probs.append(self.sampler.last_log_probs.gather(-1, new_tokens).squeeze(-1))
        batch = input_ids.shape[0]
        if self.first_stop_step is None:
            self.first_stop_step = torch.full((batch,), -1, dtype=torch.long, device=input_ids.device)
        if self.stop_criteria is None:
            return torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
        hit = self.stop_criteria(input_ids, scores)
        step = input_ids.shape[1] - self.prompt_width - 1
        fresh = hit & (self.first_stop_step < 0)
        self.first_stop_step[fresh] = step
        return hit


class HFRollout(BaseRollout):
    """Generate with ``model.generate`` from the (possibly wrapped) policy module.

    Args:
        module: the HF causal LM, or a zero-argument callable returning it (for wrappers such as
            FSDP/DDP where the bare module must be fetched, or gathered, at call time).
        tokenizer: the policy tokenizer; needs ``pad_token_id`` and ``eos_token_id``.
        config: the rollout config (``actor_rollout_ref.rollout``). Reads the optional key
            ``generate_micro_batch_size`` (prompts per ``generate`` call; null/absent = all at once).
    """

    def __init__(self, module: ModuleOrGetter, tokenizer: Any, config: Mapping[str, Any] | Any) -> None:
        if not isinstance(module, torch.nn.Module) and not callable(module):
            raise TypeError(
                f"HFRollout: module must be a torch.nn.Module or a callable returning one, got {type(module)!r}"
            )
        self._module = module
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            raise ValueError("HFRollout: the tokenizer has no pad_token_id; set tokenizer.pad_token")
        if tokenizer.eos_token_id is None:
            raise ValueError("HFRollout: the tokenizer has no eos_token_id")
        micro = config.get("generate_micro_batch_size", None) if config is not None else None
        if micro is not None and (not isinstance(micro, int) or micro < 1):
            raise ValueError(f"HFRollout: generate_micro_batch_size must be a positive int or null, got {micro!r}")
        self.micro_batch_size: int | None = micro

    def _get_module(self) -> torch.nn.Module:
        module = self._module if isinstance(self._module, torch.nn.Module) else self._module()
        if not hasattr(module, "generate"):
            raise TypeError(
                f"HFRollout: {type(module).__name__} has no .generate(); pass the bare HF model or a "
                "callable that returns it (not the FSDP/DDP wrapper)"
            )
        return module

    def eos_token_ids(self, module: torch.nn.Module) -> list[int]:
        """The tokenizer's EOS plus any EOS ids in the model's generation config."""
        ids = {int(self.tokenizer.eos_token_id)}
        gen_eos = getattr(getattr(module, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
        return sorted(ids)

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        """Generate one continuation per prompt (see the module docstring for the log-probs)."""
        check_generate_args(prompts, sampling, "HFRollout.generate")
        if not prompts:
            return []
        module = self._get_module()
        device = next(module.parameters()).device
        step = self.micro_batch_size or len(prompts)
        outputs: list[GenerationOutput] = []
        was_training = module.training
        module.eval()
        try:
            with _seeded(sampling.seed, device), torch.no_grad():
                for start in range(0, len(prompts), step):
                    outputs.extend(self._generate_chunk(module, prompts[start : start + step], sampling, device))
        finally:
            module.train(was_training)
        return outputs

    def _generate_chunk(
        self, module: torch.nn.Module, prompts: list[list[int]], sampling: SamplingConfig, device: torch.device
    ) -> list[GenerationOutput]:
        pad_id = int(self.tokenizer.pad_token_id)
        input_ids = pad_2d_list_to_length(prompts, pad_id, left_pad=True)
        attention_mask = pad_2d_list_to_length([[1] * len(p) for p in prompts], 0, left_pad=True)
        width = input_ids.shape[1]

        eos_ids = self.eos_token_ids(module)
        end_ids = sorted(set(eos_ids) | {int(t) for t in sampling.stop_token_ids})
        warpers: list[LogitsProcessor] = []
        if sampling.do_sample:
            if sampling.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
            if sampling.top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
        sampler = _SamplingLogProbs(warpers)
        stop = StopStringCriteria(self.tokenizer, list(sampling.stop)) if sampling.stop else None
        recorder = _StepRecorder(sampler, stop, width)
        # HF's own warpers off (top_k=0 overrides its default of 50): ``sampler`` does the work.
        neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if sampling.do_sample else {}
        gen_config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.do_sample,
            eos_token_id=end_ids,
            pad_token_id=pad_id,
            use_cache=True,
            **neutral,
        )
        saved_config = module.generation_config
        module.generation_config = GenerationConfig(eos_token_id=end_ids, pad_token_id=pad_id)
        try:
            sequences = module.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=gen_config,
                logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([recorder]),
            )
        finally:
            module.generation_config = saved_config

        generated = sequences[:, width:].cpu()
        steps = generated.shape[1]
        log_probs = torch.stack(recorder.step_log_probs[:steps], dim=1).cpu() if steps else torch.zeros(len(prompts), 0)
        first_stop = recorder.first_stop_step.cpu() if recorder.first_stop_step is not None else None
        eos_set, stop_id_set = set(eos_ids), {int(t) for t in sampling.stop_token_ids}
        outputs = []
        for row in range(len(prompts)):
            ids = generated[row].tolist()
            end, reason = len(ids), "length"
            for pos, tok in enumerate(ids):
                if tok in stop_id_set:
                    end, reason = pos + 1, "stop"
                    break
                if tok in eos_set:
                    end, reason = pos + 1, "eos"
                    break
            if first_stop is not None and 0 <= int(first_stop[row]) < end:
                end, reason = int(first_stop[row]) + 1, "stop"
            outputs.append(GenerationOutput(ids[:end], log_probs[row, :end].tolist(), reason))
        return outputs

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        """Copy full (or FSDP-sharded, gathered one at a time) tensors into the generation module by name.

        Tensors that already are the module's own (the rollout shares the actor module) are
        skipped, so this is free when there is nothing to copy. Returns what was copied.
        """
        state = self._get_module().state_dict()
        stats = SyncStats()
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in state:
                    raise KeyError(f"HFRollout.sync_weights: the generation module has no tensor named {name!r}")
                target = state[name]
                tensor = full_tensor(tensor)  # every rank must call this for a DTensor shard
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ValueError(
                        f"HFRollout.sync_weights: {name!r} has shape {tuple(tensor.shape)}, "
                        f"the module expects {tuple(target.shape)}"
                    )
                if tensor.data_ptr() != target.data_ptr():
                    target.copy_(tensor)
                    size = target.numel() * target.element_size()
                    stats.tensors += 1
                    stats.bytes += size
                    stats.largest_bytes = max(stats.largest_bytes, size)
                    stats.peak_held_bytes = max(stats.peak_held_bytes, tensor.numel() * tensor.element_size())
        return stats


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch's RNG for one call and restore the previous state afterwards (no-op for None)."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
