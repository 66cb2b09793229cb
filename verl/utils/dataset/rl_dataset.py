"""The RL prompt dataset: parquet rows with a chat ``prompt`` column -> left-padded prompt tensors.

Each row of the parquet file(s) (ZeroSearch / Search-R1 schema, see docs/contracts.md) becomes::

    input_ids       (P,) long   prompt ids, left-padded with pad_token_id to P = max_prompt_length
    attention_mask  (P,) long   1 on prompt tokens, 0 on padding
    position_ids    (P,) long   0.. over the prompt tokens, 0 on padding
    raw_prompt_ids  list[int]   the unpadded prompt ids
    uid             str         the row's group id (derived as "{data_source}-{split}-{index}"
                                from ``extra_info`` when the parquet has no ``uid`` column)
    <every other column>        as plain python objects (lists, dicts, str, int)

The prompt text is ``tokenizer.apply_chat_template(prompt, add_generation_prompt=True)`` when
``config.apply_chat_template`` is true and the tokenizer has a chat template; otherwise the
contents of the messages joined by newlines (tokenised with the tokenizer's special tokens).

Everything is checked when the dataset is built, with errors that name the file, the column and
the rows: a missing prompt column, malformed chats, non-UTF-8 text, empty gold answers, duplicate
uids, and prompts longer than ``max_prompt_length`` (``truncation``: ``error`` lists the rows;
``left`` / ``right`` cut the prompt's start / end and warn with the rows).

Config keys (``verl/trainer/config/data/default.yaml``): ``prompt_key``, ``max_prompt_length``,
``truncation``, ``apply_chat_template``.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

TENSOR_KEYS = ("input_ids", "attention_mask", "position_ids")
TRUNCATION_MODES = ("error", "left", "right")
_GENERATED_KEYS = TENSOR_KEYS + ("raw_prompt_ids",)
_MAX_LISTED = 20


def require_config(config: Any, key: str, where: str) -> Any:
    """``config[key]``; KeyError naming the key when it is absent (no silent default)."""
    try:
        present = key in config
    except TypeError:
        present = hasattr(config, key)
    if not present:
        raise KeyError(f"{where}: config has no '{key}' (see verl/trainer/config/data/default.yaml)")
    return config[key] if hasattr(config, "__getitem__") else getattr(config, key)


def as_file_list(files: Any, what: str) -> list[str]:
    """A path or a list of paths -> list of parquet file paths; folders and missing files raise."""
    if files is None:
        raise ValueError(f"{what}: no data files given")
    paths = [files] if isinstance(files, (str, os.PathLike)) else list(files)
    if not paths:
        raise ValueError(f"{what}: the list of data files is empty")
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            inside = sorted(f for f in os.listdir(p) if f.endswith(".parquet"))
            raise IsADirectoryError(
                f"{what}: {p} is a folder; name a parquet file inside it (e.g. {os.path.join(p, 'train.parquet')}). "
                f"Parquet files there: {inside}"
            )
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{what}: data file {p} does not exist")
        out.append(p)
    return out


def read_parquet(path: str) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path}: cannot read as parquet ({e})") from e


def validate_columns(table: pa.Table, path: str) -> None:
    """Full Arrow validation of every column, which includes UTF-8 validity of all text."""
    for name in table.column_names:
        try:
            table.column(name).validate(full=True)
        except pa.ArrowInvalid as e:
            raise ValueError(f"{path}: column '{name}' is malformed (e.g. text that is not valid UTF-8): {e}") from e


def check_text(value: Any, where: str) -> str:
    """A str, or UTF-8 bytes decoded; anything else (or undecodable bytes) raises."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: text is not valid UTF-8 ({e})") from e
    if not isinstance(value, str):
        raise TypeError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def check_chat(value: Any, where: str) -> list[dict]:
    """A non-empty list of {"role": str, "content": str} messages."""
    if not isinstance(value, list) or not value:
        raise TypeError(f"{where}: expected a non-empty chat list [{{'role': ..., 'content': ...}}], got {value!r:.200}")
    chat = []
    for j, msg in enumerate(value):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise TypeError(f"{where}: message {j} must be a dict with 'role' and 'content', got {msg!r:.200}")
        chat.append({**msg, "role": check_text(msg["role"], f"{where} message {j} role"),
                     "content": check_text(msg["content"], f"{where} message {j} content")})
    return chat


def check_answers(value: Any, where: str) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ValueError(f"{where}: expected a non-empty list of strings, got {value!r:.200}")


def format_rows(locations: Sequence[tuple[str, int]]) -> str:
    """``[(file, row), ...]`` -> "a.parquet rows 1, 3; b.parquet rows 0 (3 rows)", the first 20 rows shown."""
    by_file: dict[str, list[str]] = {}
    for path, row in locations[:_MAX_LISTED]:
        by_file.setdefault(path, []).append(str(row))
    shown = "; ".join(f"{path} rows {', '.join(rows)}" for path, rows in by_file.items())
    more = " ..." if len(locations) > _MAX_LISTED else ""
    return f"{shown}{more} ({len(locations)} rows in all)"


def left_pad(ids: Sequence[int], length: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad one prompt.

    Args:
        ids: the prompt ids, ``len(ids) <= length``.
    Returns:
        ``input_ids``, ``attention_mask``, ``position_ids``: each (length,) long.
    """
    n = len(ids)
    if n > length:
        raise ValueError(f"left_pad: {n} ids do not fit in {length}")
    input_ids = torch.full((length,), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(length, dtype=torch.long)
    position_ids = torch.zeros(length, dtype=torch.long)
    if n:
        input_ids[length - n:] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[length - n:] = 1
        position_ids[length - n:] = torch.arange(n, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


class RLHFDataset(Dataset):
    """Prompts for RL rollouts (see the module docstring).

    Args:
        files: a parquet path or a list of them (rows are concatenated in order).
        tokenizer: a Hugging Face tokenizer with a pad token.
        config: the ``data`` config (``prompt_key``, ``max_prompt_length``, ``truncation``,
            ``apply_chat_template``).
        max_samples: keep only the first N rows (None = all).
    """

    def __init__(self, files: Any, tokenizer: Any, config: Any, max_samples: int | None = None) -> None:
        name = "RLHFDataset"
        self.files = as_file_list(files, name)
        self.tokenizer = tokenizer
        self.prompt_key = str(require_config(config, "prompt_key", name))
        self.max_prompt_length = int(require_config(config, "max_prompt_length", name))
        self.truncation = str(require_config(config, "truncation", name))
        use_template = bool(require_config(config, "apply_chat_template", name))
        if self.truncation not in TRUNCATION_MODES:
            raise ValueError(f"{name}: truncation must be one of {TRUNCATION_MODES}, got {self.truncation!r}")
        if self.max_prompt_length < 1:
            raise ValueError(f"{name}: max_prompt_length must be >= 1, got {self.max_prompt_length}")
        if tokenizer.pad_token_id is None:
            raise ValueError(f"{name}: the tokenizer has no pad token; set tokenizer.pad_token before building the dataset")
        if max_samples is not None and int(max_samples) < 1:
            raise ValueError(f"{name}: max_samples must be >= 1 or None, got {max_samples}")
        self.use_chat_template = use_template and getattr(tokenizer, "chat_template", None) is not None

        self._tables: list[pa.Table] = []
        self._locations: list[tuple[int, int]] = []  # global row -> (file index, row in file)
        self._chats: list[list[dict]] = []
        self._uids: list[str] = []
        columns: list[str] | None = None
        for f_idx, path in enumerate(self.files):
            remaining = None if max_samples is None else int(max_samples) - len(self._locations)
            if remaining is not None and remaining <= 0:
                break
            table = read_parquet(path)
            if remaining is not None and table.num_rows > remaining:
                table = table.slice(0, remaining)
            file_columns = self._check_table(table, path)
            if columns is None:
                columns = file_columns
            elif set(file_columns) != set(columns):
                raise ValueError(
                    f"{name}: {path} has columns {sorted(file_columns)} but {self.files[0]} has {sorted(columns)}; "
                    "all files of one dataset need the same columns"
                )
            self._tables.append(table)
            self._load_rows(table, path, f_idx)
        self.columns = columns or []
        self._check_unique_uids()
        self._check_lengths()

    # ------------------------------------------------------------------ loading and checks
    def _check_table(self, table: pa.Table, path: str) -> list[str]:
        names = table.column_names
        if self.prompt_key not in names:
            raise KeyError(f"{path}: no prompt column '{self.prompt_key}' (data.prompt_key); columns are {names}")
        clash = [c for c in names if c in _GENERATED_KEYS]
        if clash:
            raise ValueError(f"{path}: columns {clash} clash with the tensors the dataset generates; rename them")
        if table.num_rows == 0:
            raise ValueError(f"{path}: the file has no rows")
        validate_columns(table, path)
        return names + ([] if "uid" in names else ["uid"])

    def _load_rows(self, table: pa.Table, path: str, f_idx: int) -> None:
        prompts = table.column(self.prompt_key).to_pylist()
        checked = ("uid", "data_source", "extra_info", "golden_answers", "reward_model")
        cols = {c: table.column(c).to_pylist() for c in checked if c in table.column_names}
        for r, value in enumerate(prompts):
            where = f"{path} row {r}"
            self._chats.append(check_chat(value, f"{where} column '{self.prompt_key}'"))
            if "golden_answers" in cols:
                check_answers(cols["golden_answers"][r], f"{where} column 'golden_answers'")
            if "reward_model" in cols:
                rm = cols["reward_model"][r]
                if not isinstance(rm, dict) or "ground_truth" not in rm:
                    raise ValueError(f"{where} column 'reward_model': expected a dict with 'ground_truth', got {rm!r:.200}")
                gt = rm["ground_truth"]
                if isinstance(gt, dict) and "target" in gt:
                    check_answers(gt["target"], f"{where} column 'reward_model.ground_truth.target'")
            self._uids.append(self._row_uid(cols, r, where))
            self._locations.append((f_idx, r))

    @staticmethod
    def _row_uid(cols: dict[str, list], r: int, where: str) -> str:
        if "uid" in cols:
            uid = cols["uid"][r]
            if not isinstance(uid, str) or not uid:
                raise ValueError(f"{where} column 'uid': expected a non-empty string, got {uid!r}")
            return uid
        source = cols["data_source"][r] if "data_source" in cols else None
        extra = cols["extra_info"][r] if "extra_info" in cols else None
        if not isinstance(source, str) or not isinstance(extra, dict) or "split" not in extra or "index" not in extra:
            raise ValueError(
                f"{where}: no 'uid' column, and the uid cannot be derived: it needs 'data_source' (str) and "
                f"'extra_info' with 'split' and 'index'; got data_source={source!r}, extra_info={extra!r:.200}"
            )
        return f"{source}-{extra['split']}-{extra['index']}"

    def _location(self, i: int) -> tuple[str, int]:
        f_idx, r = self._locations[i]
        return self.files[f_idx], r

    def _check_unique_uids(self) -> None:
        counts = Counter(self._uids)
        dups = [u for u, c in counts.items() if c > 1]
        if dups:
            first = [i for i, u in enumerate(self._uids) if u == dups[0]]
            raise ValueError(
                f"RLHFDataset: uids must be unique (they are the GRPO group ids); {len(dups)} repeat, e.g. "
                f"{dups[0]!r} at {format_rows([self._location(i) for i in first])}. Add a unique 'uid' column "
                "(scripts/data_process/qa_search.py writes one)"
            )

    def _prompt_text(self, chat: list[dict]) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return "\n".join(m["content"] for m in chat)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        # A chat template already writes every special token it wants (e.g. a BOS).
        return self.tokenizer(texts, add_special_tokens=not self.use_chat_template)["input_ids"]

    def _check_lengths(self) -> None:
        too_long: list[int] = []
        chunk = 1024
        for start in range(0, len(self._chats), chunk):
            texts = [self._prompt_text(c) for c in self._chats[start:start + chunk]]
            for k, ids in enumerate(self._encode(texts)):
                if len(ids) > self.max_prompt_length:
                    too_long.append(start + k)
        if not too_long:
            return
        rows = format_rows([self._location(i) for i in too_long])
        if self.truncation == "error":
            raise ValueError(
                f"RLHFDataset: prompts longer than max_prompt_length={self.max_prompt_length} tokens at {rows}. "
                "Raise data.max_prompt_length or set data.truncation=left|right"
            )
        warnings.warn(
            f"RLHFDataset: {len(too_long)} prompts are longer than max_prompt_length={self.max_prompt_length} and are "
            f"cut on the {self.truncation}: {rows}",
            stacklevel=3,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._locations)

    def prompt_ids(self, i: int) -> list[int]:
        """The unpadded (possibly truncated) prompt ids of row ``i``."""
        ids = list(self._encode([self._prompt_text(self._chats[i])])[0])
        if len(ids) > self.max_prompt_length:
            ids = ids[-self.max_prompt_length:] if self.truncation == "left" else ids[:self.max_prompt_length]
        return ids

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"RLHFDataset: row {i} out of range for {len(self)} rows")
        i %= len(self)
        f_idx, r = self._locations[i]
        table = self._tables[f_idx]
        row = table.slice(r, 1).to_pylist()[0]
        row[self.prompt_key] = [dict(m) for m in self._chats[i]]
        row["uid"] = self._uids[i]
        ids = self.prompt_ids(i)
        row.update(left_pad(ids, self.max_prompt_length, self.tokenizer.pad_token_id))
        row["raw_prompt_ids"] = ids
        return row


def collate_fn(rows: Sequence[dict[str, Any]]):
    """Rows of ``RLHFDataset`` -> DataProto: tensors stacked to (B, P), everything else as numpy
    object arrays of length B."""
    from verl.protocol import DataProto

    if not rows:
        raise ValueError("collate_fn: empty batch")
    keys = list(rows[0])
    for j, row in enumerate(rows[1:], 1):
        if set(row) != set(keys):
            raise ValueError(f"collate_fn: row {j} has keys {sorted(row)} but row 0 has {sorted(keys)}")
    tensors: dict[str, torch.Tensor] = {}
    non_tensors: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row[key] for row in rows]
        if isinstance(values[0], torch.Tensor):
            tensors[key] = torch.stack(values)
        else:
            arr = np.empty(len(values), dtype=object)
            for j, v in enumerate(values):
                arr[j] = v
            non_tensors[key] = arr
    return DataProto.from_dict(tensors=tensors, non_tensors=non_tensors)
