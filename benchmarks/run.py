"""``make bench``: run every benchmark row, print one markdown table, write benchmarks/RESULTS.md.

    python -m benchmarks.run [--only search_fanout rollout ...] [--out benchmarks/RESULTS.md]
                             [--workdir DIR] [--budget-s 1740]

First ``benchmarks.prepare`` builds the shared models and data in the work folder (a temporary
folder unless ``--workdir`` is given). Then each row module runs in its own process with a time
limit (``MODULES``); a module that fails or runs out of time leaves its rows as ``n/a (reason)``,
so the table is always written. The limits are cut further when the whole run's budget
(``--budget-s``) is running out.

Beside the results file goes its machine-readable twin (``RESULTS.json``: each row's measurement
and the run that made it). A run with ``--only`` merges into them: its rows replace theirs, the
other rows keep their measurements and their run's command, date and machine (``--fresh``: write
this run's rows alone).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path
from typing import Sequence

from benchmarks.common import (REPO_ROOT, Measurement, RowSpec, RunRecord, log, machine_info, now_utc,
                               read_measurements, read_results_record, render_merged_results, render_table,
                               write_results_record)

# (module name under benchmarks/, time limit in seconds), in run order.
MODULES: tuple[tuple[str, int], ...] = (
    ("bench_search_fanout", 240),
    ("bench_rollout", 420),
    ("bench_update_efficiency", 240),
    ("bench_cpu_profile", 240),
    ("bench_step_anatomy", 300),
    ("bench_peer_trl", 360),
    ("bench_memory", 300),
    ("bench_weight_sync", 420),
    ("bench_plan_memory", 360),
    ("bench_logprob_memory", 180),
)


def row_order(spec) -> tuple[int, str]:
    """Sort key of a row: its number, then its letter ("2b" -> (2, "b"); "10" after "9")."""
    digits = re.match(r"\d*", spec.key).group(0)
    return (int(digits) if digits else 0, spec.key[len(digits):])


# Building the shared models and data (benchmarks/prepare.py) before the rows, at most this long.
PREPARE_LIMIT_S = 360
DEFAULT_BUDGET_S = 29 * 60
# Offline hubs, no telemetry, in-process vLLM, no Ray auth prompt; the caller's values win.
BENCH_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "WANDB_MODE": "disabled",
    "PYTHONUNBUFFERED": "1",
}


def short_name(module: str) -> str:
    return module.removeprefix("bench_")


def module_specs(module: str) -> list[RowSpec]:
    specs = getattr(import_module(f"benchmarks.{module}"), "SPECS", None)
    if not specs or not all(isinstance(s, RowSpec) for s in specs):
        raise TypeError(f"benchmarks/{module}.py must define SPECS, a non-empty list of RowSpec")
    return list(specs)


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in BENCH_ENV.items():
        env.setdefault(key, value)
    return env


def run_child(cmd: list[str], limit_s: float) -> str | None:
    """Run ``cmd`` from the repository root in its own session; why it ended badly, or None."""
    problem = None
    try:
        # a new session, so that a time-out stops the module's helpers (servers, Ray) with it
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=bench_env(), start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
            if rc != 0:
                problem = f"the module exited with code {rc}"
        except subprocess.TimeoutExpired:
            problem = f"timed out after {limit_s:.0f} s"
            _stop_group(proc)
    except OSError as exc:
        problem = f"could not start: {exc}"
    return problem


def run_module(module: str, limit_s: float, workdir: Path, python: str) -> tuple[dict[str, Measurement], str | None]:
    """Run one row module in a child process; (its measurements, why it ended badly or None)."""
    out = workdir / f"{module}.json"
    out.unlink(missing_ok=True)
    problem = run_child([python, "-m", f"benchmarks.{module}", "--workdir", str(workdir), "--out", str(out)], limit_s)
    try:
        return read_measurements(out), problem
    except ValueError as exc:
        return {}, f"unreadable results ({exc})"


def _stop_group(proc: subprocess.Popen) -> None:
    import signal

    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def merge_results(measurements: dict[str, Measurement], run: RunRecord, previous: Path | None,
                  known: dict[str, RowSpec]) -> tuple[dict[str, Measurement], list[RunRecord], dict[str, int]]:
    """This run's rows, merged over the rows of ``previous`` (a results record) when it is given and
    exists: (measurements, runs, row -> run index). Rows no module declares any more are dropped."""
    if previous is None:
        return dict(measurements), [run], {key: 0 for key in measurements}
    if not previous.is_file():
        log(f"no {previous}: the results hold this run's rows only")
        return dict(measurements), [run], {key: 0 for key in measurements}
    old, runs, old_rows = read_results_record(previous)
    kept = {key: m for key, m in old.items() if key in known and key not in measurements}
    row_runs = {key: old_rows[key] for key in kept}
    row_runs.update({key: len(runs) for key in measurements})
    return {**kept, **measurements}, [*runs, run], row_runs


def main(argv: Sequence[str] | None = None) -> int:
    names = [short_name(m) for m, _ in MODULES]
    parser = argparse.ArgumentParser(description="run the benchmarks and write the results table")
    parser.add_argument("--only", nargs="+", choices=names, default=None, help="run only these modules")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "RESULTS.md"), help="results file")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="time budget of the whole run")
    parser.add_argument("--fresh", action="store_true",
                        help="with --only: write only this run's rows, not merged into the existing results")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")

    chosen = [(m, limit) for m, limit in MODULES if args.only is None or short_name(m) in args.only]
    specs = {m: module_specs(m) for m, _ in MODULES}  # every module's rows: a merge keeps the others'
    known = {s.key: s for rows in specs.values() for s in rows}
    command = "make bench" if os.environ.get("MAKELEVEL") else "python -m benchmarks.run " + shlex.join(
        list(argv) if argv is not None else sys.argv[1:])
    started, t0, load_at_start = now_utc(), time.monotonic(), os.getloadavg()[0]
    workdir_ctx = tempfile.TemporaryDirectory(prefix="zerosearch-bench-") if args.workdir is None else None
    workdir = Path(args.workdir or workdir_ctx.name)
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"benchmarks: {', '.join(short_name(m) for m, _ in chosen)}; work folder {workdir}; "
        f"budget {args.budget_s / 60:.0f} min")
    measurements: dict[str, Measurement] = {}
    try:
        log(f"--- prepare: shared models and data (limit {PREPARE_LIMIT_S} s)")
        start = time.monotonic()
        problem = run_child([sys.executable, "-m", "benchmarks.prepare", "--workdir", str(workdir)],
                            min(PREPARE_LIMIT_S, args.budget_s / 3))
        log(f"--- prepare done in {time.monotonic() - start:.0f} s" + (f" ({problem}; rows build what is missing)"
                                                                        if problem else ""))
        for module, limit in chosen:
            left = args.budget_s - (time.monotonic() - t0)
            limit_s = min(limit, left)
            keys = [s.key for s in specs[module]]
            if limit_s < 30:
                problem = "skipped: the run's time budget is spent"
                got: dict[str, Measurement] = {}
            else:
                log(f"--- {short_name(module)} (rows {', '.join(keys)}; limit {limit_s:.0f} s)")
                start = time.monotonic()
                got, problem = run_module(module, limit_s, workdir, sys.executable)
                log(f"--- {short_name(module)} done in {time.monotonic() - start:.0f} s"
                    + (f" ({problem})" if problem else ""))
            for key in keys:
                measurements[key] = got.get(key) or Measurement(key, error=problem or "the module wrote no result")
    finally:
        if workdir_ctx is not None:
            workdir_ctx.cleanup()

    elapsed = time.monotonic() - t0
    machine = machine_info()
    machine["load average (1 min) at start / end"] = f"{load_at_start:.1f} / {os.getloadavg()[0]:.1f}"
    run = RunRecord(command, started, elapsed, machine)
    record = Path(args.out).with_suffix(".json")
    merged, runs, row_runs = merge_results(measurements, run, record if args.only and not args.fresh else None, known)
    all_specs = sorted((known[k] for k in merged), key=row_order)  # table in row order
    Path(args.out).write_text(render_merged_results(all_specs, merged, runs, row_runs), encoding="utf-8")
    write_results_record(record, merged, runs, row_runs)
    print()
    print(render_table(sorted((known[k] for k in measurements), key=row_order), measurements))
    print()
    log(f"wrote {args.out} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
