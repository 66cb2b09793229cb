"""Every collective gets its tensors on the compute device: FSDP2 on two gloo ranks, under a recorder.

What this checks, and why it can fail on a CPU-only machine. On cuda, a collective whose tensor
lies on the CPU fails on an NCCL group ("No backend type associated with device type cpu"); the
classic way to get one is clipping gradients of CPU-offloaded FSDP2 shards with
``torch.nn.utils.clip_grad_norm_``, whose DTensor norm is reduced by DTensor itself on the device
where the shards live (the CPU), or building a count on the device of a CPU-held mask. On a CPU
machine the compute device and the offload device are the same, so the device check alone
(``wrong_device``) cannot fail here; it is kept because it is the exact check on a GPU machine.
The test therefore also checks the property that makes the device right by construction:
during clipping no DTensor-issued (functional) collective runs at all; the only reduction is our
own ``torch.distributed.all_reduce`` of a tensor that the code built on the device it was given
as the compute device (``device_of``). Reverting ``clip_grad_norm`` to
``torch.nn.utils.clip_grad_norm_`` makes DTensor issue a functional all_reduce on the shards'
device, and this test fails. The dynamic micro-batch agreement is checked the same way: its
all_reduce must carry a tensor on the compute device passed by the actor, and only there.
"""

import math

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from two_ranks import CollectiveRecorder, run_two_ranks
from verl.protocol import DataProto
from verl.utils.distributed import device_of
from verl.utils.fsdp_utils import clip_grad_norm, wrap_model
from verl.utils.optim import build_optimizer
from verl.utils.torch_functional import compute_position_id_with_mask
from verl.workers.actor.dp_actor import DataParallelPPOActor



P, R = 6, 5


def _batch(rank: int, vocab: int) -> DataProto:
    """Four rows; rank 0's are long and rank 1's short, so the ranks' own micro-batch counts differ."""
    g = torch.Generator().manual_seed(10 + rank)
    lens = [(6, 5), (5, 5), (6, 4), (4, 5)] if rank == 0 else [(2, 2), (1, 3), (2, 1), (1, 2)]
    ids = torch.zeros(4, P + R, dtype=torch.long)
    mask = torch.zeros(4, P + R, dtype=torch.long)
    for b, (pl, rl) in enumerate(lens):
        ids[b, P - pl:P + rl] = torch.randint(3, vocab, (pl + rl,), generator=g)
        mask[b, P - pl:P + rl] = 1
    return DataProto.from_dict({
        "input_ids": ids, "attention_mask": mask, "position_ids": compute_position_id_with_mask(mask),
        "responses": ids[:, P:].clone(), "response_mask": mask[:, P:].clone(),
        "advantages": torch.randn(4, R, generator=g),
    })


def _full_grad_norm(model) -> float:
    return math.sqrt(sum(float(p.grad.full_tensor().double().pow(2).sum()) for p in model.parameters()
                         if p.grad is not None))


def _check_ranks(rank: int, model_dir: str) -> None:
    compute = device_of("cpu")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model = wrap_model(model, "fsdp", "cpu", world_size=2)
    data = _batch(rank, model.config.vocab_size)

    # 1. clipping sharded gradients: the norm equals the full gradients' norm, and is reduced by
    #    our all_reduce on the compute device, never by DTensor
    out = model(input_ids=data.batch["input_ids"], attention_mask=data.batch["attention_mask"],
                position_ids=data.batch["position_ids"]).logits
    out.float().pow(2).mean().backward()
    expected = _full_grad_norm(model)
    with CollectiveRecorder() as rec:
        norm = clip_grad_norm(model, 1e-3, compute)
    assert norm == pytest.approx(expected, rel=1e-5)
    assert _full_grad_norm(model) == pytest.approx(1e-3, rel=1e-4)  # clipped to max_norm
    assert [c.name for c in rec.calls if c.api == "functional"] == []
    assert rec.wrong_device(compute) == []
    assert [c.name for c in rec.calls] == ["all_reduce"]
    model.zero_grad(set_to_none=True)

    # 2. a dynamic log-prob pass and an update, with every collective recorded
    cfg = OmegaConf.create({
        "ppo_mini_batch_size": 8, "ppo_micro_batch_size_per_gpu": 2, "use_dynamic_bsz": True,
        "ppo_max_token_len_per_gpu": 20, "ppo_epochs": 1, "shuffle": False, "clip_ratio": 0.2,
        "clip_ratio_low": None, "clip_ratio_high": None, "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean",
        "policy_loss": "vanilla", "entropy_coeff": 0.001, "use_kl_loss": False, "kl_loss_coef": 0.001,
        "kl_loss_type": "low_var_kl", "grad_clip": 1.0,
    })
    optim = build_optimizer(model.parameters(), OmegaConf.create({"lr": 1e-3, "betas": [0.9, 0.999],
                                                                  "weight_decay": 0.0}))
    actor = DataParallelPPOActor(cfg, model, optim, dp_size=2, device=compute)
    data.meta_info.update({"use_dynamic_bsz": True, "max_token_len": 20, "temperature": 1.0})
    with CollectiveRecorder() as rec:
        old, _ = actor.compute_log_prob(data)
        data.batch["old_log_probs"] = old
        metrics = actor.update_policy(data)
    assert math.isfinite(metrics["actor/grad_norm"])
    assert rec.wrong_device(compute) == []
    names = {c.name for c in rec.calls}
    assert "all_reduce" in names  # micro-batch agreement and the gradient norm
    assert names & {"all_gather_single", "all_gather_into_tensor"}  # FSDP's parameter all-gathers were seen
    assert [c.name for c in rec.calls if c.api == "functional"] == []


@pytest.mark.slow
def test_collectives_get_tensors_on_the_compute_device(tiny_model_dir):
    run_two_ranks(_check_ranks, tiny_model_dir)


def test_cuda_group_has_a_cpu_backend_for_offloaded_tensors():
    from verl.utils.distributed import backend_for_device

    assert backend_for_device("cuda") == "cpu:gloo,cuda:nccl"
    assert backend_for_device("cpu") == "gloo"
    with pytest.raises(ValueError, match="trainer.device"):
        backend_for_device("tpu")
