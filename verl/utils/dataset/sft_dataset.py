"""Supervised fine-tuning dataset: parquet prompt/response pairs -> right-padded training rows.

Per row::

    input_ids       (L,) long   prompt ids + response ids + eos, right-padded with pad_token_id
    attention_mask  (L,) long   1 on real tokens
    position_ids    (L,) long   0.. over real tokens, 0 on padding
    loss_mask       (L,) long   1 on the response tokens (eos included), 0 on prompt and padding

``L = max_length``. ``loss_mask`` is aligned with ``input_ids`` (position t says whether token t is
a response token); a next-token loss uses ``loss_mask[:, 1:]`` against ``logits[:, :-1]``.

Prompt: a chat list ``[{"role", "content"}, ...]`` or a string (a string is treated as one user
message). With ``apply_chat_template`` and a tokenizer that has a template, the prompt text is
``apply_chat_template(chat, add_generation_prompt=True)``; otherwise the message contents joined by
newlines. Prompt and response are tokenised separately, so the response tokens are exactly
``tokenizer(response)`` followed by ``eos_token_id``.

Rows longer than ``max_length`` follow ``truncation``:
    error  raise, listing the rows;
    left   drop tokens from the start of the prompt (a row whose response alone exceeds
           max_length is an error);
    right  drop tokens from the end of the response (a row whose prompt leaves no room for a
           response token is an error).
Cut rows are reported in one warning.

With ``loss_exclude_key`` set, that column holds, per row, a list of ``[start, end)`` character
spans of the response whose tokens get no loss (``loss_mask`` 0): text the model should see but not
learn to write, such as a placeholder answer. A token is excluded when its characters overlap a
span; the eos token always keeps its loss. This needs a fast tokenizer (character offsets).

Config keys (``verl/trainer/config/sft_trainer.yaml``, ``data``): ``prompt_key``,
``response_key``, ``max_length``, ``truncation``, ``apply_chat_template``, ``loss_exclude_key``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.utils.data import Dataset

from verl.utils.dataset.rl_dataset import (
    TRUNCATION_MODES,
    as_file_list,
    check_chat,
    check_text,
    format_rows,
    read_parquet,
    require_config,
    validate_columns,
)


class SFTDataset(Dataset):
    """Prompt/response pairs for SFT (see the module docstring).

    Args:
        files: a parquet path or a list of them.
        tokenizer: a Hugging Face tokenizer with pad and eos tokens.
        config: the SFT ``data`` config.
        max_samples: keep only the first N rows (None = all).
    """

    def __init__(self, files: Any, tokenizer: Any, config: Any, max_samples: int | None = None) -> None:
        name = "SFTDataset"
        self.files = as_file_list(files, name)
        self.tokenizer = tokenizer
        self.prompt_key = str(require_config(config, "prompt_key", name))
        self.response_key = str(require_config(config, "response_key", name))
        self.max_length = int(require_config(config, "max_length", name))
        self.truncation = str(require_config(config, "truncation", name))
        use_template = bool(require_config(config, "apply_chat_template", name))
        exclude_key = config.get("loss_exclude_key")
        if self.truncation not in TRUNCATION_MODES:
            raise ValueError(f"{name}: truncation must be one of {TRUNCATION_MODES}, got {self.truncation!r}")
        if self.max_length < 2:
            raise ValueError(f"{name}: max_length must be >= 2, got {self.max_length}")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError(f"{name}: the tokenizer needs a pad token and an eos token "
                             f"(pad={tokenizer.pad_token_id}, eos={tokenizer.eos_token_id})")
        self.use_chat_template = use_template and getattr(tokenizer, "chat_template", None) is not None

        prompts: list[str] = []
        responses: list[str] = []
        excluded: list[list[tuple[int, int]]] = []
        self._where: list[tuple[str, int]] = []
        for path in self.files:
            if max_samples is not None and len(prompts) >= int(max_samples):
                break
            table = read_parquet(path)
            for key in (self.prompt_key, self.response_key):
                if key not in table.column_names:
                    raise KeyError(f"{path}: no column '{key}' (data.prompt_key / data.response_key); "
                                   f"columns are {table.column_names}")
            validate_columns(table.select([self.prompt_key, self.response_key]), path)
            if exclude_key is not None and exclude_key not in table.column_names:
                raise KeyError(f"{path}: no column '{exclude_key}' (data.loss_exclude_key); "
                               f"columns are {table.column_names}")
            spans = (table.column(exclude_key).to_pylist() if exclude_key is not None
                     else [None] * table.num_rows)
            for r, (p, resp, span) in enumerate(zip(table.column(self.prompt_key).to_pylist(),
                                                    table.column(self.response_key).to_pylist(), spans)):
                if max_samples is not None and len(prompts) >= int(max_samples):
                    break
                where = f"{path} row {r}"
                prompts.append(self._prompt_text(p, f"{where} column '{self.prompt_key}'"))
                resp = check_text(resp, f"{where} column '{self.response_key}'")
                if not resp:
                    raise ValueError(f"{where} column '{self.response_key}': the response is empty")
                responses.append(resp)
                excluded.append(_check_spans(span, len(resp), f"{where} column '{exclude_key}'")
                                if exclude_key is not None else [])
                self._where.append((path, r))
        if not prompts:
            raise ValueError(f"{name}: no rows in {self.files}")
        p_ids = tokenizer(prompts, add_special_tokens=not self.use_chat_template)["input_ids"]
        if exclude_key is None:
            r_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
            learn = [[1] * (len(r) + 1) for r in r_ids]
        else:
            if not getattr(tokenizer, "is_fast", False):
                raise ValueError(f"{name}: data.loss_exclude_key needs a fast tokenizer (character offsets); "
                                 f"{type(tokenizer).__name__} is not one")
            enc = tokenizer(responses, add_special_tokens=False, return_offsets_mapping=True)
            r_ids = enc["input_ids"]
            learn = [[int(not any(a < e and b > s for s, e in spans)) for a, b in offsets] + [1]
                     for offsets, spans in zip(enc["offset_mapping"], excluded)]
        # per row: prompt ids, response ids + eos, and per response token 1 if it is learnt
        # (0 inside an excluded span)
        self._rows = [(list(p), list(r) + [tokenizer.eos_token_id], m) for p, r, m in zip(p_ids, r_ids, learn)]
        self._apply_truncation()

    def _prompt_text(self, value: Any, where: str) -> str:
        if isinstance(value, (str, bytes)):
            chat = [{"role": "user", "content": check_text(value, where)}]
        else:
            chat = check_chat(value, where)
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return "\n".join(m["content"] for m in chat)

    def _apply_truncation(self) -> None:
        long_rows = [i for i, (p, r, _) in enumerate(self._rows) if len(p) + len(r) > self.max_length]
        if not long_rows:
            return
        listed = format_rows([self._where[i] for i in long_rows])
        if self.truncation == "error":
            raise ValueError(f"SFTDataset: rows longer than max_length={self.max_length} tokens at {listed}. "
                             "Raise data.max_length or set data.truncation=left|right")
        if self.truncation == "left":
            bad = [i for i in long_rows if len(self._rows[i][1]) > self.max_length]
            if bad:
                raise ValueError(f"SFTDataset: truncation=left cannot keep the whole response within "
                                 f"max_length={self.max_length} at {format_rows([self._where[i] for i in bad])}")
            for i in long_rows:
                p, r, m = self._rows[i]
                self._rows[i] = (p[len(p) + len(r) - self.max_length:], r, m)
        else:
            bad = [i for i in long_rows if len(self._rows[i][0]) >= self.max_length]
            if bad:
                raise ValueError(f"SFTDataset: truncation=right leaves no response token within "
                                 f"max_length={self.max_length} at {format_rows([self._where[i] for i in bad])}")
            for i in long_rows:
                p, r, m = self._rows[i]
                keep = self.max_length - len(p)
                self._rows[i] = (p, r[:keep], m[:keep])
        warnings.warn(f"SFTDataset: {len(long_rows)} rows are longer than max_length={self.max_length} and were cut "
                      f"on the {self.truncation}: {listed}", stacklevel=3)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"SFTDataset: row {i} out of range for {len(self)} rows")
        prompt, response, learn = self._rows[i]
        n_p, n = len(prompt), len(prompt) + len(response)
        input_ids = torch.full((self.max_length,), self.tokenizer.pad_token_id, dtype=torch.long)
        input_ids[:n] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask = torch.zeros(self.max_length, dtype=torch.long)
        attention_mask[:n] = 1
        position_ids = torch.zeros(self.max_length, dtype=torch.long)
        position_ids[:n] = torch.arange(n, dtype=torch.long)
        loss_mask = torch.zeros(self.max_length, dtype=torch.long)
        loss_mask[n_p:n] = torch.tensor(learn, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                "loss_mask": loss_mask}


def _check_spans(value: Any, length: int, where: str) -> list[tuple[int, int]]:
    """``value`` as a list of (start, end) character spans within a response of ``length`` characters."""
    expected = f"a list of [start, end) character spans with 0 <= start < end <= {length} (the response's length)"
    if value is None:
        raise ValueError(f"{where}: missing; expected {expected} ([] for none)")
    spans = []
    for span in value:
        if (not isinstance(span, (list, tuple)) or len(span) != 2 or not all(isinstance(x, int) for x in span)
                or not 0 <= span[0] < span[1] <= length):
            raise ValueError(f"{where}: {span!r} is not a valid span; expected {expected}")
        spans.append((int(span[0]), int(span[1])))
    return spans
