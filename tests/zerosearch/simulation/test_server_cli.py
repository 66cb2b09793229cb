"""The server as a process: binds 127.0.0.1 by default, answers /health, refuses bad flags."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from verl.utils.distributed import get_free_port
from zerosearch.retrieval.health import stop_process


def _non_loopback_ip() -> str | None:
    """This machine's address on its default route, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


@pytest.mark.slow
def test_binds_loopback_by_default(tiny_model_dir):
    port = get_free_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "zerosearch.simulation.server", "--model", tiny_model_dir,
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not answer /health within 120 s"
            time.sleep(0.5)
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" and addr.port == port for addr in listening)
        other = _non_loopback_ip()
        if other is not None:
            with pytest.raises(httpx.TransportError):
                httpx.get(f"http://{other}:{port}/health", timeout=2)
        served = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert served["data"][0]["id"] == "simulation"
    finally:
        stop_process(proc, 20)


@pytest.mark.parametrize("flags, needle", [
    (["--port", "0"], "--port"),
    (["--max-batch", "0"], "--max-batch"),
    (["--backend", "sglang"], "--backend"),
    (["--max-wait-ms", "-1"], "--max-wait-ms"),
])
def test_bad_flags_are_refused(flags, needle, capsys):
    from zerosearch.simulation.server import parse_args

    with pytest.raises(SystemExit) as info:
        parse_args(["--model", "m"] + flags)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


def test_missing_model_folder_is_refused(tmp_path):
    from zerosearch.simulation.server import main

    with pytest.raises(SystemExit, match="not a model folder"):
        main(["--model", str(tmp_path)])
