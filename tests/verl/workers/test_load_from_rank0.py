"""Under FSDP over two gloo ranks only rank 0 reads the weights; every rank ends with exactly the model on disk.

What is checked, per model built by the workers (the actor, the reference in its compute dtype,
the critic's value model, and a model with tied input and output embeddings):
- every parameter's ``full_tensor()``, on both ranks, equals the tensor in the folder's
  ``model.safetensors`` cast to the load dtype, exactly; a tied ``lm_head`` is still the same
  Parameter as ``embed_tokens`` and so equals the one stored matrix;
- the rotary ``inv_freq`` buffers, which no state dict holds and which rank 1 allocates empty, equal
  1 / theta^(2i/d) computed here in float64 (to float32 rounding) and are bitwise equal on both ranks;
- the critic's fresh score head, which is not on disk, is the same on both ranks.

How the test knows that rank 1 never held the full model: ``from_pretrained`` of both Auto classes
the loaders use is replaced, in each rank's process, by a spy that records the call and raises on
any rank but 0. Building from the config on the meta device (``from_config``) reads no weights and
allocates no storage, so a rank that never calls ``from_pretrained`` never had the full weights in
memory. The spy also counts rank 0's calls (one per model), so a loader that bypassed it (and thus
the check) would fail the count.
"""

import os

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

from two_ranks import run_two_ranks
from worker_test_utils import make_config

TOKENS = torch.arange(3, 11).unsqueeze(0)  # (1, 8) token ids for a forward pass


class FromPretrainedSpy:
    """Replaces ``cls.from_pretrained`` for the classes given; raises on ranks other than 0."""

    def __init__(self, rank: int, classes) -> None:
        self.rank, self.classes, self.calls, self._saved = rank, classes, [], []

    def __enter__(self):
        for cls in self.classes:
            original = cls.from_pretrained

            def spy(*args, _original=original, _name=cls.__name__, **kwargs):
                self.calls.append(_name)
                if self.rank != 0:
                    raise AssertionError(f"rank {self.rank} called {_name}.from_pretrained: it must not read weights")
                return _original(*args, **kwargs)

            self._saved.append((cls, cls.__dict__["from_pretrained"]))
            cls.from_pretrained = spy
        return self

    def __exit__(self, *exc):
        for cls, original in reversed(self._saved):
            cls.from_pretrained = original


def _inv_freq_reference(model_dir: str) -> torch.Tensor:
    cfg = AutoConfig.from_pretrained(model_dir)
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = float(cfg.rope_parameters["rope_theta"])
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def _check_module(rank: int, module, model_dir: str, dtype: torch.dtype, body_prefix: str = "") -> None:
    """Exact equality of every parameter with the file (``body_prefix``: the file's names are those
    of a causal LM; a value model keeps only the ``model.`` body)."""
    on_disk = load_file(os.path.join(model_dir, "model.safetensors"))
    params = dict(module.named_parameters(remove_duplicate=False))
    tied = bool(getattr(module.config, "tie_word_embeddings", False))
    checked = 0
    for name, param in params.items():
        full = param.full_tensor()
        assert full.dtype == dtype, name
        key = name
        if tied and name == "lm_head.weight":
            assert param is params["model.embed_tokens.weight"], "lm_head is no longer tied to embed_tokens"
            key = "model.embed_tokens.weight"
        if key not in on_disk:
            assert name.startswith("score."), f"{name} is neither on disk nor the value head"
            gathered = [None, None]
            dist.all_gather_object(gathered, full)
            assert torch.equal(gathered[0], gathered[1]), f"{name} differs between ranks"
            continue
        assert torch.equal(full, on_disk[key].to(dtype)), f"rank {rank}: {name} differs from the file"
        checked += 1
    assert checked == len([k for k in on_disk if k.startswith(body_prefix)]) + (1 if tied else 0)
    reference = _inv_freq_reference(model_dir)
    buffers = {n: b for n, b in module.named_buffers() if n.endswith("inv_freq")}
    assert buffers, "no rotary inv_freq buffer found"
    for name, buf in buffers.items():
        torch.testing.assert_close(buf.double(), reference, rtol=1e-6, atol=0, msg=name)
        gathered = [None, None]
        dist.all_gather_object(gathered, buf)
        assert torch.equal(gathered[0], gathered[1]), f"{name} differs between ranks"


def _on_two_ranks(rank: int, configs: dict, model_dir: str, tied_dir: str, port: int,
                  tied_logits: torch.Tensor) -> None:
    from verl.utils.fsdp_utils import is_fsdp
    from verl.workers.fsdp_workers import ActorRolloutRefWorker, CriticWorker

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with FromPretrainedSpy(rank, (AutoModelForCausalLM, AutoModelForTokenClassification)) as spy:
        worker = ActorRolloutRefWorker(configs["policy"], "actor_rollout_ref")
        worker._init_distributed()
        actor = worker._build_policy(trainable=True)
        ref = worker._build_policy(trainable=False)
        critic = CriticWorker(configs["critic"])
        critic.init_model()
        tied_worker = ActorRolloutRefWorker(configs["tied"], "ref")
        tied_worker.init_model()
    assert spy.calls == ([] if rank else ["AutoModelForCausalLM", "AutoModelForCausalLM",
                                          "AutoModelForTokenClassification", "AutoModelForCausalLM"])
    assert all(is_fsdp(m) for m in (actor, ref, critic.critic_module, tied_worker.ref_module))
    assert all(p.requires_grad for p in actor.parameters())
    assert all(p.requires_grad for p in critic.critic_module.parameters())
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    _check_module(rank, actor, model_dir, torch.bfloat16)  # cpu: no fp32 master copy, loads model.dtype
    _check_module(rank, ref, model_dir, torch.bfloat16)
    _check_module(rank, critic.critic_module, model_dir, torch.float32, body_prefix="model.")
    _check_module(rank, tied_worker.ref_module, tied_dir, torch.float32)
    # the materialised shards compute: the tied model's logits equal those of the plain model on disk
    logits = tied_worker.ref_module(input_ids=TOKENS).logits
    torch.testing.assert_close(logits, tied_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_only_rank0_reads_weights_and_every_rank_gets_them(tiny_model_dir, tmp_path):
    from verl.utils.distributed import get_free_port
    from tests.verl.tiny_models import model

    tied_dir = model(tmp_path / "tied", size="tiny-tied", seed=2)
    assert AutoConfig.from_pretrained(tied_dir).tie_word_embeddings
    one_thread = "trainer.cpu_threads_per_worker=1"
    configs = {
        # actor and reference in bfloat16: on cpu both load model.dtype (no float32 master copy)
        "policy": make_config(tiny_model_dir, "actor_rollout_ref.actor.strategy=fsdp",
                              "actor_rollout_ref.model.dtype=bfloat16", one_thread),
        "critic": make_config(tiny_model_dir, "critic.strategy=fsdp", one_thread),
        "tied": make_config(tied_dir, "actor_rollout_ref.actor.strategy=fsdp", one_thread),
    }
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tied_dir, dtype=torch.float32, attn_implementation="sdpa")
        tied_logits = plain(input_ids=TOKENS).logits
    run_two_ranks(_on_two_ranks, configs, tiny_model_dir, tied_dir, get_free_port("127.0.0.1"), tied_logits)
