"""The demo's claim across seeds: one row per run (``results.json`` of ``python -m zerosearch.miniature.demo``)
with each policy's EM, then the mean and the sample standard deviation over the runs::

    python -m zerosearch.miniature.seeds outputs/demo_seed0 outputs/demo_seed1 outputs/demo_seed2

Also prints, per run, the paired differences the claim rests on (RL over the warm start, RL over
RAG, simulated against real search) with their 95 % intervals.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Sequence

COLUMNS = ("warm_start", "rag", "sim_trained", "real_trained", "fixed_noise", "majority", "scripted")
CLAIMS = ("sim_trained - warm_start", "real_trained - warm_start", "sim_trained - rag", "real_trained - rag",
          "sim_trained - real_trained", "sim_trained - fixed_noise")


def load(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (run python -m zerosearch.miniature.demo out_dir={run_dir})")
    return json.loads(path.read_text(encoding="utf-8"))


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = math.fsum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: a row per run (seed, split, N, EM of each policy, minutes), then mean and sd."""
    cols = [c for c in COLUMNS if any(c in r for r in runs.values())]
    lines = ["| run | seed | N | " + " | ".join(cols) + " | wall (min) |",
             "|---|---:|---:|" + "---:|" * len(cols) + "---:|"]
    for name, r in runs.items():
        ems = " | ".join(f"{r[c]['em']:.3f}" if c in r else "-" for c in cols)
        n = next(r[c]["n"] for c in cols if c in r)
        lines.append(f"| {name} | {r['config']['seed']} | {n} | {ems} | {r['wall_seconds'] / 60:.1f} |")
    for label, k in (("mean", 0), ("sd", 1)):
        cells = []
        for c in cols:
            values = [r[c]["em"] for r in runs.values() if c in r]
            cells.append(f"{mean_sd(values)[k]:.3f}" if values else "-")
        walls = mean_sd([r["wall_seconds"] / 60 for r in runs.values()])[k]
        lines.append(f"| {label} | | | " + " | ".join(cells) + f" | {walls:.1f} |")
    return "\n".join(lines)


def claims(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: a row per run with each paired difference and its 95 % interval."""
    names = [c for c in CLAIMS if any(c in r.get("comparisons", {}) for r in runs.values())]
    lines = ["| run | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for run, r in runs.items():
        cells = []
        for c in names:
            d = r.get("comparisons", {}).get(c)
            cells.append(f"{d['em_diff']:+.3f} ± {d['ci95_half']:.3f}" if d else "-")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.miniature.seeds", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="demo output folders (each with results.json)")
    args = parser.parse_args(argv)
    runs = {Path(d).name: load(d) for d in args.runs}
    text = table(runs) + "\n\nPaired EM differences on the same questions (95 % interval):\n\n" + claims(runs)
    print(text)
    return text


if __name__ == "__main__":
    main()
