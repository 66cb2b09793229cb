"""Rule-based reward manager: decode each response, score it, put the score on its last token."""

from __future__ import annotations

import importlib
from collections import defaultdict
from typing import Any, Callable

import numpy as np
import torch

from verl.protocol import DataProto


def import_by_path(path: str) -> Any:
    """Import ``package.module.attr`` given as a dotted path, with a clear error."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"expected a dotted path like 'package.module.name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"cannot import module {module_name!r} (from {path!r}): {e}") from e
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from e


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``mask`` (B, R); rows with no 1 give -1. Returns (B,)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    masked = torch.where(mask.bool(), positions, torch.full_like(positions, -1))
    return masked.max(dim=1).values


class NaiveRewardManager:
    """Score trajectories with ``fn(data_source, solution_str, ground_truth, extra_info, **fn_kwargs)``.

    Args:
        tokenizer: decodes the response ids.
        fn: the scoring function (see the reward seam in docs/contracts.md).
        fn_kwargs: extra keyword arguments for ``fn``.
        policy_tokens_only: decode only tokens with ``response_mask == 1`` (text inserted by tools
            is never scored as if the policy had written it).
        num_examine: decoded examples to print per data source per call.
    """

    def __init__(self, tokenizer: Any, fn: Callable | str, fn_kwargs: dict | None = None,
                 policy_tokens_only: bool = True, num_examine: int = 0) -> None:
        self.tokenizer = tokenizer
        self.fn = import_by_path(fn) if isinstance(fn, str) else fn
        self.fn_kwargs = dict(fn_kwargs or {})
        self.policy_tokens_only = policy_tokens_only
        self.num_examine = num_examine

    def __call__(self, data: DataProto) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Returns ``token_level_scores`` (B, R) and per-row extra values (name -> (B,) array).

        The score sits on the last policy-sampled token (``response_mask``) whatever
        ``policy_tokens_only`` decodes: a trajectory cut by the length cap can end on observation
        tokens, and the advantage estimators do not credit a reward on a mask-0 position. A row
        with no sampled token gets its score on position 0.
        """
        responses = data.batch["responses"]
        mask = data.batch["response_mask"] if self.policy_tokens_only else data.batch["attention_mask"][:, -responses.shape[1]:]
        scores = torch.zeros(responses.shape, dtype=torch.float32)
        extras: dict[str, list[float]] = defaultdict(list)
        shown: dict[str, int] = defaultdict(int)
        last = last_token_index(data.batch["response_mask"])
        reward_models = data.non_tensor_batch.get("reward_model")
        data_sources = data.non_tensor_batch.get("data_source")
        extra_infos = data.non_tensor_batch.get("extra_info")
        for i in range(len(data)):
            ids = responses[i][mask[i].bool()].tolist()
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if reward_models is None:
                raise KeyError("reward manager: the batch has no 'reward_model' column (expected {'ground_truth': ...})")
            gt = reward_models[i]["ground_truth"] if isinstance(reward_models[i], dict) else reward_models[i]
            source = str(data_sources[i]) if data_sources is not None else "unknown"
            info = extra_infos[i] if extra_infos is not None else {}
            out = self.fn(source, text, gt, info, **self.fn_kwargs)
            if isinstance(out, dict):
                if "score" not in out:
                    raise KeyError(f"reward fn returned a dict without 'score': keys {sorted(out)}")
                score = float(out["score"])
                for k, v in out.items():
                    if k != "score" and isinstance(v, (int, float, bool, np.number)):
                        extras[k].append(float(v))
            else:
                score = float(out)
            extras["score"].append(score)
            scores[i, max(int(last[i]), 0)] = score
            if shown[source] < self.num_examine:
                shown[source] += 1
                print(f"[reward] data_source={source} score={score:.3f}\n[response] {text[:1000]}\n[ground_truth] {gt}", flush=True)
        return scores, {k: np.asarray(v, dtype=np.float64) for k, v in extras.items()}
