"""Masked statistics and tensor helpers against hand-worked numbers and float64 numpy references."""

import math

import numpy as np
import pytest
import torch

from verl.utils import torch_functional as F

VALUES = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0]])


def test_masked_sum_and_mean_ignore_masked_entries():
    assert F.masked_sum(VALUES, MASK).item() == pytest.approx(6.0)
    assert F.masked_mean(VALUES, MASK).item() == pytest.approx(2.0)
    rows = torch.tensor([[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]])
    row_mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert F.masked_mean(rows, row_mask, axis=-1).tolist() == pytest.approx([2.0, 2.0])
    assert F.masked_sum(rows, row_mask, axis=0).tolist() == pytest.approx([3.0, 3.0, 0.0])


def test_masked_sum_does_not_leak_nan_under_the_mask():
    values = torch.tensor([1.0, float("nan"), float("inf")])
    mask = torch.tensor([1.0, 0.0, 0.0])
    assert F.masked_sum(values, mask).item() == 1.0
    assert F.masked_mean(values, mask).item() == pytest.approx(1.0)


def test_masked_mean_of_empty_mask_is_zero():
    assert F.masked_mean(VALUES, torch.zeros_like(MASK)).item() == 0.0


def test_masked_var_biased_and_unbiased():
    # deviations from the masked mean 2: 1, 0, 1 -> biased 2/3, unbiased 1
    assert F.masked_var(VALUES, MASK, unbiased=False).item() == pytest.approx(2.0 / 3.0)
    assert F.masked_var(VALUES, MASK, unbiased=True).item() == pytest.approx(1.0)


@pytest.mark.parametrize("mask", [[[0.0, 0.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]]])
def test_masked_var_unbiased_needs_two_entries(mask):
    with pytest.raises(ValueError, match="masked_var"):
        F.masked_var(VALUES, torch.tensor(mask))


def test_masked_whiten():
    # mean 2, unbiased var 1 -> (x - 2) / sqrt(1 + 1e-8)
    scale = 1.0 / math.sqrt(1.0 + 1e-8)
    assert F.masked_whiten(VALUES, MASK).tolist()[0] == pytest.approx([-scale, 0.0, scale, 98.0 * scale])
    kept = F.masked_whiten(VALUES, MASK, shift_mean=False).tolist()[0]
    assert kept == pytest.approx([2 - scale, 2.0, 2 + scale, 2 + 98.0 * scale])


def test_clip_by_value_with_scalar_and_tensor_bounds():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert F.clip_by_value(x, -1.0, 1.0).tolist() == [-1.0, 0.5, 1.0]
    low = torch.tensor([0.0, 0.6, 0.0])
    high = torch.tensor([1.0, 1.0, 2.5])
    assert F.clip_by_value(x, low, high).tolist() == pytest.approx([0.0, 0.6, 2.5])


def _np_log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_logprobs_from_logits_matches_float64_log_softmax():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 7, generator=gen) * 5
    labels = torch.randint(0, 7, (3, 4), generator=gen)
    ref = np.take_along_axis(_np_log_softmax(logits.numpy()), labels.numpy()[..., None], -1)[..., 0]
    out = F.logprobs_from_logits(logits, labels)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5)
    out_bf16 = F.logprobs_from_logits(logits.bfloat16(), labels, chunk_rows=5)  # 12 positions: 3 chunks
    assert out_bf16.shape == (3, 4)
    assert out_bf16.dtype == torch.bfloat16
    ref_bf16 = np.take_along_axis(
        _np_log_softmax(logits.bfloat16().float().numpy()), labels.numpy()[..., None], -1
    )[..., 0]
    np.testing.assert_allclose(out_bf16.float().numpy(), ref_bf16, rtol=1e-2, atol=5e-2)


def test_logprobs_from_logits_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        F.logprobs_from_logits(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_entropy_from_logits():
    assert F.entropy_from_logits(torch.zeros(2, 8)).tolist() == pytest.approx([math.log(8)] * 2)
    peaked = torch.tensor([[100.0, 0.0, 0.0]])
    assert F.entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 11, generator=gen)
    logp = _np_log_softmax(logits.numpy())
    ref = -(np.exp(logp) * logp).sum(-1)
    np.testing.assert_allclose(F.entropy_from_logits(logits).numpy(), ref, atol=1e-5)


def test_position_ids_from_attention_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]])
    expected = [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 0, 1, 2, 2]]
    assert F.compute_position_id_with_mask(mask).tolist() == expected


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 6, 7, 8, 9], [2, 1, 1, 1, 1], [4, 3, 4, 4, 4]])
    assert F.get_response_mask(ids, eos_token=2).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ]
    assert F.get_response_mask(ids, eos_token=[2, 3]).tolist()[3] == [1, 1, 0, 0, 0]
    assert F.get_response_mask(ids, 2, dtype=torch.float32).dtype == torch.float32


def test_pad_2d_list_to_length():
    rows = [[1, 2, 3], [4], []]
    assert F.pad_2d_list_to_length(rows, pad_id=0).tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    left = F.pad_2d_list_to_length(rows, pad_id=9, max_length=4, left_pad=True)
    assert left.dtype == torch.long
    assert left.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4], [9, 9, 9, 9]]
    with pytest.raises(ValueError, match="max_length"):
        F.pad_2d_list_to_length(rows, pad_id=0, max_length=2)
