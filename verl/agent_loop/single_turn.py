"""The engine's default agent loop: one generation per row, no tools."""

from __future__ import annotations

from collections import Counter
from typing import Any

from verl.agent_loop.base import AgentLoopBase, GenerateFn, TimedGenerate
from verl.agent_loop.utils import assemble_rollout, prompts_from_batch
from verl.protocol import DataProto
from verl.workers.rollout.base import GenerationOutput, SamplingConfig, check_sampling

FINISH_REASONS = ("eos", "stop", "length")


class SingleTurnAgentLoop(AgentLoopBase):
    """Generate one response per row with a single ``generate`` call.

    Reads ``config.actor_rollout_ref.rollout``: ``max_new_tokens``, ``temperature``, ``top_p``,
    ``top_k`` for training; ``val_kwargs.do_sample``, ``val_kwargs.temperature``,
    ``val_kwargs.top_p`` for validation (greedy by default; ``top_k`` then comes from the rollout
    section). Rows are already repeated ``n`` times by the trainer. Sampling is not seeded per
    call: the engine's own RNG (seeded by the worker) drives it.

    Output: see ``AgentLoopBase``. The response width R is ``max_new_tokens``; the prompt width P
    is the longest prompt of the batch, not the dataset's padded ``input_ids`` width
    (``data.max_prompt_length``): every later forward pass (old and reference log-probs, the
    update) costs time in proportion to P + R, padding included.
    """

    def __init__(self, config: Any, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(config, tokenizer, **kwargs)
        if tokenizer.pad_token_id is None:
            raise ValueError("SingleTurnAgentLoop: the tokenizer has no pad_token_id")
        self.rollout_config = config.actor_rollout_ref.rollout

    def sampling_config(self, validate: bool) -> SamplingConfig:
        """The SamplingConfig of a training (``validate=False``) or validation call."""
        r = self.rollout_config
        if validate:
            v = r.val_kwargs
            sampling = SamplingConfig(
                max_new_tokens=int(r.max_new_tokens),
                do_sample=bool(v.do_sample),
                temperature=float(v.temperature),
                top_p=float(v.top_p),
                top_k=int(r.top_k),
            )
        else:
            sampling = SamplingConfig(
                max_new_tokens=int(r.max_new_tokens),
                do_sample=True,
                temperature=float(r.temperature),
                top_p=float(r.top_p),
                top_k=int(r.top_k),
            )
        check_sampling(sampling)
        return sampling

    def run(self, batch: DataProto, generate: GenerateFn, *, step: int, validate: bool = False) -> DataProto:
        """Roll out every row of ``batch`` once (see the class docstring)."""
        prompts = prompts_from_batch(batch)
        sampling = self.sampling_config(validate)
        timed = TimedGenerate(generate)
        outputs = timed(prompts, sampling)
        _check_outputs(outputs, len(prompts), sampling.max_new_tokens)
        prompt_width = max(len(p) for p in prompts) if prompts else 1
        tensors = assemble_rollout(
            prompt_ids=prompts,
            response_ids=[o.token_ids for o in outputs],
            response_mask=[[1] * len(o.token_ids) for o in outputs],
            response_log_probs=[o.log_probs for o in outputs],
            pad_token_id=int(self.tokenizer.pad_token_id),
            prompt_length=prompt_width,
            response_length=sampling.max_new_tokens,
        )
        meta_info = {**batch.meta_info, "metrics": rollout_metrics(outputs), "timing": {"gen": timed.seconds}}
        return DataProto.from_dict(tensors, non_tensors=dict(batch.non_tensor_batch), meta_info=meta_info)


def rollout_metrics(outputs: list[GenerationOutput]) -> dict[str, float]:
    """The share of each finish reason (response lengths are the trainer's ``response_length/*``)."""
    if not outputs:
        return {}
    reasons = Counter(o.finish_reason for o in outputs)
    metrics = {}
    for reason in FINISH_REASONS:
        metrics[f"rollout/finish_reason/{reason}"] = reasons.get(reason, 0) / len(outputs)
    return metrics


def _check_outputs(outputs: list[GenerationOutput], rows: int, max_new_tokens: int) -> None:
    if len(outputs) != rows:
        raise ValueError(f"SingleTurnAgentLoop: generate returned {len(outputs)} outputs for {rows} prompts")
    for i, o in enumerate(outputs):
        if len(o.log_probs) != len(o.token_ids):
            raise ValueError(
                f"SingleTurnAgentLoop: output {i} has {len(o.token_ids)} ids but {len(o.log_probs)} log-probs"
            )
        if len(o.token_ids) > max_new_tokens:
            raise ValueError(
                f"SingleTurnAgentLoop: output {i} has {len(o.token_ids)} ids, more than max_new_tokens={max_new_tokens}"
            )
        if o.finish_reason not in FINISH_REASONS:
            raise ValueError(
                f"SingleTurnAgentLoop: output {i} has finish_reason {o.finish_reason!r}, expected one of {FINISH_REASONS}"
            )
