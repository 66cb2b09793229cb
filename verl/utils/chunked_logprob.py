"""Log-probabilities of labels and entropy of softmax(logits), a chunk of tokens at a time.

Shapes: N = tokens, V = vocabulary. For a (N, V) block of logits the plain way builds several
(N, V) temporaries (a float32 copy, a log-softmax, a softmax for the entropy) and autograd keeps
some of them for the backward: 12-20 bytes x N x V, i.e. tens of GB for a few thousand tokens
of a 151,936-word vocabulary. Here the forward and the backward each walk ``chunk_size`` tokens
at a time: the extra memory is O(chunk_size x V) whatever N is, and the backward saves only the
logits (alive anyway, they are the LM head's output) and three floats per token. Gradients are
written straight into one (N, V) tensor in the logits' dtype, the size of what autograd would
hand to the LM head in any case.

Computation per token, in float32 (float64 for float64 logits), on y = x - max(x) (values <= 0,
so sums of large logits lose little to rounding):
  lse = logsumexp(y); log_prob = y[label] - lse; p = exp(y - lse); entropy = lse - sum(p * y)
  d log_prob / dx = onehot(label) - p;  d entropy / dx = p * (sum(p * y) - y)
"""

from __future__ import annotations

from typing import Optional

import torch

# Positions per chunk: each float32 temporary is chunk x V (512 x 151,936 x 4 B = 0.29 GiB).
DEFAULT_CHUNK_SIZE = 512


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _ChunkedLogProbEntropy(torch.autograd.Function):
    """(N, V) logits, (N,) labels -> (N,) log-probs, (N,) entropy (or an empty tensor), chunk by chunk."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, with_entropy: bool, chunk_size: int):
        ctx.set_materialize_grads(False)  # an output nobody differentiates gets None, not zeros
        n = logits.shape[0]
        dtype = _compute_dtype(logits.dtype)
        log_probs = torch.empty(n, dtype=dtype, device=logits.device)
        peak = torch.empty(n, dtype=dtype, device=logits.device)
        lse = torch.empty(n, dtype=dtype, device=logits.device)
        entropy = torch.empty(n if with_entropy else 0, dtype=dtype, device=logits.device)
        for s in range(0, n, chunk_size):
            y, m = _shifted(logits[s:s + chunk_size], dtype)
            lse_c = torch.logsumexp(y, dim=-1)
            peak[s:s + chunk_size], lse[s:s + chunk_size] = m, lse_c
            log_probs[s:s + chunk_size] = y.gather(-1, labels[s:s + chunk_size, None]).squeeze(-1) - lse_c
            if with_entropy:
                p = (y - lse_c[:, None]).exp_()
                entropy[s:s + chunk_size] = lse_c - torch.linalg.vecdot(p, y)
        ctx.save_for_backward(logits, labels, peak, lse, entropy)
        ctx.chunk_size = chunk_size
        return log_probs, entropy

    @staticmethod
    def backward(ctx, grad_log_probs: Optional[torch.Tensor], grad_entropy: Optional[torch.Tensor]):
        logits, labels, peak, lse, entropy = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        grad = torch.empty_like(logits)
        use_entropy = grad_entropy is not None and entropy.numel() > 0
        for s in range(0, logits.shape[0], chunk_size):
            y = logits[s:s + chunk_size].to(lse.dtype) - peak[s:s + chunk_size, None]
            lse_c = lse[s:s + chunk_size, None]
            p = (y - lse_c).exp_()
            g = torch.zeros_like(p)
            if use_entropy:
                mean_y = lse_c - entropy[s:s + chunk_size, None]  # sum(p * y) = lse - entropy
                g += grad_entropy[s:s + chunk_size, None] * p * (mean_y - y)
            if grad_log_probs is not None:
                g_lp = grad_log_probs[s:s + chunk_size, None]
                g -= g_lp * p
                g.scatter_add_(-1, labels[s:s + chunk_size, None], g_lp)
            grad[s:s + chunk_size] = g.to(grad.dtype)
        return grad, None, None, None


def _shifted(block: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(block - its row max) in ``dtype`` (a new tensor), and the row max: every value <= 0, so the
    sums below stay small and lose little to rounding."""
    x = block.to(dtype)
    m = x.amax(dim=-1)
    return x - m[:, None], m


def log_probs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, calculate_entropy: bool = False,
                          chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log softmax(logits)[label] and (optionally) the entropy of softmax(logits), chunk by chunk.

    logits: (..., V), any float dtype; labels: (...) integer ids. Returns (log_probs (...),
    entropy (...) or None) in float32 (float64 for float64 logits). Differentiable in ``logits``
    (both outputs); peak extra memory O(chunk_size x V) in the forward and in the backward.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"log_probs_and_entropy: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                         "disagree")
    if chunk_size <= 0:
        raise ValueError(f"log_probs_and_entropy: chunk_size must be positive, got {chunk_size}")
    flat = logits.reshape(-1, logits.shape[-1])
    log_probs, entropy = _ChunkedLogProbEntropy.apply(flat, labels.reshape(-1).long(), calculate_entropy,
                                                      chunk_size)
    return log_probs.reshape(labels.shape), (entropy.reshape(labels.shape) if calculate_entropy else None)
