"""Who already holds the trainer's GPUs: processes found by ``nvidia-smi`` before a run loads anything.

A simulation server started on the same GPUs as the trainer (a missing or wrong
``CUDA_VISIBLE_DEVICES``) takes its share of each GPU; the trainer's vLLM engine then fails at start
with an out-of-memory message that names neither. The launcher's memory plan asks ``nvidia-smi``
first: each of the trainer's GPUs (the first ``NUM_GPUS_PER_NODE`` of ``CUDA_VISIBLE_DEVICES``,
given as indices or UUIDs) with the processes on it, their memory and the memory left, so the plan
counts with what is free and says by whom the rest is held.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Optional, Sequence

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class Occupant:
    pid: int
    name: str
    used_bytes: int


@dataclass(frozen=True)
class GpuState:
    index: int
    uuid: str
    total_bytes: int
    used_bytes: int
    occupants: tuple[Occupant, ...] = field(default=())

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text)) if row and any(c.strip() for c in row)]


def parse_gpus(gpu_csv: str, apps_csv: str) -> list[GpuState]:
    """GPUs from ``nvidia-smi --query-gpu=index,uuid,memory.total,memory.used --format=csv,noheader,nounits``
    and their processes from ``--query-compute-apps=gpu_uuid,pid,process_name,used_memory`` (same format)."""
    occupants: dict[str, list[Occupant]] = {}
    for row in _rows(apps_csv):
        if len(row) != 4:
            raise ValueError(f"nvidia-smi --query-compute-apps: expected 4 columns, got {row!r}")
        uuid, pid, name, used = row
        mib = int(used) if used.isdigit() else 0  # "[N/A]" where the driver does not say
        occupants.setdefault(uuid, []).append(Occupant(int(pid), name, mib * MIB))
    gpus = []
    for row in _rows(gpu_csv):
        if len(row) != 4:
            raise ValueError(f"nvidia-smi --query-gpu: expected 4 columns, got {row!r}")
        index, uuid, total, used = row
        gpus.append(GpuState(int(index), uuid, int(total) * MIB, int(used) * MIB,
                             tuple(occupants.get(uuid, ()))))
    return gpus


def trainer_gpus(gpus: Sequence[GpuState], visible: Optional[str], count: int) -> list[GpuState]:
    """The first ``count`` GPUs of ``visible`` (CUDA_VISIBLE_DEVICES: indices or UUID prefixes; None = all)."""
    if visible is None:
        chosen = list(gpus)
    else:
        chosen = []
        for item in (v.strip() for v in visible.split(",") if v.strip()):
            match = [g for g in gpus if (item.isdigit() and g.index == int(item)) or
                     (not item.isdigit() and g.uuid.startswith(item))]
            if not match:
                break  # CUDA stops at the first entry it cannot resolve
            chosen.append(match[0])
    return chosen[:count]


def query(visible: Optional[str], count: int, timeout_s: float = 10.0) -> Optional[list[GpuState]]:
    """The trainer's GPUs as ``nvidia-smi`` sees them now, or None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        gpu_csv = subprocess.run([exe, "--query-gpu=index,uuid,memory.total,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                 timeout=timeout_s, check=True).stdout
        apps_csv = subprocess.run([exe, "--query-compute-apps=gpu_uuid,pid,process_name,used_memory",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=timeout_s, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return trainer_gpus(parse_gpus(gpu_csv, apps_csv), visible, count)


def describe(gpus: Sequence[GpuState]) -> list[str]:
    """One line per GPU that other processes already use (empty when every GPU is free)."""
    lines = []
    for g in gpus:
        if not g.occupants and g.used_bytes < GIB:
            continue
        who = ", ".join(f"PID {o.pid} {o.name} ({o.used_bytes / GIB:.1f} GiB)" for o in g.occupants) or "unknown processes"
        lines.append(f"GPU {g.index} already holds {g.used_bytes / GIB:.1f} of {g.total_bytes / GIB:.1f} GiB: {who}; "
                     f"{g.free_bytes / GIB:.1f} GiB free")
    return lines
