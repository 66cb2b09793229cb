"""scripts/launch_simulation_server.sh on CPU: start, wait for /health, print client settings, fail loudly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from verl.utils.distributed import get_free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "launch_simulation_server.sh"
CORPUS = ["Doc 1: The bridge spans the river.", "Query: who built it? Doc 2: It opened in 1931."] * 30


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from zerosearch.miniature.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("launch") / "tiny", size="tiny", corpus_texts=CORPUS,
                                vocab_size=512, kind="simulation"))


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(pid_file: Path) -> None:
    """Stop the server the script left running (its pid is in the pid file) and wait for it."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _run(args, timeout=300):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _check_serving(proc, port: int, log_dir: Path, name: str) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"train script keys: IP 127.0.0.1 PORT {port} SIM_MODEL_NAME {name} SIM_PROTOCOL openai" in proc.stdout
    assert (f"retriever.simulation.host=127.0.0.1 retriever.simulation.port={port} "
            f"retriever.simulation.model={name} retriever.simulation.protocol=openai") in proc.stdout
    assert (log_dir / f"simulation_server_{port}.log").is_file()
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=120, json={
        "model": name, "messages": [{"role": "user", "content": "Doc 1:"}], "max_tokens": 4, "temperature": 0})
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.slow
def test_hf_engine_background(tiny_model, tmp_path):
    port = get_free_port("127.0.0.1")
    pid_file = tmp_path / f"simulation_server_{port}.pid"
    try:
        proc = _run([tiny_model, "ENGINE", "hf", "PORT", str(port), "LOG_DIR", str(tmp_path),
                     "SERVED_MODEL_NAME", "sim-hf", "WAIT_TIMEOUT", "180"])
        _check_serving(proc, port, tmp_path, "sim-hf")
        assert pid_file.is_file() and "kill" in proc.stdout
        assert "sglang_native" in proc.stdout  # the HF server also speaks /generate
        # A second server on the same port is refused before anything starts.
        again = _run([tiny_model, "ENGINE", "hf", "PORT", str(port), "LOG_DIR", str(tmp_path)])
        assert again.returncode == 2 and "already answers" in again.stderr
    finally:
        _stop(pid_file)


@pytest.mark.slow
def test_foreground_stops_the_server_on_sigterm(tiny_model, tmp_path):
    port = get_free_port("127.0.0.1")
    proc = subprocess.Popen(["bash", str(SCRIPT), tiny_model, "ENGINE", "hf", "PORT", str(port), "LOG_DIR",
                             str(tmp_path), "WAIT_TIMEOUT", "180", "--foreground"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    pid_file = tmp_path / f"simulation_server_{port}.pid"
    try:
        deadline = time.monotonic() + 200
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("train script keys:"):
                break
        server_pid = int(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        assert not _alive(server_pid)
        assert not pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop(pid_file)


@pytest.mark.slow
def test_a_dying_server_fails_with_the_log_tail(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no_such_architecture"}')
    proc = _run([str(broken), "ENGINE", "hf", "PORT", str(get_free_port("127.0.0.1")), "LOG_DIR", str(tmp_path), "WAIT_TIMEOUT", "180"])
    assert proc.returncode == 1
    assert "exited" in proc.stderr and "last lines of" in proc.stderr


@pytest.mark.slow
def test_wait_timeout_stops_the_server(tiny_model, tmp_path):
    port = get_free_port("127.0.0.1")
    proc = _run([tiny_model, "ENGINE", "hf", "PORT", str(port), "LOG_DIR", str(tmp_path), "WAIT_TIMEOUT", "1"])
    assert proc.returncode == 1 and "WAIT_TIMEOUT=1" in proc.stderr
    assert not (tmp_path / f"simulation_server_{port}.pid").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.parametrize("args, needle", [
    (["ENGINE", "tgi"], "ENGINE"),
    (["PORT", "99999"], "PORT"),
    (["TP", "0"], "TP"),
    (["ENGINE", "hf", "TP", "2"], "TP"),
    (["DTYPE", "int8"], "DTYPE"),
    (["FOO", "1"], "unknown key 'FOO'"),
    (["PORT"], "no value"),
])
def test_bad_arguments_exit_2(tiny_model, args, needle):
    proc = _run([tiny_model, *args], timeout=60)
    assert proc.returncode == 2
    assert needle in proc.stderr


def test_model_path_is_checked(tmp_path):
    proc = _run([str(tmp_path / "nope")], timeout=60)
    assert proc.returncode == 2 and "MODEL_PATH" in proc.stderr


@pytest.mark.slow
def test_vllm_engine_on_cpu(tiny_model, tmp_path):
    port = get_free_port("127.0.0.1")
    pid_file = tmp_path / f"simulation_server_{port}.pid"
    try:
        proc = _run([tiny_model, "ENGINE", "vllm", "PORT", str(port), "LOG_DIR", str(tmp_path), "DTYPE", "float32",
                     "MAX_MODEL_LEN", "512", "WAIT_TIMEOUT", "400"], timeout=480)
        _check_serving(proc, port, tmp_path, "simulation")
    finally:
        _stop(pid_file)
