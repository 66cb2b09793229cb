"""Plot the training curves of a run from its metrics.jsonl.

Usage::

    python scripts/plot_metrics.py RUN_DIR|METRICS_JSONL [--out DIR] [--keys KEY ...]

Reads the jsonl metric log the trainer writes (one JSON object per line, ``{"step": int,
"<metric>": float, ...}``; ``<log_dir>/metrics.jsonl``). Given a folder, it uses the one
metrics.jsonl under it. Writes one PNG per panel into ``--out`` (default: ``plots/`` next to the
log): reward, validation EM/F1, p_noisy, turns, search failures, and one per ``--keys`` entry.
A panel whose metrics are not in the log is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Series = dict[str, list[tuple[int, float]]]

REWARD_KEYS = ("critic/score/mean", "reward/score", "reward/score/mean", "critic/rewards/mean")


def _is_val_em_f1(key: str) -> bool:
    """Validation EM / F1 keys, e.g. val/nq/em, val/f1, val-core/hotpotqa/sub_em."""
    if not key.startswith("val"):
        return False
    parts = set(re.split(r"[/_\-.]", key.lower()))
    return bool(parts & {"em", "f1", "subem"})


@dataclass(frozen=True)
class Panel:
    """One output image: the file name, a title, and which metric keys it draws."""

    name: str
    title: str
    select: Callable[[str], bool]
    ylabel: str = ""


PANELS = (
    Panel("reward", "Training reward", lambda k: k in REWARD_KEYS, "score"),
    Panel("val_em_f1", "Validation EM / F1", _is_val_em_f1, "score"),
    Panel("p_noisy", "Curriculum: probability of noisy documents", lambda k: k in ("search/p_noisy", "search/noisy_share"), "probability"),
    Panel("turns", "Search turns per trajectory", lambda k: k.startswith("search/turns"), "turns"),
    Panel("search_failures", "Search failure rate", lambda k: k == "search/failure_rate", "share of searches"),
)


class MetricsFileError(ValueError):
    """The metrics log cannot be found or read."""


def find_metrics_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else the single ``metrics.jsonl`` under the folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise MetricsFileError(f"{path}: no such file or folder")
    for candidate in (path / "metrics.jsonl", path / "logs" / "metrics.jsonl"):
        if candidate.is_file():
            return candidate
    found = sorted(path.rglob("metrics.jsonl"))
    if not found:
        raise MetricsFileError(f"{path}: no metrics.jsonl in this folder or below (log with trainer.logger including jsonl)")
    if len(found) > 1:
        listing = "\n  ".join(str(f) for f in found)
        raise MetricsFileError(f"{path}: several metrics.jsonl files; pass one of them:\n  {listing}")
    return found[0]


def load_metrics(path: str | Path) -> Series:
    """Read a metrics.jsonl into ``{key: [(step, value), ...]}`` sorted by step.

    Non-numeric, boolean, NaN and infinite values are left out. A malformed last line (a run still
    writing) is skipped with a note on stderr; a malformed line elsewhere raises MetricsFileError.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    series: Series = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            if number == len(lines):
                print(f"note: {path}:{number}: incomplete last line skipped ({err})", file=sys.stderr)
                continue
            raise MetricsFileError(f"{path}:{number}: not a JSON object per line ({err})") from None
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step):
            raise MetricsFileError(f"{path}:{number}: 'step' must be an integer, got {step!r}")
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(key, []).append((int(step), float(value)))
    for points in series.values():
        points.sort(key=lambda p: p[0])
    return series


def _draw(keys: list[str], series: Series, title: str, ylabel: str, out_file: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        steps, values = zip(*series[key])
        ax.plot(steps, values, label=key, marker="o" if len(steps) <= 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def plot_metrics(series: Series, out_dir: str | Path, extra_keys: tuple[str, ...] = ()) -> tuple[list[Path], list[str]]:
    """Write the standard panels and one image per extra key.

    Returns:
        (written PNG paths, notes about skipped panels/keys).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    for panel in PANELS:
        keys = sorted(k for k in series if panel.select(k))
        if not keys:
            notes.append(f"skipped {panel.name}: no matching metric in the log")
            continue
        target = out / f"{panel.name}.png"
        _draw(keys, series, panel.title, panel.ylabel, target)
        written.append(target)
    for key in extra_keys:
        if key not in series:
            notes.append(f"skipped --keys {key}: not in the log")
            continue
        target = out / f"key_{_safe(key)}.png"
        _draw([key], series, key, "", target)
        written.append(target)
    return written, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plot_metrics.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="run folder (searched for metrics.jsonl) or the metrics.jsonl file")
    parser.add_argument("--out", default=None, help="output folder (default: plots/ next to metrics.jsonl)")
    parser.add_argument("--keys", nargs="*", default=[], help="more metric keys to plot, one image each")
    args = parser.parse_args(argv)
    try:
        metrics_file = find_metrics_file(args.path)
        series = load_metrics(metrics_file)
    except (MetricsFileError, OSError) as err:
        print(f"plot_metrics: error: {err}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else metrics_file.parent / "plots"
    written, notes = plot_metrics(series, out_dir, tuple(args.keys))
    for note in notes:
        print(f"note: {note}")
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"plot_metrics: nothing to plot in {metrics_file} ({len(series)} metric keys found)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
