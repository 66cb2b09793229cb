"""Loading Hugging Face models for the workers, and the remove-padding (packing) helpers.

Remove padding: the real tokens of a (B, T) batch are packed into one (1, N) sequence whose
position ids restart at 0 for each row. transformers builds a block-diagonal causal mask from
such position ids when the model is called with ``attention_mask=None`` and no KV cache
(verified for Qwen2 with sdpa and eager attention), so no compute is spent on padding.
"""

from __future__ import annotations

import functools
import logging

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification, AutoTokenizer

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "auto")


def torch_dtype(name: str) -> torch.dtype:
    """float32 | bfloat16 | float16 -> the torch dtype."""
    if name not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


@functools.cache
def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package can be imported here (checked once per process)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # not installed, or built for another torch / CUDA
        return False
    return True


@functools.cache
def _auto_attn(device: str) -> str:
    """What ``auto`` means on ``device``; warns once per process when cuda has no flash_attn."""
    if device == "cuda" and flash_attn_available():
        return "flash_attention_2"
    if device == "cuda":
        logger.warning("model.attn_implementation=auto: flash_attn does not import, using sdpa (slower, and "
                       "quadratic memory in a packed micro-batch's tokens); pip install flash-attn to use it")
    return "sdpa"


def check_attn_implementation(name: str, device: str, dtype: torch.dtype | None = None) -> str:
    """Validate ``model.attn_implementation`` for ``device`` and the compute ``dtype``; resolve ``auto``.

    ``auto``: flash_attention_2 on cuda when flash_attn imports and ``dtype`` is 16-bit, else sdpa
    (a warning when flash_attn is missing on cuda). ``flash_attention_2`` needs cuda, flash_attn
    and a 16-bit compute dtype; anything else is a ValueError naming the key.
    """
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"model.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")
    sixteen_bit = dtype in (torch.bfloat16, torch.float16)
    if name == "auto":
        return _auto_attn(device) if dtype is None or sixteen_bit else "sdpa"
    if name == "flash_attention_2":
        if device != "cuda":
            raise ValueError("model.attn_implementation=flash_attention_2 needs trainer.device=cuda; use sdpa on cpu")
        if dtype is not None and not sixteen_bit:
            raise ValueError(f"model.attn_implementation=flash_attention_2 computes in bfloat16 or float16, but "
                             f"model.dtype is {str(dtype).replace('torch.', '')}; set model.dtype=bfloat16 or "
                             "model.attn_implementation=sdpa")
        if not flash_attn_available():
            raise ValueError("model.attn_implementation=flash_attention_2 but the flash_attn package does not "
                             "import; install flash-attn or use model.attn_implementation=auto (sdpa fallback)")
    return name


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer saved at ``path``."""
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _on_meta(model_cls, config, dtype: torch.dtype, attn_implementation: str,
             trust_remote_code: bool) -> torch.nn.Module:
    """``model_cls`` of ``config`` with every parameter and buffer on the meta device (no storage)."""
    with torch.device("meta"):
        return model_cls.from_config(config, dtype=dtype, attn_implementation=attn_implementation,
                                     trust_remote_code=trust_remote_code)


def load_causal_lm(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                   trust_remote_code: bool = False, meta: bool = False) -> torch.nn.Module:
    """``AutoModelForCausalLM`` from ``path`` in ``dtype`` (on cpu; the caller moves or shards it).

    ``attn_implementation`` ``auto`` is resolved for a cuda device when cuda is available, else cpu.
    meta: build the model of ``path``'s config on the meta device instead, reading no weights
    (``verl.utils.fsdp_utils.fill_from_rank0`` gives it rank 0's weights after sharding).
    """
    if attn_implementation == "auto":
        attn_implementation = check_attn_implementation("auto", "cuda" if torch.cuda.is_available() else "cpu", dtype)
    if meta:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        return _on_meta(AutoModelForCausalLM, config, dtype, attn_implementation, trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation,
                                                trust_remote_code=trust_remote_code)


def load_value_model(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                     trust_remote_code: bool = False, meta: bool = False) -> torch.nn.Module:
    """A value model: the LM body of ``path`` with a fresh scalar head (``num_labels=1``).

    Uses ``AutoModelForTokenClassification`` (for Qwen2: ``Qwen2ForTokenClassification``, whose
    body weights load from a causal-LM folder; ``lm_head`` is dropped and ``score`` is new).
    The head's dropout is set to 0 so that values are deterministic in training mode.
    Output: ``.logits`` of shape (B, T, 1). meta: as in ``load_causal_lm``.
    """
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    config.num_labels = 1
    config.classifier_dropout = 0.0
    if meta:
        return _on_meta(AutoModelForTokenClassification, config, dtype, attn_implementation, trust_remote_code)
    return AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=dtype,
                                                           attn_implementation=attn_implementation,
                                                           trust_remote_code=trust_remote_code)


def unpad_input(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack the real tokens of a padded batch into one row.

    input_ids, attention_mask, position_ids: (B, T). Returns (packed_ids (1, N), packed_positions
    (1, N), indices (N,)) where N = attention_mask.sum() and ``indices`` are the flat positions
    (b * T + t) of the kept tokens, in row-major order. Position ids must restart at 0 for each
    row (as ``compute_position_id_with_mask`` makes them) for the packed attention to be right.
    """
    if input_ids.shape != attention_mask.shape or input_ids.shape != position_ids.shape or input_ids.dim() != 2:
        raise ValueError(f"unpad_input: input_ids {tuple(input_ids.shape)}, attention_mask "
                         f"{tuple(attention_mask.shape)} and position_ids {tuple(position_ids.shape)} must be one (B, T)")
    indices = torch.nonzero(attention_mask.reshape(-1).bool(), as_tuple=False).squeeze(-1)
    packed_ids = input_ids.reshape(-1)[indices].unsqueeze(0)
    packed_pos = position_ids.reshape(-1)[indices].unsqueeze(0)
    return packed_ids, packed_pos, indices


def pad_input(values: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Scatter packed per-token values back into a zero-filled (B, T, ...) tensor.

    values: (N, ...); indices: (N,) from ``unpad_input``. Differentiable in ``values``.
    """
    if values.shape[0] != indices.shape[0]:
        raise ValueError(f"pad_input: {values.shape[0]} values for {indices.shape[0]} indices")
    out = values.new_zeros((batch * seqlen, *values.shape[1:]))
    out = out.index_copy(0, indices, values)
    return out.reshape(batch, seqlen, *values.shape[1:])
