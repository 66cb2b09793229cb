"""Point 5: secrets and unsafe deserialisation.

- The SerpAPI key comes only from the environment (SERPAPI_API_KEY, or the original release's
  SER_API_KEY when that is unset) and, under either name, never reaches a log, an error message, a
  saved config, a checkpoint, tensorboard or the wandb files of a real training run.
- No code that handles HTTP traffic (servers and search clients) unpickles, evals or otherwise
  executes what it receives (a static scan of the source, with a control that the scan finds them).

The loopback binding of the retrieval and simulation servers and the retrieval server's body-size
cap are tested in test_retrieval_server_security.py and tests/zerosearch/simulation/test_server_cli.py.
"""

from __future__ import annotations

import ast
import logging
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote_plus

import pytest
import requests
from reliability_helpers import free_port
from retry_bounds import TRAINER_STARTUP_S
from serpapi import exceptions as serpapi_exceptions
from trainer_runs import TrainerProcess, read_metrics, tiny_overrides, trainer_env

from zerosearch.tools import SearchRequest
from zerosearch.tools.google import GoogleSearchTool

REPO = Path(__file__).resolve().parents[2]
KEY_ENV = "SERPAPI_API_KEY"
ORIGINAL_KEY_ENV = "SER_API_KEY"  # the original ZeroSearch's name, accepted when KEY_ENV is unset
KEY_NAMES = [KEY_ENV, ORIGINAL_KEY_ENV]


def set_only(monkeypatch, name: str, secret: str) -> None:
    """The key under ``name`` and the other accepted name unset."""
    for other in KEY_NAMES:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, secret)


def new_secret() -> str:
    return f"sk-test-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def key_fragments(secret: str, size: int = 8) -> list[str]:
    """Every ``size``-character piece of the secret: a leak of part of the key counts too."""
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


@pytest.mark.parametrize("key_name", KEY_NAMES)
def test_google_errors_never_carry_any_part_of_the_key(monkeypatch, caplog, key_name):
    """SerpAPI's connection errors spell out the request URL, ``api_key=...`` included. Whatever the
    query length (which moves the key along the message), no part of the key may survive into
    ``SearchResult.error`` or the log, even where the message is cut short; under either name."""
    secret = new_secret()
    set_only(monkeypatch, key_name, secret)
    with caplog.at_level(logging.DEBUG):
        tool = GoogleSearchTool(api_key_env=KEY_ENV, timeout=5.0, max_retries=0, backoff=0.0)

    def failing_search(params):
        url = f"/search?engine=google&q={quote_plus(params['q'])}&num={params['num']}&api_key={secret}"
        # What the real client raises without network: the connection error wrapped as serpapi's.
        raise serpapi_exceptions.HTTPConnectionError(requests.exceptions.ConnectionError(
            f"HTTPSConnectionPool(host='serpapi.com', port=443): Max retries exceeded with url: {url} "
            "(Caused by NameResolutionError(\"Failed to resolve 'serpapi.com'\"))"
        ))

    monkeypatch.setattr(tool._client, "search", failing_search)
    queries = [SearchRequest(query="q" * n, row=n) for n in range(1, 260, 3)]
    try:
        with caplog.at_level(logging.DEBUG):
            results = tool.search(queries)
    finally:
        tool.close()
    assert all(not r.ok and r.error for r in results)
    assert any("api_key=***" in r.error for r in results)  # the redaction ran on the URL
    text = "\n".join(r.error for r in results) + caplog.text + repr(tool)
    leaked = [f for f in key_fragments(secret) if f in text]
    assert not leaked, f"key fragments in errors/logs: {leaked[:3]}"


def test_the_original_name_is_used_only_in_place_of_the_default_with_a_notice(monkeypatch, caplog):
    secret = new_secret()
    set_only(monkeypatch, ORIGINAL_KEY_ENV, secret)
    with caplog.at_level(logging.DEBUG, logger="zerosearch.tools.google"):
        GoogleSearchTool(api_key_env=KEY_ENV).close()
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and ORIGINAL_KEY_ENV in notices[0] and KEY_ENV in notices[0]
    assert not [f for f in key_fragments(secret) if f in caplog.text]

    # both set: the configured variable wins, silently
    caplog.clear()
    monkeypatch.setenv(KEY_ENV, new_secret())
    with caplog.at_level(logging.DEBUG, logger="zerosearch.tools.google"):
        GoogleSearchTool(api_key_env=KEY_ENV).close()
    assert not caplog.records

    # a name of the user's own choosing never falls back, and the error names no value
    with pytest.raises(ValueError, match="MY_SERPAPI_KEY") as err:
        GoogleSearchTool(api_key_env="MY_SERPAPI_KEY")
    assert ORIGINAL_KEY_ENV not in str(err.value) and secret not in str(err.value)

    # neither default name set: the error names both variables
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.delenv(ORIGINAL_KEY_ENV)
    with pytest.raises(ValueError, match=f"{KEY_ENV}.*{ORIGINAL_KEY_ENV}"):
        GoogleSearchTool(api_key_env=KEY_ENV)


# ---------------------------------------------------------------------------------------------
# Static scan: nothing received over HTTP is unpickled or executed

SCANNED = ["zerosearch/retrieval", "zerosearch/simulation", "zerosearch/tools"]
_UNSAFE_MODULE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("cPickle", "loads"), ("dill", "loads"), ("dill", "load"),
    ("marshal", "loads"), ("marshal", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("torch", "load"), ("jsonpickle", "decode"), ("shelve", "open"),
}
_UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def unsafe_calls(source: str, filename: str) -> list[str]:
    """Calls that deserialise or execute data: pickle/marshal/yaml.load/torch.load, np.load with
    allow_pickle=True, and the builtins eval/exec/compile/__import__ (methods such as
    ``model.eval()`` are fine)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{filename}:{node.lineno}"
        if isinstance(func, ast.Name) and func.id in _UNSAFE_BUILTINS:
            found.append(f"{where} {func.id}()")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            pair = (func.value.id, func.attr)
            if pair in _UNSAFE_MODULE_CALLS:
                found.append(f"{where} {pair[0]}.{pair[1]}()")
            if func.attr == "load" and func.value.id in ("np", "numpy"):
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        found.append(f"{where} np.load(allow_pickle=...)")
    return found


def test_scanner_finds_what_it_looks_for():
    planted = (
        "import pickle, yaml, numpy as np\n"
        "def handler(body):\n"
        "    a = pickle.loads(body)\n"
        "    b = eval(body)\n"
        "    c = yaml.load(body)\n"
        "    d = np.load(body, allow_pickle=True)\n"
        "    model.eval()\n"
        "    e = np.load(body, allow_pickle=False)\n"
    )
    found = unsafe_calls(planted, "planted.py")
    assert [f.split(" ", 1)[1] for f in found] == ["pickle.loads()", "eval()", "yaml.load()", "np.load(allow_pickle=...)"]


def test_servers_and_search_clients_never_unpickle_or_eval():
    files = sorted(p for d in SCANNED for p in (REPO / d).rglob("*.py"))
    assert len(files) > 10
    found = [f for p in files for f in unsafe_calls(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert not found, found


# ---------------------------------------------------------------------------------------------
# A real training run never writes the key


@pytest.mark.slow
@pytest.mark.parametrize("key_name", KEY_NAMES)
def test_training_run_never_writes_the_api_key(searching_model_dir, train_parquet, tmp_path, key_name):
    """One step with the google backend (no network here, so every query fails and is logged),
    every logger on (console, jsonl, tensorboard, wandb offline), a checkpoint with an HF export,
    and Ray's session files kept in a folder of the test: none of it may hold the key, whether it
    came in SERPAPI_API_KEY or in the original's SER_API_KEY."""
    secret = new_secret()
    run_dir = tmp_path / "run"
    ray_tmp = Path(tempfile.mkdtemp(prefix="zsray", dir="/tmp"))  # short: Ray's socket paths are length-limited
    try:
        overrides = tiny_overrides(searching_model_dir, train_parquet, str(run_dir), free_port(), steps=1) + [
            "retriever.search_mode=google", "retriever.google.timeout=2.0", "retriever.google.max_retries=0",
            # Every query fails (no network): neither the failure share nor rounds with no reply stop it.
            "retriever.max_failure_rate=1.0", "retriever.failure_streak_rounds=0",
            "trainer.logger=[console,jsonl,tensorboard,wandb]",
            "trainer.save_hf=true",
        ]
        env = trainer_env(**{key_name: secret, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "RAY_TMPDIR": str(ray_tmp)})
        for other in KEY_NAMES:
            if other != key_name:
                env.pop(other, None)
        trainer = TrainerProcess(overrides, tmp_path / "trainer.log", env=env)
        assert trainer.wait(TRAINER_STARTUP_S + 120) == 0, trainer.output[-4000:]

        metrics = read_metrics(run_dir)[1]
        assert metrics["search/requests"] > 0 and metrics["search/failures"] == metrics["search/requests"]
        assert "google search (SerpAPI)" in trainer.output  # the failures were logged
        assert (run_dir / "global_step_1" / "actor" / "huggingface" / "model.safetensors").exists()
        assert list((run_dir / "logs").rglob("*.wandb")) and list((run_dir / "logs" / "tensorboard").iterdir())
        hydra_config = (run_dir / "hydra" / ".hydra" / "config.yaml").read_text()
        assert KEY_ENV in hydra_config  # the config is saved, and names the variable only

        assert any(ray_tmp.rglob("session_*")), "Ray did not keep its session files under RAY_TMPDIR"

        needles = [f.encode() for f in key_fragments(secret, size=12)]
        scanned, leaks = 0, []
        for root in (run_dir, ray_tmp, tmp_path / "trainer.log"):
            for path in [root] if root.is_file() else root.rglob("*"):
                if path.is_file() and not path.is_symlink() and not path.is_socket():
                    data = path.read_bytes()
                    scanned += 1
                    if any(n in data for n in needles):
                        leaks.append(str(path))
        assert scanned > 20
        assert not leaks, f"the API key was written to {leaks}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
