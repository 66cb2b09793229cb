"""The cuda profile's mixed precision: float32 master weights, bf16 compute, gradients reduced in float32.

The worker decides the dtypes (``_load_dtype``: what a cuda run with ``model.dtype=bfloat16`` loads
and computes in); ``wrap_model`` turns them into an FSDP2 ``MixedPrecisionPolicy``. The policy is
device-independent, so two gloo ranks on the CPU run the same code a cuda run does: each layer's
forward sees bf16 weights, the sharded parameters and their gradients stay float32, and the
gradient equals the average of the two ranks' bf16 gradients (checked against a float64 sum of
per-rank gradients computed by a plain bf16 copy of the model).
"""

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from two_ranks import run_two_ranks
from verl.utils.fsdp_utils import wrap_model
from verl.workers.fsdp_workers import ActorRolloutRefWorker


@pytest.mark.parametrize("device, strategy, dtype, expected", [
    ("cuda", "fsdp", "bfloat16", (torch.float32, torch.bfloat16)),  # fp32 master weights, bf16 compute
    ("cuda", "fsdp", "float32", (torch.float32, None)),
    ("cuda", "none", "bfloat16", (torch.bfloat16, None)),  # no FSDP: no master copy to keep
    ("cpu", "fsdp", "bfloat16", (torch.bfloat16, None)),  # the cpu profile computes in what it loads
])
def test_which_dtypes_a_worker_loads_and_computes_in(device, strategy, dtype, expected):
    worker = object.__new__(ActorRolloutRefWorker)  # only the dtype rule, no process group
    worker.device_name = device
    assert worker._load_dtype(strategy, OmegaConf.create({"dtype": dtype})) == expected


def _batch(rank: int, vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randint(3, vocab, (2, 7), generator=g)


def _loss(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits.float().logsumexp(-1).mean()


def _check(rank: int, model_dir: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    vocab = model.config.vocab_size
    # the reference: a plain bf16 copy's gradient on each rank's batch, summed in float64
    reference = {}
    for r in (0, 1):
        plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
        _loss(plain, _batch(r, vocab)).backward()
        for name, p in plain.named_parameters():
            reference[name] = reference.get(name, 0) + p.grad.double() / 2

    model = wrap_model(model, "fsdp", "cpu", world_size=2, mixed_precision_dtype=torch.bfloat16)
    seen = []
    proj = model.model.layers[0].mlp.down_proj
    proj.register_forward_pre_hook(lambda mod, args: seen.append((mod.weight.dtype, args[0].dtype)))
    _loss(model, _batch(rank, vocab)).backward()

    assert seen == [(torch.bfloat16, torch.bfloat16)]  # the layer computes in bf16
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32, name  # master weights
        assert p.grad.dtype == torch.float32, name  # reduced and kept in float32
        full = p.grad.full_tensor().double()
        ref = reference[name]
        # bf16 compute: agreement to bf16's resolution, relative to the gradient's size
        assert (full - ref).abs().max() <= 2e-2 * ref.abs().max() + 1e-6, name


@pytest.mark.slow
def test_fsdp2_mixed_precision_on_two_ranks(tiny_model_dir):
    run_two_ranks(_check, tiny_model_dir)
