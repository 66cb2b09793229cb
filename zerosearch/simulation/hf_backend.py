"""transformers ``generate`` backend of the simulation server (CPU or one GPU).

One ``generate`` call per group of requests that share the settings ``generate`` takes per batch
(temperature, top-p/k, seed, EOS handling, ...). Inside a group each row keeps its own
``max_new_tokens`` and stop strings: a stopping criterion ends rows independently, and the
batch ends when every row has.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from zerosearch.simulation.backend import GenerationBackend, earliest_stop
from zerosearch.simulation.sampling import GenerationRequest, GenerationResult, SamplingSpec

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype: expected auto or one of {', '.join(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


class _RowStops(StoppingCriteria):
    """Ends each row at its own max_new_tokens or at the first of its stop strings.

    Records, per row, how many new tokens it had when it ended (``done_at``) and the stop string
    that ended it (``matched``, None for length). Stop strings are looked for in the decoded tail
    of the row, long enough to hold the longest stop string.
    """

    def __init__(self, tokenizer, prompt_len: int, max_new: list[int], stops: list[tuple[str, ...]]):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.max_new = max_new
        self.stops = stops
        longest = max((len(s) for row in stops for s in row), default=0)
        # A character takes at most 4 byte-level tokens; a few more tokens cover a partial start.
        self.window = 4 * longest + 4
        self.done_at: list[int | None] = [None] * len(max_new)
        self.matched: list[str | None] = [None] * len(max_new)

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        """input_ids: (B, prompt_len + n_new) -> (B,) bool, True for rows that are done."""
        n_new = input_ids.shape[1] - self.prompt_len
        for i in range(len(self.max_new)):
            if self.done_at[i] is not None:
                continue
            if self.stops[i]:
                start = max(self.prompt_len, input_ids.shape[1] - self.window)
                tail = self.tokenizer.decode(input_ids[i, start:].tolist(), skip_special_tokens=False)
                hit = earliest_stop(tail, self.stops[i])
                if hit is not None:
                    self.done_at[i], self.matched[i] = n_new, hit[1]
                    continue
            if n_new >= self.max_new[i]:
                self.done_at[i] = n_new
        return torch.tensor([d is not None for d in self.done_at], dtype=torch.bool, device=input_ids.device)


class HFBackend(GenerationBackend):
    """Serves a Hugging Face causal LM with ``model.generate``.

    Args:
        model_path: model folder (or hub id when online).
        dtype: auto (bfloat16 on cuda, float32 on cpu), float32, bfloat16, float16.
        device: auto, cpu, cuda, cuda:N.
        trust_remote_code: passed to transformers.
    """

    name = "hf"

    def __init__(self, model_path: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False):
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=resolve_dtype(dtype, self.device), trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        if self.tokenizer.eos_token_id is not None:
            eos.append(self.tokenizer.eos_token_id)
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(eos))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        # Every generation setting is passed per call; the checkpoint's own defaults (e.g. a
        # sampling temperature or top_k in generation_config.json) must not leak in.
        self.model.generation_config = GenerationConfig()

    # ------------------------------------------------------------------------------------------

    @staticmethod
    def _group_key(spec: SamplingSpec) -> tuple:
        return (spec.temperature, spec.top_p, spec.top_k, spec.seed, spec.repetition_penalty,
                spec.ignore_eos, spec.min_new_tokens, spec.stop_token_ids)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            if not req.prompt_ids:
                raise ValueError(f"request {i} has an empty prompt")
            groups[self._group_key(req.sampling)].append(i)
        results: list[GenerationResult | None] = [None] * len(requests)
        for idxs in groups.values():
            for i, res in zip(idxs, self._generate_group([requests[i] for i in idxs])):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_group(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        spec = requests[0].sampling  # the group-level settings are equal across the group
        prompt_len = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), prompt_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, req in enumerate(requests):  # left padding
            ids[row, prompt_len - len(req.prompt_ids):] = torch.tensor(req.prompt_ids)
            mask[row, prompt_len - len(req.prompt_ids):] = 1
        end_ids = () if spec.ignore_eos else tuple(dict.fromkeys(self.eos_ids + spec.stop_token_ids))
        if spec.ignore_eos and spec.stop_token_ids:
            end_ids = spec.stop_token_ids
        sampled = spec.temperature > 0
        config = GenerationConfig(
            max_new_tokens=max(r.sampling.max_new_tokens for r in requests),
            min_new_tokens=spec.min_new_tokens if end_ids and spec.min_new_tokens else None,
            do_sample=sampled,
            temperature=spec.temperature if sampled else None,
            top_p=spec.top_p if sampled else None,
            top_k=(spec.top_k if spec.top_k > 0 else 0) if sampled else None,
            repetition_penalty=spec.repetition_penalty if spec.repetition_penalty != 1.0 else None,
            eos_token_id=list(end_ids) if end_ids else None,
            pad_token_id=self.pad_id,
        )
        stops = _RowStops(self.tokenizer, prompt_len, [r.sampling.max_new_tokens for r in requests],
                          [r.sampling.stop for r in requests])
        if spec.seed is not None:
            torch.manual_seed(spec.seed)
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, stopping_criteria=StoppingCriteriaList([stops]))
        new_tokens = out[:, prompt_len:].tolist()
        return [self._finish(req, row_ids, stops.done_at[row], stops.matched[row], set(end_ids))
                for row, (req, row_ids) in enumerate(zip(requests, new_tokens))]

    def _finish(self, req: GenerationRequest, new_ids: list[int], done_at: int | None,
                matched: str | None, end_ids: set[int]) -> GenerationResult:
        """Cut one row's new tokens where it ended and build its result."""
        spec = req.sampling
        limit = min(done_at if done_at is not None else len(new_ids), spec.max_new_tokens, len(new_ids))
        for t, tok in enumerate(new_ids[:limit]):
            if tok in end_ids and t + 1 > spec.min_new_tokens:
                ids = new_ids[: t + 1]
                text = self.tokenizer.decode(ids, skip_special_tokens=spec.skip_special_tokens)
                return GenerationResult(text=text, output_ids=ids, finish_reason={"type": "stop", "matched": tok},
                                        prompt_tokens=len(req.prompt_ids))
        ids = new_ids[:limit]
        text = self.tokenizer.decode(ids, skip_special_tokens=spec.skip_special_tokens)
        if matched is not None:
            hit = earliest_stop(text, spec.stop)
            if hit is not None:
                pos, matched = hit
                text = text[: pos + len(matched)] if spec.no_stop_trim else text[:pos]
            return GenerationResult(text=text, output_ids=ids, finish_reason={"type": "stop", "matched": matched},
                                    prompt_tokens=len(req.prompt_ids))
        return GenerationResult(text=text, output_ids=ids, finish_reason={"type": "length", "length": len(ids)},
                                prompt_tokens=len(req.prompt_ids))

    def close(self) -> None:
        del self.model
