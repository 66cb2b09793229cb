"""Shared fixtures for end-to-end CPU runs: a tiny policy and a small QA parquet, built once."""

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from zerosearch.miniature.tiny import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("models") / "tiny_policy", size="tiny", seed=0))


@pytest.fixture(scope="session")
def qa_parquet(tmp_path_factory):
    """train.parquet / test.parquet in the ZeroSearch schema from a slice of the shipped QA data."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("qa")
    src = out / "src"
    src.mkdir()
    for name, n in (("nq", 24), ("hotpotqa", 24), ("bamboogle", 8)):
        with open(os.path.join(REPO, "data", "qa", f"{name}.jsonl")) as f:
            rows = [json.loads(line) for line in f][:n]
        with open(src / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "data_process", "qa_search.py"),
                    "--train", str(src / "nq.jsonl"), str(src / "hotpotqa.jsonl"),
                    "--test", str(src / "bamboogle.jsonl"), "--out", str(out), "--train-split-ratio", "0.5"],
                   check=True, cwd=REPO)
    return str(out)
