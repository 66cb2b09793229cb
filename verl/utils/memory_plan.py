"""Memory plan of a training run, before anything is loaded: predicted bytes per device and phase.

Pure functions of a decoder-only model's ``config.json`` numbers (``ModelShape``) and the run's
settings (``PlanSettings``, usually read from the composed trainer config by
``settings_from_config``). ``plan_memory`` returns one ``Phase`` per step phase, each a dict of
named terms in bytes on one device (GPU, or one worker process on cpu) plus the terms that live
in host memory instead (offloaded state). ``render_plan`` prints them and ends with one line
``plan: peak X GiB per GPU of Y GiB: fits`` or ``... does not fit: change KEY``.

P = parameters, W = data-parallel ranks (FSDP shards over all of them), L = layers,
H = hidden size, I = MLP size, V = vocabulary, kv = key/value width (kv heads x head dim).

Modelled (per device):
- actor weights: P/W x 4 bytes (fp32 master weights under bf16 mixed precision on cuda; otherwise
  the training dtype's size); gradients: the same, during the update only; AdamW states:
  P/W x 8 bytes (fp32 exp_avg and exp_avg_sq), resident from the first step on, plus one
  P/W x 4 temporary during the optimizer step (foreach sqrt). FSDP CPU offload
  (``param_offload`` or ``optimizer_offload``: parameters, gradients and optimizer move together)
  moves all three to the host column.
- reference weights: P/W in the training compute dtype (host when ``ref.fsdp_config.param_offload``).
- critic (ppo): like the actor with the LM head replaced by a value head.
- FSDP all-gathers: the root unit (embeddings, LM head, final norm) for the whole forward plus two
  decoder layers (current + prefetched) in the compute dtype; in the backward one layer's
  unsharded gradient in the compute dtype and in fp32 for the reduce-scatter.
- activations: with gradient checkpointing each layer's input (tokens x H) plus one layer's
  saved tensors during recompute (tokens x (10 H + 2 kv + 4 I) elements); without it the saved
  tensors of every layer. No-grad passes keep one layer's working set (tokens x (4 H + 3 I)).
- logits: the model's output for the positions that get logits (all packed tokens with
  remove-padding, the response positions otherwise) in the compute dtype (and its gradient in the
  update), plus a float32 working set of ``logits_chunk`` positions x V (3 copies in the update,
  2 in log-prob passes): log-softmax and entropy computed in chunks of tokens.
- micro-batch tokens: the token budget per GPU when dynamic micro-batches are on
  (``use_dynamic_bsz``), else rows x (max prompt + max response length).
- rollout engine, vllm: ``gpu_memory_utilization`` x device memory while it generates (weights,
  KV cache and vLLM's own buffers inside it, split as weights vs the rest). With
  ``free_cache_engine`` (sleep level 1 or 2) it releases its weights and KV cache from the device
  during log-prob and update passes (level 1 keeps a host copy of the weights, level 2 drops
  them), leaving ``ENGINE_RESIDUE_GIB``; for the weight sync it wakes its weights only. Without
  sleep it keeps its whole share all step. vllm on cpu: weights plus the KV cache space
  (``VLLM_CPU_KVCACHE_SPACE`` GiB when set, else the same share of the worker's memory).
  hf: the actor module itself (no FSDP) or a full copy (FSDP), plus a KV cache of every
  trajectory of the rank at the maximum length.
- weight sync: streamed, one bucket (``sync_bucket_mb``) plus the largest tensor gathered in fp32
  and cast to the rollout dtype.
- a fixed ``RUNTIME_GIB`` on cuda (CUDA context, NCCL buffers, allocator slack).
- memory that other processes already hold on the device (``held_gib``: a simulation server on
  the trainer's GPUs, say), in every phase. vLLM's share is a fraction of the whole device, so a
  device that others half fill cannot hold it; the plan then names ``CUDA_VISIBLE_DEVICES``.

Not modelled: allocator fragmentation beyond ``RUNTIME_GIB``; attention score matrices (flash
attention and sdpa kernels keep O(tokens); eager attention is O(tokens^2)); vLLM's CUDA graphs
(``enforce_eager`` false); host memory while loading weights; the data, tokenizer and Python
overhead of the trainer; tensor-parallel rollout; a simulation LLM that is not running yet (one
that runs is in ``held_gib``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

GIB = 2**30
MIB = 2**20
# CUDA context, NCCL buffers and allocator slack per GPU (estimate, not measured).
RUNTIME_GIB = 1.5
# What a sleeping vLLM engine still holds on its GPU (estimate, not measured).
ENGINE_RESIDUE_GIB = 1.0
# Elements per token of one decoder layer's tensors saved for backward: norms' fp32 inputs and
# outputs, q/k/v, attention output, residuals (about 10 H + 2 kv) and the MLP's gate, up, act and
# product (4 I). No-grad working set: hidden, normed, attention output (4 H) and three I-wide tensors.
TRAIN_ACT_H, TRAIN_ACT_KV, TRAIN_ACT_I = 10, 2, 4
INFER_ACT_H, INFER_ACT_I = 4, 3
# float32 logits-sized working copies per chunk: upcast + exp/softmax (+ the gradient in the update).
LOGPROB_WORK_COPIES, UPDATE_WORK_COPIES = 2, 3
DEFAULT_SYNC_BUCKET_MB = 32  # actor_rollout_ref.rollout.weight_sync_bucket_mb (for settings built by hand)
DEFAULT_LOGITS_CHUNK = 512  # verl.utils.chunked_logprob.DEFAULT_CHUNK_SIZE (a test keeps them equal)
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2, "half": 2, "float": 4}


class PlanError(ValueError):
    """A model config or a setting the plan cannot use; the message names the file or key."""


# ---------------------------------------------------------------------------------------------
# Model shape


@dataclass(frozen=True)
class ModelShape:
    """Architecture numbers of a decoder-only causal LM (Qwen2 / Llama layout)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = True

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """q, k, v (with bias when ``attention_bias``), o, gate/up/down, two RMSNorm weights."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.kv_width
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.attention_bias else 0)
        return attn + 3 * h * self.intermediate_size + 2 * h

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def root_params(self) -> int:
        """Parameters outside the decoder layers: embeddings, LM head (unless tied), final norm."""
        return self.embedding_params * (1 if self.tie_word_embeddings else 2) + self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_layers * self.layer_params + self.root_params

    @property
    def value_model_params(self) -> int:
        """The critic: the body with a (H -> 1) value head instead of the LM head."""
        return self.num_layers * self.layer_params + self.embedding_params + 2 * self.hidden_size

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.num_layers * self.kv_width * dtype_bytes


def _int_field(cfg: dict, key: str, source: str, default: Optional[int] = None) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PlanError(f"{source}: {key} must be a positive integer, got {value!r}"
                        + (" (missing)" if key not in cfg else ""))
    return value


def shape_from_config(cfg: dict, source: str = "config.json") -> ModelShape:
    """``ModelShape`` from the fields of a Hugging Face ``config.json`` (Qwen2 / Llama names)."""
    if not isinstance(cfg, dict):
        raise PlanError(f"{source}: expected a JSON object, got {type(cfg).__name__}")
    hidden = _int_field(cfg, "hidden_size", source)
    heads = _int_field(cfg, "num_attention_heads", source)
    head_dim = cfg.get("head_dim") or (hidden // heads)
    bias = cfg.get("attention_bias", cfg.get("model_type", "qwen2") == "qwen2")
    return ModelShape(
        hidden_size=hidden,
        intermediate_size=_int_field(cfg, "intermediate_size", source),
        num_layers=_int_field(cfg, "num_hidden_layers", source),
        num_heads=heads,
        num_kv_heads=_int_field(cfg, "num_key_value_heads", source, default=heads),
        head_dim=_int_field({"head_dim": head_dim}, "head_dim", source),
        vocab_size=_int_field(cfg, "vocab_size", source),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(bias),
    )


def read_model_shape(path: str) -> ModelShape:
    """The shape of a model folder (its ``config.json``) or of a ``config.json``-style file."""
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise PlanError(f"{path}: expected a model folder with config.json or a config .json file")
    try:
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as err:
        raise PlanError(f"{file}: not valid JSON ({err})") from None
    return shape_from_config(cfg, file)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class PlanSettings:
    """The run's settings that decide memory (defaults: the cuda profile of a GRPO run).

    Attributes:
        device: cuda or cpu; world_size: data-parallel ranks (GPUs x nodes); ranks_per_node: GPUs
            per node (host memory is shared by them); capacity_gib: memory of one device (one
            worker's share of RAM on cpu).
        compute_bytes: bytes per element of the forward (bf16 = 2); master_bytes: bytes per sharded
            trainable parameter (and gradient); fsdp: FSDP sharding and all-gathers (else a plain
            module per rank); offload: FSDP CPU offload of actor parameters, gradients, optimizer.
        ref: a reference policy; ref_offload: its parameters on the host. critic: a value model.
        gradient_checkpointing, remove_padding: as the model config keys.
        update_tokens, update_logit_tokens: tokens of one update micro-batch per device, and how
            many of them get logits; log_prob_tokens, log_prob_logit_tokens: the same for log-prob
            passes. logits_chunk: positions per float32 log-softmax/entropy chunk.
        rollout_engine: vllm or hf; rollout_bytes: its weights' dtype size (hf: the training
            dtype's); gpu_memory_utilization: vLLM's share of the device; sleep_level: 0 (the
            engine stays awake), 1 or 2; kv_cache_gib: vLLM-CPU's KV cache space (None = the utilisation share);
            rollout_sequences, max_sequence_len: the hf engine's KV cache (rows x tokens).
        sync_bucket_mb: weight-sync bucket.
        held_gib: memory of the device that other processes hold already (counted in every phase).
        sources: the key to name in a suggestion instead of a lever's default key.
    """

    device: str = "cuda"
    world_size: int = 1
    ranks_per_node: int = 1
    capacity_gib: float = 80.0
    compute_bytes: int = 2
    master_bytes: int = 4
    fsdp: bool = True
    offload: bool = False
    ref: bool = True
    ref_offload: bool = False
    critic: bool = False
    critic_offload: bool = False
    gradient_checkpointing: bool = True
    remove_padding: bool = True
    update_tokens: int = 16384
    update_logit_tokens: int = 16384
    log_prob_tokens: int = 16384
    log_prob_logit_tokens: int = 16384
    logits_chunk: int = DEFAULT_LOGITS_CHUNK
    rollout_engine: str = "vllm"
    rollout_bytes: int = 2
    gpu_memory_utilization: float = 0.6
    sleep_level: int = 1
    kv_cache_gib: Optional[float] = None
    rollout_sequences: int = 1
    max_sequence_len: int = 8192
    sync_bucket_mb: int = DEFAULT_SYNC_BUCKET_MB
    held_gib: float = 0.0
    sources: dict = field(default_factory=dict, compare=False)


# ---------------------------------------------------------------------------------------------
# Phases


@dataclass
class Phase:
    """Predicted memory of one step phase: ``terms`` on the device, ``host`` in host memory (bytes)."""

    name: str
    terms: dict[str, float]
    host: dict[str, float] = field(default_factory=dict)

    @property
    def peak(self) -> float:
        return float(sum(self.terms.values()))

    @property
    def host_total(self) -> float:
        return float(sum(self.host.values()))


def _place(terms: dict, host: dict, name: str, nbytes: float, on_host: bool) -> None:
    if nbytes:
        (host if on_host else terms)[name] = (host.get(name, 0.0) if on_host else terms.get(name, 0.0)) + nbytes


def _resident(m: ModelShape, s: PlanSettings) -> tuple[dict, dict]:
    """Trainer state held through the whole step (after the first optimizer step)."""
    terms: dict[str, float] = {}
    host: dict[str, float] = {}
    w, p = s.world_size, m.num_params
    _place(terms, host, "actor weights", p * s.master_bytes / w, s.offload)
    _place(terms, host, "optimizer states", p * 8 / w, s.offload)
    if s.ref:
        _place(terms, host, "ref weights", p * s.compute_bytes / w, s.ref_offload)
    if s.critic:
        pc = m.value_model_params
        _place(terms, host, "critic weights", pc * s.master_bytes / w, s.critic_offload)
        _place(terms, host, "critic optimizer states", pc * 8 / w, s.critic_offload)
    if s.device == "cuda":
        terms["runtime"] = RUNTIME_GIB * GIB
    if s.held_gib:
        terms["other processes"] = s.held_gib * GIB
    return terms, host


def _engine_share(m: ModelShape, s: PlanSettings) -> tuple[float, float]:
    """(rollout weights, KV cache and engine buffers) of an awake engine, bytes on one device."""
    weights = m.num_params * s.rollout_bytes
    if s.rollout_engine == "vllm":
        if s.device == "cpu" and s.kv_cache_gib is not None:
            return weights, s.kv_cache_gib * GIB
        return weights, max(s.gpu_memory_utilization * s.capacity_gib * GIB - weights, 0.0)
    # hf: the actor module itself, or a full plain copy when the actor is FSDP-sharded
    copy = weights if s.fsdp else 0.0
    kv = s.rollout_sequences * s.max_sequence_len * m.kv_bytes_per_token(s.rollout_bytes)
    return copy, kv


def _engine_asleep(m: ModelShape, s: PlanSettings, terms: dict, host: dict, weights_awake: bool) -> None:
    weights, rest = _engine_share(m, s)
    if s.rollout_engine != "vllm" or s.sleep_level == 0:
        terms["rollout weights"] = weights
        if s.rollout_engine == "vllm":
            terms["KV cache (engine awake)"] = rest
        return
    if weights_awake:
        terms["rollout weights"] = weights
    elif s.sleep_level == 1:
        host["rollout weights (asleep)"] = weights
    if s.device == "cuda":
        terms["engine residue (asleep)"] = ENGINE_RESIDUE_GIB * GIB


def _gathered(m: ModelShape, s: PlanSettings, backward: bool) -> dict[str, float]:
    if not s.fsdp:
        return {}
    out = {"FSDP all-gathered params": (m.root_params + 2 * m.layer_params) * s.compute_bytes}
    if backward:
        out["FSDP unsharded layer grads"] = m.layer_params * (s.compute_bytes + 4)
    return out


def _logits(m: ModelShape, s: PlanSettings, logit_tokens: int, train: bool) -> float:
    out = logit_tokens * m.vocab_size * s.compute_bytes * (2 if train else 1)
    work = min(s.logits_chunk, logit_tokens) * m.vocab_size * 4 * (UPDATE_WORK_COPIES if train else LOGPROB_WORK_COPIES)
    return out + work


def _train_activations(m: ModelShape, s: PlanSettings) -> float:
    per_layer = s.update_tokens * (TRAIN_ACT_H * m.hidden_size + TRAIN_ACT_KV * m.kv_width
                                   + TRAIN_ACT_I * m.intermediate_size) * s.compute_bytes
    if s.gradient_checkpointing:
        return m.num_layers * s.update_tokens * m.hidden_size * s.compute_bytes + per_layer
    return m.num_layers * per_layer


def plan_memory(m: ModelShape, s: PlanSettings) -> list[Phase]:
    """The four phases of a step on one device: rollout, log-prob, update, weight sync."""
    if s.device not in ("cuda", "cpu"):
        raise PlanError(f"trainer.device must be cuda or cpu, got {s.device!r}")
    if s.rollout_engine not in ("vllm", "hf"):
        raise PlanError(f"actor_rollout_ref.rollout.name must be vllm or hf, got {s.rollout_engine!r}")
    if s.sleep_level not in (0, 1, 2):
        raise PlanError(f"actor_rollout_ref.rollout.free_cache_engine: sleep level must be 0, 1 or 2, got {s.sleep_level!r}")
    phases = []

    terms, host = _resident(m, s)
    weights, rest = _engine_share(m, s)
    terms["rollout weights"] = weights
    terms["KV cache"] = rest
    if s.rollout_engine == "hf":  # generate's last-position logits, float32
        terms["logits"] = s.rollout_sequences * m.vocab_size * 4
    phases.append(Phase("rollout", terms, host))

    terms, host = _resident(m, s)
    _engine_asleep(m, s, terms, host, weights_awake=False)
    terms.update(_gathered(m, s, backward=False))
    terms["activations"] = s.log_prob_tokens * (INFER_ACT_H * m.hidden_size + INFER_ACT_I * m.intermediate_size) * s.compute_bytes
    terms["logits"] = _logits(m, s, s.log_prob_logit_tokens, train=False)
    phases.append(Phase("log-prob", terms, host))

    terms, host = _resident(m, s)
    _engine_asleep(m, s, terms, host, weights_awake=False)
    p_w = m.num_params / s.world_size
    _place(terms, host, "grads", p_w * s.master_bytes, s.offload)
    forward_backward = {**_gathered(m, s, backward=True), "activations": _train_activations(m, s),
                        "logits": _logits(m, s, s.update_logit_tokens, train=True)}
    optimizer_step = p_w * 4  # foreach AdamW's sqrt(exp_avg_sq) temporary
    if sum(forward_backward.values()) >= optimizer_step or s.offload:
        terms.update(forward_backward)
        if s.offload:
            host["optimizer step temporary"] = optimizer_step
    else:
        terms["optimizer step temporary"] = optimizer_step
    phases.append(Phase("update", terms, host))

    terms, host = _resident(m, s)
    _engine_asleep(m, s, terms, host, weights_awake=True)
    largest = m.embedding_params * (4 + s.rollout_bytes)
    terms["sync bucket + largest tensor"] = min(s.sync_bucket_mb * MIB, m.num_params * s.rollout_bytes) + largest
    phases.append(Phase("weight sync", terms, host))
    return phases


def peak_of(phases: list[Phase]) -> tuple[float, Phase]:
    worst = max(phases, key=lambda ph: ph.peak)
    return worst.peak, worst


def kv_sequences(m: ModelShape, s: PlanSettings) -> int:
    """How many sequences of ``max_sequence_len`` tokens the rollout engine's KV cache holds."""
    _, kv = _engine_share(m, s)
    per_seq = s.max_sequence_len * m.kv_bytes_per_token(s.rollout_bytes)
    return int(kv // per_seq)


def fits(m: ModelShape, s: PlanSettings) -> bool:
    """The peak of every phase is within the device's memory and vLLM's KV cache holds one
    sequence of the maximum length (else vLLM refuses to start)."""
    peak, _ = peak_of(plan_memory(m, s))
    return peak <= s.capacity_gib * GIB and (s.rollout_engine != "vllm" or kv_sequences(m, s) >= 1)


# ---------------------------------------------------------------------------------------------
# Suggestions: which single change lowers the peak most


# (key to name, what to try): each returns changed settings or None when it does not apply.
LEVERS: tuple[tuple[str, Callable[[PlanSettings], Optional[PlanSettings]]], ...] = (
    ("actor_rollout_ref.actor.fsdp_config.optimizer_offload",
     lambda s: replace(s, offload=True) if s.device == "cuda" and not s.offload else None),
    ("actor_rollout_ref.rollout.free_cache_engine",
     lambda s: replace(s, sleep_level=1) if s.rollout_engine == "vllm" and s.sleep_level == 0 else None),
    ("actor_rollout_ref.rollout.gpu_memory_utilization",
     lambda s: (replace(s, gpu_memory_utilization=round(s.gpu_memory_utilization - 0.1, 2))
                if s.rollout_engine == "vllm" and s.gpu_memory_utilization > 0.15 else None)),
    ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
     lambda s: (replace(s, update_tokens=s.update_tokens // 2, update_logit_tokens=s.update_logit_tokens // 2)
                if s.update_tokens > 1024 else None)),
    ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
     lambda s: (replace(s, log_prob_tokens=s.log_prob_tokens // 2, log_prob_logit_tokens=s.log_prob_logit_tokens // 2)
                if s.log_prob_tokens > 1024 else None)),
    ("actor_rollout_ref.model.enable_gradient_checkpointing",
     lambda s: replace(s, gradient_checkpointing=True) if not s.gradient_checkpointing else None),
    ("actor_rollout_ref.ref.fsdp_config.param_offload",
     lambda s: replace(s, ref_offload=True) if s.ref and not s.ref_offload and s.device == "cuda" else None),
    ("trainer.n_gpus_per_node", lambda s: replace(s, world_size=s.world_size * 2)),
)
# The policy itself: named when no setting of the run helps.
MODEL_KEY = "actor_rollout_ref.model.path"


def suggest_key(m: ModelShape, s: PlanSettings) -> str:
    """The key whose change lowers the peak most; a change that makes the run fit wins over one
    that does not. ``CUDA_VISIBLE_DEVICES`` when the run would fit on devices that no other
    process holds (give them and the trainer different GPUs). When vLLM's share cannot hold its
    weights and one sequence: its gpu_memory_utilization if 90 % of the device could, else the
    model path (the policy is too large for one device's rollout engine). Keys are config keys
    (the launcher renames those it has a key for)."""
    weights = m.num_params * s.rollout_bytes
    if s.held_gib and fits(m, replace(s, held_gib=0.0)):
        return "CUDA_VISIBLE_DEVICES"
    if s.rollout_engine == "vllm" and kv_sequences(m, s) < 1:
        one_sequence = s.max_sequence_len * m.kv_bytes_per_token(s.rollout_bytes)
        if weights + one_sequence < 0.9 * s.capacity_gib * GIB:
            return "actor_rollout_ref.rollout.gpu_memory_utilization"
        return MODEL_KEY
    if weights >= s.capacity_gib * GIB:
        return MODEL_KEY
    best: tuple[tuple[bool, float], str] | None = None
    for key, change in LEVERS:
        changed = change(s)
        if changed is None:
            continue
        peak, _ = peak_of(plan_memory(m, changed))
        score = (fits(m, changed), -peak)
        if best is None or score > best[0]:
            best = (score, s.sources.get(key, key))
    if best is None:
        return MODEL_KEY
    return best[1]


# ---------------------------------------------------------------------------------------------
# Rendering


def _gib(x: float) -> str:
    return f"{x / GIB:.1f}"


def verdict_line(peak: float, capacity_gib: float, device: str, key: Optional[str]) -> str:
    unit = "GPU" if device == "cuda" else "worker"
    head = f"plan: peak {_gib(peak)} GiB per {unit} of {capacity_gib:.1f} GiB"
    return f"{head}: fits" if key is None else f"{head}: does not fit: change {key}"


def render_plan(m: ModelShape, s: PlanSettings, model_name: str = "",
                key_names: Optional[dict[str, str]] = None) -> tuple[str, bool]:
    """The plan as text (per phase: peak and terms) and whether it fits. ``key_names``: what to call
    a config key in the verdict (a launcher's own key for it), where it has another name."""
    phases = plan_memory(m, s)
    peak, worst = peak_of(phases)
    ok = fits(m, s)
    unit = "GPU" if s.device == "cuda" else "worker"
    lines = [
        f"plan: {model_name or 'model'}: {m.num_params / 1e9:.2f}B parameters ({m.num_layers} layers, hidden "
        f"{m.hidden_size}, vocab {m.vocab_size}{', tied embeddings' if m.tie_word_embeddings else ''})",
        f"plan: {s.device}, {s.world_size} rank(s), {s.capacity_gib:.1f} GiB per {unit}; "
        f"rollout {s.rollout_engine}"
        + (f" (gpu_memory_utilization {s.gpu_memory_utilization:g}, sleep level {s.sleep_level})"
           if s.rollout_engine == "vllm" else "")
        + f"; update {s.update_tokens} tokens/micro-batch, log-prob {s.log_prob_tokens}; "
        f"gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}; "
        f"actor offload {'on' if s.offload else 'off'}",
    ]
    if s.rollout_engine == "vllm":
        _, rest = _engine_share(m, s)
        n = kv_sequences(m, s)
        lines.append(f"plan: KV cache {_gib(rest)} GiB holds {n} sequences of {s.max_sequence_len} tokens at once "
                     + ("(upper bound: part of it is vLLM's own buffers)" if n else
                        "(vLLM would refuse to start: not one sequence of the maximum length fits)"))
    for ph in phases:
        lines.append(f"plan: {ph.name:<11} {_gib(ph.peak):>7} GiB = "
                     + " + ".join(f"{k} {_gib(v)}" for k, v in ph.terms.items() if v > 0)
                     + (f"; host {_gib(ph.host_total)} GiB (" + ", ".join(f"{k} {_gib(v)}" for k, v in ph.host.items())
                        + ")" if ph.host else ""))
    host = max(ph.host_total for ph in phases)
    if host:
        lines.append(f"plan: host memory for offloaded state: up to {_gib(host)} GiB per rank, "
                     f"{_gib(host * s.ranks_per_node)} GiB per node of {s.ranks_per_node} (not checked against the host)")
    lines.append(f"plan: highest phase: {worst.name}")
    key = None if ok else suggest_key(m, s)
    lines.append(verdict_line(peak, s.capacity_gib, s.device, (key_names or {}).get(key, key)))
    return "\n".join(lines) + "\n", ok


# ---------------------------------------------------------------------------------------------
# Settings from the composed trainer config


def _select(cfg: Any, path: str, default: Any = None) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, path, default=default)
    return default if value is None else value


def dtype_bytes(name: Any, key: str) -> int:
    text = str(name).replace("torch.", "").lower()
    if text not in DTYPE_BYTES:
        raise PlanError(f"{key}: expected one of {', '.join(sorted(DTYPE_BYTES))}, got {name!r}")
    return DTYPE_BYTES[text]


def sleep_level_of(value: Any) -> int:
    """``free_cache_engine``: false/true (level 1) or an explicit level 0, 1, 2."""
    if isinstance(value, bool):
        return 1 if value else 0
    if isinstance(value, int) and value in (0, 1, 2):
        return value
    raise PlanError(f"actor_rollout_ref.rollout.free_cache_engine: expected true, false, 0, 1 or 2, got {value!r}")


def settings_from_config(cfg: Any, capacity_gib: float, held_gib: float = 0.0) -> PlanSettings:
    """``PlanSettings`` from a composed trainer config (verl/trainer/config/ppo_trainer.yaml layout);
    ``capacity_gib`` of one device, of which other processes hold ``held_gib``."""
    arr = "actor_rollout_ref"
    device = str(_select(cfg, "trainer.device", "cuda"))
    per_node = int(_select(cfg, "trainer.n_gpus_per_node", 1))
    world = per_node * int(_select(cfg, "trainer.nnodes", 1))
    compute = dtype_bytes(_select(cfg, f"{arr}.model.dtype", "float32"), f"{arr}.model.dtype")
    fsdp = str(_select(cfg, f"{arr}.actor.strategy", "fsdp")) == "fsdp"
    mixed = device == "cuda" and fsdp and compute < 4
    remove_padding = bool(_select(cfg, f"{arr}.model.use_remove_padding", False))
    prompt = int(_select(cfg, "data.max_prompt_length", 1024))
    response = int(_select(cfg, "data.max_response_length", 1024))
    seq = prompt + response
    sources: dict[str, str] = {}

    def tokens(rows: int, budget: Optional[int]) -> tuple[int, int]:
        """(tokens, logit positions) of a micro-batch of ``rows`` rows or ``budget`` tokens."""
        total = budget if budget is not None else rows * seq
        if remove_padding:
            return total, total
        return total, max(1, total // seq) * (response + 1)

    dynamic = bool(_select(cfg, f"{arr}.actor.use_dynamic_bsz", False))
    budget = int(_select(cfg, f"{arr}.actor.ppo_max_token_len_per_gpu", 16384)) if dynamic else None
    upd_tokens, upd_logits = tokens(int(_select(cfg, f"{arr}.actor.ppo_micro_batch_size_per_gpu", 1)), budget)
    lp_key = f"{arr}.rollout.log_prob_max_token_len_per_gpu"
    lp_budget = _select(cfg, lp_key, budget)
    lp_rows = max(int(_select(cfg, f"{arr}.rollout.log_prob_micro_batch_size_per_gpu", 1)),
                  int(_select(cfg, f"{arr}.ref.log_prob_micro_batch_size_per_gpu", 1)))
    lp_tokens, lp_logits = tokens(lp_rows, int(lp_budget) if dynamic and lp_budget is not None else None)
    if dynamic:
        sources["actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu"] = (
            lp_key if _select(cfg, lp_key) is not None else f"{arr}.actor.ppo_max_token_len_per_gpu")
    else:  # fixed row counts: the micro-batch size is what to change
        sources[f"{arr}.actor.ppo_max_token_len_per_gpu"] = f"{arr}.actor.ppo_micro_batch_size_per_gpu"
    bucket = _select(cfg, f"{arr}.rollout.weight_sync_bucket_mb", DEFAULT_SYNC_BUCKET_MB)
    level = _select(cfg, f"{arr}.rollout.sleep_level")
    free_cache = _select(cfg, f"{arr}.rollout.free_cache_engine", False)
    sleep = sleep_level_of(free_cache) if level is None or not free_cache else sleep_level_of(int(level))
    engine = str(_select(cfg, f"{arr}.rollout.name", "vllm"))
    kv_env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    rows_per_rank = math.ceil(int(_select(cfg, "data.train_batch_size", 1)) * int(_select(cfg, f"{arr}.rollout.n", 1)) / world)
    gen_rows = _select(cfg, f"{arr}.rollout.generate_micro_batch_size")
    from verl.trainer.ppo.compute import required_roles  # the trainer's own decision, from the registry

    roles = required_roles(cfg)
    critic = roles.critic
    return PlanSettings(
        device=device,
        world_size=world,
        ranks_per_node=per_node,
        capacity_gib=float(capacity_gib),
        compute_bytes=compute,
        master_bytes=4 if mixed else compute,
        fsdp=fsdp,
        offload=device == "cuda" and (bool(_select(cfg, f"{arr}.actor.fsdp_config.param_offload", False))
                                      or bool(_select(cfg, f"{arr}.actor.fsdp_config.optimizer_offload", False))),
        ref=roles.reference,
        ref_offload=device == "cuda" and bool(_select(cfg, f"{arr}.ref.fsdp_config.param_offload", False)),
        critic=critic,
        critic_offload=critic and device == "cuda" and (bool(_select(cfg, "critic.fsdp_config.param_offload", False))
                                                       or bool(_select(cfg, "critic.fsdp_config.optimizer_offload", False))),
        gradient_checkpointing=bool(_select(cfg, f"{arr}.model.enable_gradient_checkpointing", False)),
        remove_padding=remove_padding,
        update_tokens=upd_tokens,
        update_logit_tokens=upd_logits,
        log_prob_tokens=lp_tokens,
        log_prob_logit_tokens=lp_logits,
        logits_chunk=DEFAULT_LOGITS_CHUNK,
        rollout_engine=engine,
        rollout_bytes=(dtype_bytes(_select(cfg, f"{arr}.rollout.dtype", "float32"), f"{arr}.rollout.dtype")
                       if engine == "vllm" else compute),
        gpu_memory_utilization=float(_select(cfg, f"{arr}.rollout.gpu_memory_utilization", 0.5)),
        sleep_level=sleep if engine == "vllm" and device == "cuda" else 0,
        kv_cache_gib=float(kv_env) if kv_env else None,
        rollout_sequences=int(gen_rows) if gen_rows else rows_per_rank,
        max_sequence_len=int(_select(cfg, f"{arr}.rollout.max_model_len", None) or seq),
        sync_bucket_mb=int(bucket),
        held_gib=float(held_gib),
        sources=sources,
    )
