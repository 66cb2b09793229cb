"""The GPU smoke run's table: per phase, the memory plan next to what the run measured.

    python -m scripts.gpu_smoke_report --name 3b --plan plan.txt --metrics metrics.jsonl [--out table.md]

``plan.txt`` is what ``train_grpo.sh --plan`` printed for the run; ``metrics.jsonl`` the run's
per-step metrics. Per phase (rollout, log-prob, update, weight sync) the table gives the planned
peak, the measured peak over the steps (``memory/max_allocated_gib/*``: this trainer process's
tensors; ``memory/device_used_gib/*``: the whole GPU at the end of the phase, the rollout engine
and a simulator sharing the GPU included) and the seconds of each step. Below it: the
weight-sync seconds, the device memory the engine's sleep freed (``memory/sleep_freed_gib``, mean
over ranks) and ``actor/rollout_old_logprob_abs_diff`` (mean |rollout log-prob - actor
log-prob| over policy tokens: near 0 when the engine has the actor's weights, large when a sync
went stale), per step. Prints the table and appends it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Sequence

PHASES = ("rollout", "log-prob", "update", "weight sync")
_PHASE_LINE = re.compile(r"^plan: (rollout|log-prob|update|weight sync)\s+([0-9.]+) GiB = ")


def parse_plan(text: str) -> tuple[dict[str, float], str]:
    """(planned GiB per phase, the verdict line) of a ``--plan`` printout."""
    phases = {m.group(1): float(m.group(2)) for m in map(_PHASE_LINE.match, text.splitlines()) if m}
    verdicts = [line for line in text.splitlines() if line.startswith("plan: peak ")]
    if set(phases) != set(PHASES) or len(verdicts) != 1:
        raise ValueError(f"not a memory plan printout: phases {sorted(phases)}, {len(verdicts)} verdict lines")
    return phases, verdicts[0]


def read_metrics(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{n}: not JSON ({err})") from None
    if not rows:
        raise ValueError(f"{path}: no steps logged")
    return rows


def phase_seconds(row: dict) -> dict[str, float | None]:
    """Seconds of each phase in one step's metrics (None where the step has no such timing)."""
    get = row.get
    sync = get("timing_s/weight_sync")
    update = get("timing_s/update_actor")
    log_prob = None if get("timing_s/old_log_prob") is None else get("timing_s/old_log_prob") + get("timing_s/ref", 0.0)
    return {"rollout": get("timing_s/rollout"), "log-prob": log_prob,
            "update": None if update is None else update - (sync or 0.0), "weight sync": sync}


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _peak(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if key in r]
    return max(values) if values else None


def render(name: str, plan: dict[str, float], verdict: str, rows: list[dict]) -> str:
    lines = [f"### {name}", "", verdict, "",
             "| phase | plan GiB | max allocated GiB (trainer) | device used GiB (whole GPU) | measured ÷ plan | "
             "seconds per step |",
             "| --- | --- | --- | --- | --- | --- |"]
    for phase in PHASES:
        allocated = _peak(rows, f"memory/max_allocated_gib/{phase}")
        used = _peak(rows, f"memory/device_used_gib/{phase}")
        measured = max((v for v in (allocated, used) if v is not None), default=None)
        ratio = None if measured is None or not plan[phase] else measured / plan[phase]
        seconds = " / ".join(_fmt(phase_seconds(r)[phase]) for r in rows)
        lines.append(f"| {phase} | {plan[phase]:.1f} | {_fmt(allocated)} | {_fmt(used)} | {_fmt(ratio, 2)} | {seconds} |")
    diffs = [r.get("actor/rollout_old_logprob_abs_diff") for r in rows]
    steps = " / ".join(_fmt(r.get("timing_s/step")) for r in rows)
    lines += ["", f"steps: {len(rows)}; step seconds {steps}; weight sync seconds "
              + " / ".join(_fmt(r.get("timing_s/weight_sync"), 2) for r in rows)
              + "; memory freed by sleep GiB " + " / ".join(_fmt(r.get("memory/sleep_freed_gib")) for r in rows)
              + "; actor/rollout_old_logprob_abs_diff "
              + " / ".join("n/a (not logged)" if d is None else f"{d:.4f}" for d in diffs), ""]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_smoke_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="row label, e.g. the model shape")
    parser.add_argument("--plan", required=True, help="the --plan printout of the run")
    parser.add_argument("--metrics", required=True, help="the run's metrics.jsonl")
    parser.add_argument("--out", default=None, help="markdown file to append the table to")
    args = parser.parse_args(argv)
    plan, verdict = parse_plan(Path(args.plan).read_text(encoding="utf-8"))
    text = render(args.name, plan, verdict, read_metrics(Path(args.metrics)))
    print(text, end="")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return text


if __name__ == "__main__":
    main()
