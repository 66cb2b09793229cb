"""Resumable, seeded batch order.

``StatefulBatchIterator`` yields lists of row indices, epoch after epoch, forever. The order of
epoch ``e`` is a pure function of ``(seed, e)``, and the iterator's whole state is
``(epoch, position)``: a run restored with ``load_state_dict`` yields exactly the batches the
original run would have yielded next. Nothing else (no global RNG, no worker prefetching) is
involved.

Training uses ``drop_last=True`` (every batch has ``batch_size`` rows); validation uses
``drop_last=False`` so every row is seen (the last batch may be smaller), see ``epoch_batches``.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class StatefulBatchIterator:
    """Infinite iterator of index batches with a checkpointable position.

    Args:
        dataset_len: number of rows (>= 1).
        batch_size: rows per batch (>= 1).
        shuffle: permute the rows each epoch (permutation seeded by ``(seed, epoch)``);
            otherwise rows come in order 0..dataset_len-1.
        seed: seed of the permutations.
        drop_last: drop the last incomplete batch of each epoch.
    """

    def __init__(self, dataset_len: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True) -> None:
        if isinstance(dataset_len, bool) or not isinstance(dataset_len, (int, np.integer)) or dataset_len < 1:
            raise ValueError(f"StatefulBatchIterator: dataset_len must be a positive int, got {dataset_len!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"StatefulBatchIterator: batch_size must be a positive int, got {batch_size!r}")
        if drop_last and batch_size > dataset_len:
            raise ValueError(
                f"StatefulBatchIterator: batch_size={batch_size} > dataset_len={dataset_len} with drop_last=True "
                "gives no batch at all"
            )
        self.dataset_len = int(dataset_len)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.position = 0  # batches already yielded in the current epoch

    @property
    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.dataset_len, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.batches_per_epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row order of ``epoch``: (dataset_len,) int64, a function of (seed, epoch) only."""
        if not self.shuffle:
            return np.arange(self.dataset_len, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.dataset_len).astype(np.int64)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All batches of ``epoch`` (does not move the iterator)."""
        order = self.epoch_order(epoch).tolist()
        n = self.batches_per_epoch
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(n)]

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
        order = self.epoch_order(self.epoch)
        start = self.position * self.batch_size
        batch = order[start:start + self.batch_size].tolist()
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        """Plain ints/bools (JSON-serialisable): the position plus the settings it depends on."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "dataset_len": self.dataset_len,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the position; the settings in ``state`` must equal this iterator's, otherwise the
        resumed order would silently differ."""
        for key in ("epoch", "position", "seed", "dataset_len", "batch_size", "shuffle", "drop_last"):
            if key not in state:
                raise KeyError(f"StatefulBatchIterator.load_state_dict: state has no '{key}'")
        for key in ("seed", "dataset_len", "batch_size", "shuffle", "drop_last"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"StatefulBatchIterator.load_state_dict: checkpoint has {key}={state[key]!r} but this run has "
                    f"{key}={getattr(self, key)!r}; the data order would not continue the saved run"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
            raise ValueError(f"StatefulBatchIterator.load_state_dict: invalid epoch={epoch} position={position}")
        self.epoch, self.position = epoch, position
