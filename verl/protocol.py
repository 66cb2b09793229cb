"""DataProto: the one batch type passed between the trainer and the workers.

A DataProto holds three things:

- ``batch``: a plain dict of tensors, every one with dim 0 == number of rows;
- ``non_tensor_batch``: a dict of numpy ``dtype=object`` arrays, dim 0 == number of rows
  (strings, token-id lists, dicts: anything per row that is not a tensor);
- ``meta_info``: a dict that belongs to the whole batch (sampling settings, metrics, flags).

Row operations (indexing, chunk/split/concat, repeat) act on ``batch`` and ``non_tensor_batch``
together and carry ``meta_info`` along. The object is a plain dataclass of dicts, so it pickles
(Ray sends it between processes) without any custom hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

Index = Union[int, slice, Sequence[int], np.ndarray, torch.Tensor]


def _object_array(name: str, values: Any) -> np.ndarray:
    """Turn a list or array into a numpy object array whose dim 0 indexes rows."""
    if isinstance(values, np.ndarray):
        return values if values.dtype == object else values.astype(object)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"DataProto: non-tensor '{name}' must be a list or numpy array, got {type(values).__name__}")
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):  # element-wise, so equal-length lists stay one object per row
        out[i] = v
    return out


def _values_equal(a: Any, b: Any) -> bool:
    """Equality for one row value of a non-tensor column (scalars, lists, arrays, tensors, dicts)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        both = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        return both and _arrays_equal(a.astype(object), b.astype(object))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    result = a == b
    return bool(result) if isinstance(result, (bool, np.bool_)) else False


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    return all(_values_equal(x, y) for x, y in zip(a.reshape(-1), b.reshape(-1)))


def _normalise_index(idx: Index, length: int) -> Union[slice, np.ndarray]:
    """A slice, or a 1-D int64 numpy array of row positions."""
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, (int, np.integer)):
        i = int(idx)
        if not -length <= i < length:
            raise IndexError(f"DataProto: row {i} out of range for {length} rows")
        return np.array([i % length], dtype=np.int64)
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (length,):
            raise IndexError(f"DataProto: boolean index of shape {arr.shape} for {length} rows")
        return np.nonzero(arr)[0]
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise IndexError(f"DataProto: index must be an int, slice or 1-D int/bool array, got {arr.dtype} {arr.shape}")
    if arr.min() < -length or arr.max() >= length:
        raise IndexError(f"DataProto: index out of range for {length} rows")
    return arr.astype(np.int64) % length if length else arr.astype(np.int64)


@dataclass
class DataProto:
    """A batch of rows: tensors, non-tensor object arrays and batch-wide meta info."""

    batch: dict[str, torch.Tensor] = field(default_factory=dict)
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.non_tensor_batch = {k: _object_array(k, v) for k, v in self.non_tensor_batch.items()}
        self.check_consistency()

    # ------------------------------------------------------------------ construction / checks
    @classmethod
    def from_dict(
        cls,
        tensors: Optional[dict[str, torch.Tensor]] = None,
        non_tensors: Optional[dict[str, Any]] = None,
        meta_info: Optional[dict] = None,
    ) -> "DataProto":
        """Build from dicts; non-tensor values may be lists or numpy arrays."""
        return cls(batch=dict(tensors or {}), non_tensor_batch=dict(non_tensors or {}), meta_info=dict(meta_info or {}))

    def check_consistency(self) -> None:
        """Raise ValueError/TypeError unless every column is well-typed and has the same row count."""
        lengths: dict[str, int] = {}
        for k, v in self.batch.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"DataProto: batch['{k}'] must be a torch.Tensor, got {type(v).__name__}")
            if v.dim() == 0:
                raise ValueError(f"DataProto: batch['{k}'] is a 0-dim tensor; every tensor needs a row dimension")
            lengths[f"batch['{k}']"] = v.shape[0]
        for k, v in self.non_tensor_batch.items():
            if not isinstance(v, np.ndarray) or v.dtype != object:
                raise TypeError(f"DataProto: non_tensor_batch['{k}'] must be a numpy object array")
            if v.ndim == 0:
                raise ValueError(f"DataProto: non_tensor_batch['{k}'] is 0-dim; it needs a row dimension")
            lengths[f"non_tensor_batch['{k}']"] = v.shape[0]
        if len(set(lengths.values())) > 1:
            raise ValueError(f"DataProto: columns disagree on the number of rows: {lengths}")
        if not isinstance(self.meta_info, dict):
            raise TypeError(f"DataProto: meta_info must be a dict, got {type(self.meta_info).__name__}")

    def __len__(self) -> int:
        for v in self.batch.values():
            return v.shape[0]
        for v in self.non_tensor_batch.values():
            return v.shape[0]
        return 0

    def __repr__(self) -> str:
        tensors = {k: (tuple(v.shape), str(v.dtype)) for k, v in self.batch.items()}
        return (
            f"DataProto(rows={len(self)}, batch={tensors}, non_tensor_batch={list(self.non_tensor_batch)}, "
            f"meta_info={list(self.meta_info)})"
        )

    # ------------------------------------------------------------------ row selection
    def __getitem__(self, idx: Index) -> "DataProto":
        """Rows by int (a 1-row DataProto), slice, list of ints, or int/bool numpy array / tensor."""
        rows = _normalise_index(idx, len(self))
        if isinstance(rows, slice):
            batch = {k: v[rows] for k, v in self.batch.items()}
            non_tensors = {k: v[rows] for k, v in self.non_tensor_batch.items()}
        else:
            batch = {k: v[torch.as_tensor(rows, device=v.device)] for k, v in self.batch.items()}
            non_tensors = {k: v[rows] for k, v in self.non_tensor_batch.items()}
        return DataProto(batch=batch, non_tensor_batch=non_tensors, meta_info=dict(self.meta_info))

    def select(
        self,
        batch_keys: Optional[Iterable[str]] = None,
        non_tensor_batch_keys: Optional[Iterable[str]] = None,
        meta_info_keys: Optional[Iterable[str]] = None,
    ) -> "DataProto":
        """A new DataProto with only the named keys (None keeps all of that part). Tensors are shared."""
        batch = _pick(self.batch, batch_keys, "batch")
        non_tensors = _pick(self.non_tensor_batch, non_tensor_batch_keys, "non_tensor_batch")
        meta = _pick(self.meta_info, meta_info_keys, "meta_info")
        return DataProto(batch=batch, non_tensor_batch=non_tensors, meta_info=meta)

    def pop(
        self,
        batch_keys: Iterable[str] = (),
        non_tensor_batch_keys: Iterable[str] = (),
        meta_info_keys: Iterable[str] = (),
    ) -> "DataProto":
        """Remove the named keys from this DataProto and return them as a new one."""
        popped = self.select(list(batch_keys), list(non_tensor_batch_keys), list(meta_info_keys))
        for k in popped.batch:
            del self.batch[k]
        for k in popped.non_tensor_batch:
            del self.non_tensor_batch[k]
        for k in popped.meta_info:
            del self.meta_info[k]
        return popped

    def union(self, other: "DataProto") -> "DataProto":
        """Add ``other``'s columns and meta info to this DataProto (in place) and return self.

        A key present in both must hold equal values, else ValueError. Row counts must match
        unless one side has no rows at all.
        """
        if len(self) and len(other) and len(self) != len(other):
            raise ValueError(f"DataProto.union: {len(self)} rows vs {len(other)} rows")
        for k, v in other.batch.items():
            mine = self.batch.get(k)
            if mine is not None and not (mine.shape == v.shape and torch.equal(mine, v.to(mine.device))):
                raise ValueError(f"DataProto.union: batch['{k}'] differs between the two DataProtos")
        for k, v in other.non_tensor_batch.items():
            if k in self.non_tensor_batch and not _arrays_equal(self.non_tensor_batch[k], v):
                raise ValueError(f"DataProto.union: non_tensor_batch['{k}'] differs between the two DataProtos")
        for k, v in other.meta_info.items():
            if k in self.meta_info and not _values_equal(self.meta_info[k], v):
                raise ValueError(f"DataProto.union: meta_info['{k}'] differs between the two DataProtos")
        self.batch.update(other.batch)
        self.non_tensor_batch.update(other.non_tensor_batch)
        self.meta_info.update(other.meta_info)
        self.check_consistency()
        return self

    # ------------------------------------------------------------------ split / join
    def chunk(self, chunks: int) -> list["DataProto"]:
        """``chunks`` equal parts in row order; the row count must divide evenly (else ValueError)."""
        if not isinstance(chunks, int) or chunks <= 0:
            raise ValueError(f"DataProto.chunk: chunks must be a positive int, got {chunks!r}")
        if len(self) % chunks:
            raise ValueError(f"DataProto.chunk: {len(self)} rows do not divide into {chunks} chunks (pad first)")
        return self.split(len(self) // chunks) if len(self) else [self[0:0] for _ in range(chunks)]

    def split(self, split_size: int) -> list["DataProto"]:
        """Consecutive parts of ``split_size`` rows; the last may be shorter."""
        if not isinstance(split_size, int) or split_size <= 0:
            raise ValueError(f"DataProto.split: split_size must be a positive int, got {split_size!r}")
        return [self[start : start + split_size] for start in range(0, len(self), split_size)]

    @staticmethod
    def concat(data: Sequence["DataProto"]) -> "DataProto":
        """Rows of all parts in order; every part needs the same keys. meta_info comes from the first."""
        if len(data) == 0:
            raise ValueError("DataProto.concat: got an empty list")
        first = data[0]
        for i, part in enumerate(data[1:], start=1):
            if set(part.batch) != set(first.batch) or set(part.non_tensor_batch) != set(first.non_tensor_batch):
                raise ValueError(
                    f"DataProto.concat: part {i} has keys {sorted(part.batch)} / {sorted(part.non_tensor_batch)}, "
                    f"part 0 has {sorted(first.batch)} / {sorted(first.non_tensor_batch)}"
                )
        batch = {k: torch.cat([p.batch[k] for p in data], dim=0) for k in first.batch}
        non_tensors = {k: np.concatenate([p.non_tensor_batch[k] for p in data], axis=0) for k in first.non_tensor_batch}
        return DataProto(batch=batch, non_tensor_batch=non_tensors, meta_info=dict(first.meta_info))

    def repeat(self, repeat_times: int, interleave: bool = True) -> "DataProto":
        """Each row ``repeat_times`` times: interleaved a,a,b,b (group copies together) or tiled a,b,a,b."""
        if not isinstance(repeat_times, int) or repeat_times <= 0:
            raise ValueError(f"DataProto.repeat: repeat_times must be a positive int, got {repeat_times!r}")
        n = len(self)
        if interleave:
            rows = np.repeat(np.arange(n), repeat_times)
        else:
            rows = np.tile(np.arange(n), repeat_times)
        return self[rows]

    def to(self, device: Union[str, torch.device]) -> "DataProto":
        """Move every tensor to ``device`` (in place); returns self."""
        self.batch = {k: v.to(device) for k, v in self.batch.items()}
        return self


def _pick(source: dict, keys: Optional[Iterable[str]], part: str) -> dict:
    if keys is None:
        return dict(source)
    if isinstance(keys, str):
        raise TypeError(f"DataProto: {part} keys must be a list of names, got the string {keys!r}")
    keys = list(keys)
    missing = [k for k in keys if k not in source]
    if missing:
        raise KeyError(f"DataProto: {part} has no key(s) {missing}; available: {sorted(source)}")
    return {k: source[k] for k in keys}


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Append copies of the leading rows until len(data) is a multiple of ``size_divisor``.

    Returns (padded data, pad_size). The copies cycle through the rows from the start, so a
    batch shorter than the pad is repeated as many times as needed.
    """
    if not isinstance(size_divisor, int) or size_divisor <= 0:
        raise ValueError(f"pad_dataproto_to_divisor: size_divisor must be a positive int, got {size_divisor!r}")
    pad_size = (-len(data)) % size_divisor
    if pad_size == 0:
        return data, 0
    if len(data) == 0:
        raise ValueError("pad_dataproto_to_divisor: cannot pad a DataProto with no rows")
    padding = data[np.arange(pad_size) % len(data)]
    return DataProto.concat([data, padding]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    """Drop the last ``pad_size`` rows that ``pad_dataproto_to_divisor`` added."""
    if not isinstance(pad_size, int) or not 0 <= pad_size <= len(data):
        raise ValueError(f"unpad_dataproto: pad_size must be an int in [0, {len(data)}], got {pad_size!r}")
    return data[: len(data) - pad_size] if pad_size else data
