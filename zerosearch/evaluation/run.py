"""Scores along training: evaluate every weight export of a run and tabulate score against step.

    python -m zerosearch.evaluation --run SAVE_DIR/EXPERIMENT --data ... --search-engine wiki [options] [--out DIR]

A training run with ``trainer.save_exports`` leaves ``RUN/exports/global_step_N/`` (a Hugging Face
folder) at every saved step. Each export is evaluated with the same options into
``OUT/global_step_N/`` (the outputs of one ``--model`` evaluation, with the run's saved task
settings: ``zerosearch/evaluation/train_config.py``; its ``run.json`` names the file); an export whose
``OUT/global_step_N/results.json`` exists is already scored and skipped, so the command can be
rerun while training goes on (delete that folder to score a step again). ``OUT`` defaults to
``RUN/eval/<search engine>`` (``..._rag`` with ``--rag``). Then, from every scored step:

    scores.csv           one row per step: ``step``, then ``<data source>/<metric>`` for each data
                         source and both averages (``mean_over_sources``, ``mean_over_rows``),
                         metrics em, sub_em, f1 (fractions in [0, 1])
    scores.md            one table per metric (percent): one row per step, a column per data
                         source and per average
    curve_<source>.png   em, sub_em and f1 against the step, one figure per data source and one
                         per average
"""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from verl.utils.checkpoint import EXPORTS_DIR, export_steps
from zerosearch.evaluation.report import AVERAGES, SCORE_KEYS, TABLE_COLUMNS

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
CSV_FILE = "scores.csv"
MARKDOWN_FILE = "scores.md"


def run_exports(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, export folder)]`` of a run, ascending; an error naming the folder when there are none."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"--run {run} is not a folder (expected a run folder SAVE_DIR/EXPERIMENT)")
    found = [(step, Path(path)) for step, path in export_steps(str(run))]
    if not found:
        raise FileNotFoundError(f"--run {run}: no exports in {run / EXPORTS_DIR} (global_step_N folders, written "
                                "at every save when trainer.save_exports is true)")
    return found


def default_out(run_dir: str | Path, search_engine: str, rag: bool) -> Path:
    return Path(run_dir) / "eval" / (f"{search_engine}_rag" if rag else search_engine)


def _sources(results_by_step: dict[int, dict]) -> list[str]:
    """Data sources in first-seen order over the steps, then the averages."""
    names: list[str] = []
    for results in results_by_step.values():
        names += [s for s in results if s not in AVERAGES and s not in names]
    return names + list(AVERAGES)


def score_rows(results_by_step: dict[int, dict]) -> tuple[list[str], list[list[Any]]]:
    """(CSV header, one row per step ascending); a source a step lacks gives empty cells."""
    sources = _sources(results_by_step)
    header = ["step"] + [f"{source}/{metric}" for source in sources for metric in SCORE_KEYS]
    rows = []
    for step in sorted(results_by_step):
        results = results_by_step[step]
        rows.append([step] + [results[s][m] if s in results else "" for s in sources for m in SCORE_KEYS])
    return header, rows


def markdown_tables(results_by_step: dict[int, dict]) -> str:
    """One table per metric: a row per step, a column per data source and per average (percent)."""
    sources = _sources(results_by_step)
    parts = []
    for title, metric in TABLE_COLUMNS:
        lines = [f"## {title} (%)", "", "| step | " + " | ".join(sources) + " |", "|---:|" + "---:|" * len(sources)]
        for step in sorted(results_by_step):
            results = results_by_step[step]
            cells = [f"{100.0 * results[s][metric]:.2f}" if s in results else "" for s in sources]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _file_name(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", source)


def plot_curves(results_by_step: dict[int, dict], out_dir: Path) -> list[Path]:
    """``curve_<source>.png`` per data source and per average: em, sub_em, f1 against the step."""
    from matplotlib.figure import Figure

    paths = []
    for source in _sources(results_by_step):
        steps = [s for s in sorted(results_by_step) if source in results_by_step[s]]
        fig = Figure(figsize=(6, 4))
        ax = fig.add_subplot()
        for title, metric in TABLE_COLUMNS:
            ax.plot(steps, [100.0 * results_by_step[s][source][metric] for s in steps], marker="o", label=title)
        ax.set_xlabel("training step")
        ax.set_ylabel("score (%)")
        ax.set_title(source)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"curve_{_file_name(source)}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def evaluate_run(run_dir: str | Path, data_files: Sequence[str], search_engine: str, out_dir: str | Path,
                 evaluate_fn: Callable[..., dict], **options: Any) -> dict[str, Any]:
    """Evaluate every unscored export of ``run_dir`` with ``evaluate_fn(model, data_files,
    search_engine, out, **options)`` (``zerosearch.evaluation.evaluate.evaluate``), then write the score
    table and curves of every scored step under ``out_dir``.

    Returns:
        ``{"scored": [steps evaluated now], "skipped": [steps already scored], "results": {step:
        results.json content}, "files": {"csv", "markdown", "curves"}}``.
    """
    exports = run_exports(run_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored, skipped = [], []
    for step, export in exports:
        step_out = out / f"global_step_{step}"
        if (step_out / RESULTS_FILE).is_file():
            skipped.append(step)
            logger.info("step %d: already scored (%s), skipped", step, step_out / RESULTS_FILE)
            continue
        logger.info("step %d: evaluating %s", step, export)
        evaluate_fn(str(export), data_files, search_engine, step_out, **options)
        scored.append(step)
    results_by_step = {}
    for step, _ in exports:
        path = out / f"global_step_{step}" / RESULTS_FILE
        results_by_step[step] = json.loads(path.read_text(encoding="utf-8"))
    header, rows = score_rows(results_by_step)
    csv_path = out / CSV_FILE
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    md_path = out / MARKDOWN_FILE
    md_path.write_text(markdown_tables(results_by_step), encoding="utf-8")
    curves = plot_curves(results_by_step, out)
    return {"scored": scored, "skipped": skipped, "results": results_by_step,
            "files": {"csv": str(csv_path), "markdown": str(md_path), "curves": [str(p) for p in curves]}}
