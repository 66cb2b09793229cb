"""Chunked log-prob and entropy against the naive float64 computation, with Qwen2.5's vocabulary."""

import pytest
import torch

from verl.utils.chunked_logprob import log_probs_and_entropy

VOCAB = 151_936  # Qwen2.5
N = 10  # tokens: small, so the float64 reference runs in a second


def _naive64(logits, labels):
    """log_softmax and entropy in float64, the whole (N, V) at once."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return logp.gather(-1, labels[:, None]).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.fixture(scope="module")
def logits_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, VOCAB, generator=g) * 4
    logits[3, 17] = 40.0  # one peaked row: entropy near 0
    labels = torch.randint(0, VOCAB, (N,), generator=g)
    labels[3] = 17
    return logits, labels


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_equal_naive_float64(logits_labels, dtype):
    logits, labels = logits_labels
    x = logits.to(dtype)
    lp, ent = log_probs_and_entropy(x, labels, calculate_entropy=True, chunk_size=4)  # chunks of 4, 4, 2
    ref_lp, ref_ent = _naive64(x, labels)  # reference on the same (rounded) logits
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    torch.testing.assert_close(lp.double(), ref_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=0, atol=1e-5)
    assert float(ent[3]) < 1e-5
    lp_only, none = log_probs_and_entropy(x, labels, chunk_size=3)
    assert none is None
    torch.testing.assert_close(lp_only, lp, rtol=0, atol=0)


@pytest.mark.parametrize("with_entropy_grad", [True, False])
def test_gradients_equal_naive_float64(logits_labels, with_entropy_grad):
    logits, labels = logits_labels
    g = torch.Generator().manual_seed(1)
    w_lp, w_ent = torch.randn(N, generator=g), torch.randn(N, generator=g)

    x = logits.clone().requires_grad_(True)
    lp, ent = log_probs_and_entropy(x, labels, calculate_entropy=True, chunk_size=4)
    loss = (lp * w_lp).sum() + ((ent * w_ent).sum() if with_entropy_grad else 0.0 * ent.detach().sum())
    loss.backward()

    x64 = logits.double().requires_grad_(True)
    ref_lp, ref_ent = _naive64(x64, labels)
    ref_loss = (ref_lp * w_lp.double()).sum() + ((ref_ent * w_ent.double()).sum() if with_entropy_grad else 0.0)
    ref_loss.backward()
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=0, atol=1e-5)


def test_float64_logits_stay_float64_and_bad_shapes_are_errors():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 50, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50, (2, 3), generator=g)
    lp, ent = log_probs_and_entropy(logits, labels, calculate_entropy=True, chunk_size=4)
    ref_lp, ref_ent = _naive64(logits.reshape(6, 50), labels.reshape(6))
    assert lp.shape == (2, 3) and lp.dtype == torch.float64
    torch.testing.assert_close(lp.reshape(6), ref_lp, rtol=0, atol=1e-12)
    torch.testing.assert_close(ent.reshape(6), ref_ent, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="disagree"):
        log_probs_and_entropy(logits, labels[:, :2])
    with pytest.raises(ValueError, match="chunk_size"):
        log_probs_and_entropy(logits, labels, chunk_size=0)


class _LargestOutputs(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the element count of every tensor an aten op creates (ops whose outputs alias an input,
    views and in-place ops, allocate nothing: skipped)."""

    def __init__(self):
        super().__init__()
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    self.sizes.append(t.numel())
        return out


def test_working_memory_is_a_chunk_not_the_whole_batch():
    # 256 tokens x 4,096 words in chunks of 16: no tensor the forward creates, nor any the backward
    # creates besides the logits' gradient itself, is larger than 16 x 4,096 elements; the plain
    # computation creates several of 256 x 4,096 (the recorder sees them, so the check can fail).
    tokens, vocab, chunk = 256, 4096, 16
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(tokens, vocab, generator=g).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    with _LargestOutputs() as naive:
        logp = torch.log_softmax(logits, dim=-1)
        (-(logp.exp() * logp).sum(-1)).sum()
    assert sum(s == tokens * vocab for s in naive.sizes) >= 3
    with _LargestOutputs() as forward:
        lp, ent = log_probs_and_entropy(logits, labels, calculate_entropy=True, chunk_size=chunk)
    assert max(forward.sizes) <= chunk * vocab
    with _LargestOutputs() as backward:
        (lp.sum() + ent.sum()).backward()
    assert sorted(backward.sizes)[-2] <= chunk * vocab  # all but the (tokens, vocab) gradient
    assert max(backward.sizes) == tokens * vocab
