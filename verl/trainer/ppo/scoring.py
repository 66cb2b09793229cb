"""Roll out, score and summarise held-out prompts: the one path the trainer's validation and the
evaluation front ends share.

- ``rollout_and_score``: an agent loop's greedy (validation) rollout of a batch, then the reward
  manager's scores;
- ``trajectory_records``: one record per trajectory, in one schema (``RECORD_KEYS`` plus the
  score names and any non-tensor columns asked for);
- ``summarize``: means per data source and two named averages over them, ``mean_over_sources``
  (each data source weighs the same, as the "Avg." column of QA papers) and ``mean_over_rows``
  (each trajectory weighs the same).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from verl.agent_loop.base import AgentLoopBase, GenerateFn
from verl.protocol import DataProto

MEAN_OVER_SOURCES = "mean_over_sources"
MEAN_OVER_ROWS = "mean_over_rows"
AVERAGES = (MEAN_OVER_SOURCES, MEAN_OVER_ROWS)
# Fields of every record, in this order; the score names and the requested columns follow.
RECORD_KEYS = ("uid", "data_source", "prompt", "trajectory")


def rollout_and_score(agent_loop: AgentLoopBase, generate: GenerateFn,
                      reward_manager: Callable[[DataProto], tuple[Any, dict[str, np.ndarray]]],
                      batch: DataProto, step: int) -> tuple[DataProto, dict[str, np.ndarray]]:
    """Validation rollout of ``batch`` and its scores.

    Returns the agent loop's output (B rows) and the reward manager's extras: per-row scores by
    name, each an array of B floats.
    """
    out = agent_loop.run(batch, generate, step=step, validate=True)
    _, extras = reward_manager(out)
    return out, extras


def plain_json(value: Any) -> Any:
    """numpy arrays and scalars (as DataProto non-tensors hold them), tensors, lists, tuples and
    dicts, recursively -> plain JSON values."""
    if hasattr(value, "tolist"):  # numpy arrays and scalars, tensors
        return plain_json(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    return value


def trajectory_records(out: DataProto, extras: dict[str, Sequence[float]], tokenizer: Any,
                       columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One record per row of an agent-loop output ``out`` (tensors ``prompts`` (B, P) left-padded,
    ``responses`` (B, R), ``attention_mask`` (B, P+R)).

    Keys: ``uid`` (None when the batch has no ``uid`` column), ``data_source`` ("unknown" when it
    has no ``data_source`` column), ``prompt`` and ``trajectory`` (decoded, special tokens kept),
    each score of ``extras`` as a float, then each non-tensor column in ``columns`` the batch has,
    as plain JSON values.
    """
    nt = out.non_tensor_batch
    width = out.batch["prompts"].shape[1]
    records = []
    for i in range(len(out)):
        mask = out.batch["attention_mask"][i].bool()
        prompt_ids = out.batch["prompts"][i][mask[:width]].tolist()
        response_ids = out.batch["responses"][i][mask[width:]].tolist()
        rec: dict[str, Any] = {
            "uid": plain_json(nt["uid"][i]) if "uid" in nt else None,
            "data_source": str(nt["data_source"][i]) if "data_source" in nt else "unknown",
            "prompt": tokenizer.decode(prompt_ids, skip_special_tokens=False),
            "trajectory": tokenizer.decode(response_ids, skip_special_tokens=False),
        }
        for name, values in extras.items():
            rec[name] = float(values[i])
        for col in columns:
            if col in nt:
                rec[col] = plain_json(nt[col][i])
        records.append(rec)
    return records


def summarize(records: Iterable[dict], score_keys: Sequence[str],
              group_key: str = "data_source") -> dict[str, dict[str, float]]:
    """Mean of each of ``score_keys`` per ``group_key`` value (first-seen order), then both averages.

    Returns ``{source: {key: mean, "n": rows}, ..., "mean_over_sources": {...}, "mean_over_rows":
    {...}}``; both averages carry ``n`` = all rows. A record without a key raises KeyError naming it;
    no records, or a source named like an average, raise ValueError.
    """
    if not score_keys:
        raise ValueError("summarize: give at least one score key")
    per_source: dict[str, dict[str, list[float]]] = {}
    for k, rec in enumerate(records):
        for key in (group_key, *score_keys):
            if key not in rec:
                raise KeyError(f"summarize: record {k} has no '{key}'")
        scores = per_source.setdefault(str(rec[group_key]), {key: [] for key in score_keys})
        for key in score_keys:
            scores[key].append(float(rec[key]))
    if not per_source:
        raise ValueError("summarize: no records to summarize")
    reserved = sorted(set(per_source) & set(AVERAGES))
    if reserved:
        raise ValueError(f"summarize: {reserved} is reserved for an average and cannot be a {group_key}")
    results: dict[str, dict[str, float]] = {}
    for source, scores in per_source.items():
        n = len(scores[score_keys[0]])
        results[source] = {key: math.fsum(scores[key]) / n for key in score_keys}
        results[source]["n"] = n
    sources = list(results)
    total = sum(results[s]["n"] for s in sources)
    results[MEAN_OVER_SOURCES] = {key: math.fsum(results[s][key] for s in sources) / len(sources)
                                  for key in score_keys}
    results[MEAN_OVER_SOURCES]["n"] = total
    results[MEAN_OVER_ROWS] = {key: math.fsum(math.fsum(per_source[s][key]) for s in sources) / total
                               for key in score_keys}
    results[MEAN_OVER_ROWS]["n"] = total
    return results
