"""Streamed weight sync (buckets, casts, tied parameters) and the engine's sleep/wake calls,
checked with recording fakes: no vLLM engine starts here."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from verl.workers.rollout.weight_sync import SyncStats, bucket_bytes_of, named_weights, stream_weights


class FakeShard:
    """Stands in for an FSDP2 DTensor: ``full_tensor()`` is the gather, and it is logged."""

    def __init__(self, name: str, whole: torch.Tensor, log: list[str]) -> None:
        self.name, self.whole, self.log = name, whole, log
        self.device = torch.device("cpu")
        self.device_mesh = SimpleNamespace(device_type="cpu")

    def detach(self) -> "FakeShard":
        return self

    def to(self, dtype: torch.dtype) -> "FakeShard":  # a DTensor casts its local shard: no gather
        return FakeShard(self.name, self.whole.to(dtype), self.log)

    def full_tensor(self) -> torch.Tensor:
        self.log.append(f"gather {self.name}")
        return self.whole


def test_stream_gathers_a_bucket_then_hands_it_on_cast_to_the_engine_dtype():
    log: list[str] = []
    # float32 sizes 16, 32, 8 bytes -> bfloat16 8, 16, 4 bytes; a 20-byte bucket overflows at b
    tensors = {"a": torch.arange(4.0), "b": torch.linspace(-1, 1, 8), "c": torch.tensor([0.5, 3.0])}
    shards = [(name, FakeShard(name, t, log)) for name, t in tensors.items()]
    stats = SyncStats()
    got = {}
    for name, tensor in stream_weights(shards, torch.bfloat16, 20, stats):
        log.append(f"load {name}")
        got[name] = tensor
    assert log == ["gather a", "gather b", "load a", "load b", "gather c", "load c"]
    for name, t in tensors.items():
        assert got[name].dtype == torch.bfloat16
        torch.testing.assert_close(got[name], t.to(torch.bfloat16), atol=0, rtol=0)
    assert (stats.tensors, stats.bytes, stats.largest_bytes) == (3, 8 + 16 + 4, 16)
    assert stats.peak_held_bytes == 24  # one bucket's worth: the tensor that overflowed it included


def test_stream_keeps_unsharded_tensors_of_the_right_dtype_without_a_copy():
    weight = torch.ones(3, 2)
    (name, out), = list(stream_weights([("w", weight)], torch.float32, 1 << 20))
    assert name == "w" and out.data_ptr() == weight.data_ptr()
    with pytest.raises(ValueError, match="no tensors"):
        list(stream_weights([], torch.float32, 1 << 20))


def test_tied_parameters_are_streamed_once_under_their_first_name():
    module = torch.nn.Module()
    module.embed = torch.nn.Embedding(5, 3)
    module.head = torch.nn.Linear(3, 5, bias=False)
    module.head.weight = module.embed.weight
    module.norm = torch.nn.LayerNorm(3)
    assert [n for n, _ in named_weights(module)] == ["embed.weight", "norm.weight", "norm.bias"]


@pytest.mark.parametrize("value", [0, -1, "64", True, None])
def test_bucket_size_must_be_a_positive_number(value):
    with pytest.raises(ValueError, match="weight_sync_bucket_mb"):
        bucket_bytes_of(value)
    assert bucket_bytes_of(0.5) == 512 * 1024


# ---------------------------------------------------------------------------- VLLMRollout with a fake vLLM
class RecordingLLM:
    """Records the calls VLLMRollout makes on vLLM's ``LLM`` (and on its worker, for the weights)."""

    calls: list = []

    def __init__(self, **kwargs) -> None:
        self.calls.append(("init", kwargs["enable_sleep_mode"]))
        head = SimpleNamespace(quant_method=SimpleNamespace(
            process_weights_after_loading=lambda layer: self.calls.append(("reprocess head",))))
        runner = SimpleNamespace(get_model=lambda: SimpleNamespace(lm_head=head))
        self.worker = SimpleNamespace(reload_weights=self._reload, model_runner=runner)

    def _reload(self, weights_iterator, is_checkpoint_format):
        assert is_checkpoint_format
        self.calls.append(("load_weights", [(name, t.dtype) for name, t in weights_iterator]))

    def collective_rpc(self, method, args=()):
        return [method(self.worker, *args)]

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags):
        self.calls.append(("wake_up", tags))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def _config(**overrides):
    config = {"dtype": "bfloat16", "max_model_len": 64, "enforce_eager": True, "gpu_memory_utilization": 0.3,
              "tensor_model_parallel_size": 1, "free_cache_engine": True, "sleep_level": 2,
              "weight_sync_bucket_mb": 1}
    return {**config, **overrides}


@pytest.fixture()
def fake_vllm(monkeypatch):
    import vllm  # CI has it: a missing one fails, it is not skipped
    RecordingLLM.calls = []
    monkeypatch.setattr(vllm, "LLM", RecordingLLM)
    return RecordingLLM.calls


def test_sleep_wake_and_sync_run_in_order_across_two_steps(fake_vllm, tiny_model_dir, tokenizer, hf_model,
                                                          monkeypatch):
    from verl.workers.rollout.base import SamplingConfig
    from verl.workers.rollout.vllm_rollout import VLLMRollout

    free_gib = iter([10.0, 40.5, 12.0, 40.0])  # free device memory before and after each sleep
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (int(next(free_gib) * 2**30), 80 * 2**30))
    rollout = VLLMRollout(tiny_model_dir, tokenizer, _config(), device="cuda")
    names = [n for n, _ in hf_model.named_parameters()]
    for freed in (30.5, 28.0):  # one trainer step: rollout ends -> sleep; next rollout: wake weights -> sync -> wake KV
        assert rollout.sleep() == {"memory/sleep_freed_gib": freed}
        with pytest.raises(RuntimeError, match="sleeps"):
            rollout.generate([[1, 2]], SamplingConfig())
        with pytest.raises(RuntimeError, match="wake_weights"):
            rollout.sync_weights(hf_model.named_parameters())
        with pytest.raises(RuntimeError, match="wake the weights"):
            rollout.wake_kv_cache()
        rollout.wake_weights()
        stats = rollout.sync_weights(hf_model.named_parameters())
        rollout.wake_kv_cache()
        assert stats.tensors == len(names)
        assert stats.bytes == 2 * sum(p.numel() for p in hf_model.parameters())  # bfloat16
    step = [("sleep", 2), ("wake_up", ["weights"]), ("load_weights", [(n, torch.bfloat16) for n in names]),
            ("wake_up", ["kv_cache"])]
    assert fake_vllm == [("init", True)] + step + step


def test_awake_sync_drops_the_prefix_cache_and_a_tied_head_is_reprocessed(fake_vllm, tiny_model_dir, tokenizer,
                                                                          hf_model, monkeypatch):
    from verl.workers.rollout.vllm_rollout import VLLMRollout

    rollout = VLLMRollout(tiny_model_dir, tokenizer, _config(free_cache_engine=False), device="cuda")
    rollout.tied_embeddings = True
    rollout.sync_weights(hf_model.named_parameters())
    assert [c[0] for c in fake_vllm] == ["init", "load_weights", "reprocess head", "reset_prefix_cache"]
    assert fake_vllm[0] == ("init", False)


def test_where_the_engine_cannot_sleep_the_calls_do_nothing_and_say_so_once(fake_vllm, tiny_model_dir, tokenizer,
                                                                             hf_model, caplog):
    from verl.workers.rollout.vllm_rollout import VLLMRollout

    rollout = VLLMRollout(tiny_model_dir, tokenizer, _config(), device="cpu")
    with caplog.at_level(logging.WARNING, logger="verl.workers.rollout.base"):
        for _ in range(2):
            assert rollout.sleep() == {}  # nothing freed, nothing logged
            rollout.wake_weights()
            rollout.sync_weights(hf_model.named_parameters())
            rollout.wake_kv_cache()
    said = [r.getMessage() for r in caplog.records if "sleep" in r.getMessage()]
    assert len(said) == 1 and "vLLM-CPU has no sleep mode" in said[0]
    assert fake_vllm[0] == ("init", False)
    assert [c[0] for c in fake_vllm[1:]] == ["load_weights", "reset_prefix_cache"] * 2


@pytest.mark.parametrize("key,value,match", [("sleep_level", 3, "sleep_level"),
                                             ("weight_sync_bucket_mb", 0, "weight_sync_bucket_mb"),
                                             ("dtype", "float8", "dtype")])
def test_bad_rollout_settings_are_refused_by_key(fake_vllm, tiny_model_dir, tokenizer, key, value, match):
    from verl.workers.rollout.vllm_rollout import VLLMRollout

    with pytest.raises(ValueError, match=match):
        VLLMRollout(tiny_model_dir, tokenizer, _config(**{key: value}), device="cpu")
    assert fake_vllm == []
