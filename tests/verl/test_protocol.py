"""DataProto: construction checks, row selection, split/concat round trips, repeat, pad/unpad, pickle."""

import pickle

import numpy as np
import pytest
import torch

from verl.protocol import DataProto, pad_dataproto_to_divisor, unpad_dataproto


def make(n=4):
    """Row i has x == [i, 10 + i], ids == [i] * 2 (equal-length lists), uid == 'u{i}'."""
    return DataProto.from_dict(
        tensors={"x": torch.stack([torch.arange(n), torch.arange(n) + 10], dim=1), "y": torch.arange(n).float()},
        non_tensors={"uid": [f"u{i}" for i in range(n)], "ids": [[i, i] for i in range(n)]},
        meta_info={"temperature": 1.0},
    )


def rows_of(data):
    return [int(v) for v in data.batch["y"]]


def test_from_dict_keeps_one_object_per_row():
    data = make(3)
    assert len(data) == 3
    ids = data.non_tensor_batch["ids"]
    assert ids.dtype == object and ids.shape == (3,)
    assert ids[2] == [2, 2]
    assert DataProto.from_dict(non_tensors={"s": np.array(["a", "b"])}).non_tensor_batch["s"].dtype == object
    assert len(DataProto()) == 0


def test_inconsistent_lengths_and_types_are_rejected():
    with pytest.raises(ValueError, match="rows"):
        DataProto.from_dict(tensors={"a": torch.zeros(3), "b": torch.zeros(2)})
    with pytest.raises(ValueError, match="rows"):
        DataProto.from_dict(tensors={"a": torch.zeros(3)}, non_tensors={"uid": ["a", "b"]})
    with pytest.raises(TypeError, match="batch\\['a'\\]"):
        DataProto.from_dict(tensors={"a": [1, 2]})
    with pytest.raises(ValueError, match="0-dim"):
        DataProto.from_dict(tensors={"a": torch.tensor(1.0)})
    data = make(3)
    data.batch["z"] = torch.zeros(5)
    with pytest.raises(ValueError, match="rows"):
        data.check_consistency()


def test_index_by_int_slice_list_array_tensor():
    data = make(5)
    one = data[3]
    assert isinstance(one, DataProto) and len(one) == 1
    assert one.batch["x"].tolist() == [[3, 13]] and one.non_tensor_batch["uid"].tolist() == ["u3"]
    assert rows_of(data[-1]) == [4]
    assert rows_of(data[1:4]) == [1, 2, 3]
    assert rows_of(data[[4, 0, 0]]) == [4, 0, 0]
    assert data[[4, 0]].non_tensor_batch["uid"].tolist() == ["u4", "u0"]
    assert rows_of(data[np.array([2, 1])]) == [2, 1]
    assert rows_of(data[np.array([True, False, True, False, False])]) == [0, 2]
    assert rows_of(data[torch.tensor([3, 1])]) == [3, 1]
    assert rows_of(data[torch.tensor([False, True, False, False, True])]) == [1, 4]
    assert data[2].meta_info == {"temperature": 1.0}
    with pytest.raises(IndexError):
        data[5]
    with pytest.raises(IndexError):
        data[[0, 7]]


def test_select_and_pop():
    data = make(3)
    sub = data.select(batch_keys=["x"], non_tensor_batch_keys=["uid"], meta_info_keys=[])
    assert list(sub.batch) == ["x"] and list(sub.non_tensor_batch) == ["uid"] and sub.meta_info == {}
    assert set(data.select().batch) == {"x", "y"}
    with pytest.raises(KeyError, match="nope"):
        data.select(batch_keys=["nope"])
    popped = data.pop(batch_keys=["y"], non_tensor_batch_keys=["ids"], meta_info_keys=["temperature"])
    assert list(popped.batch) == ["y"] and popped.batch["y"].tolist() == [0.0, 1.0, 2.0]
    assert list(popped.non_tensor_batch) == ["ids"] and popped.meta_info == {"temperature": 1.0}
    assert list(data.batch) == ["x"] and list(data.non_tensor_batch) == ["uid"] and data.meta_info == {}
    with pytest.raises(KeyError):
        data.pop(batch_keys=["y"])


def test_union_merges_and_rejects_conflicts():
    data = make(3)
    extra = DataProto.from_dict(
        tensors={"z": torch.ones(3), "y": torch.arange(3).float()},
        non_tensors={"uid": ["u0", "u1", "u2"]},
        meta_info={"step": 7},
    )
    out = data.union(extra)
    assert out is data
    assert set(data.batch) == {"x", "y", "z"} and data.meta_info == {"temperature": 1.0, "step": 7}
    with pytest.raises(ValueError, match="batch\\['y'\\]"):
        make(3).union(DataProto.from_dict(tensors={"y": torch.zeros(3)}))
    with pytest.raises(ValueError, match="uid"):
        make(3).union(DataProto.from_dict(non_tensors={"uid": ["u0", "u1", "other"]}))
    with pytest.raises(ValueError, match="temperature"):
        make(3).union(DataProto.from_dict(meta_info={"temperature": 0.0}))
    with pytest.raises(ValueError, match="rows"):
        make(3).union(make(2))


def test_chunk_split_concat_round_trip():
    data = make(6)
    parts = data.chunk(3)
    assert [rows_of(p) for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert all(p.meta_info == {"temperature": 1.0} for p in parts)
    back = DataProto.concat(parts)
    assert torch.equal(back.batch["x"], data.batch["x"])
    assert back.non_tensor_batch["uid"].tolist() == data.non_tensor_batch["uid"].tolist()
    assert back.non_tensor_batch["ids"].tolist() == data.non_tensor_batch["ids"].tolist()
    assert [rows_of(p) for p in data.split(4)] == [[0, 1, 2, 3], [4, 5]]
    assert rows_of(DataProto.concat(data.split(4))) == list(range(6))
    with pytest.raises(ValueError, match="divide"):
        data.chunk(4)
    with pytest.raises(ValueError, match="keys"):
        DataProto.concat([make(2), make(2).select(batch_keys=["x"])])
    with pytest.raises(ValueError, match="empty"):
        DataProto.concat([])


def test_concat_takes_meta_info_from_the_first_part():
    first, second = make(2), make(2)
    second.meta_info = {"temperature": 0.5}
    assert DataProto.concat([first, second]).meta_info == {"temperature": 1.0}


def test_repeat_interleaved_and_tiled():
    data = make(2)
    inter = data.repeat(3, interleave=True)
    assert rows_of(inter) == [0, 0, 0, 1, 1, 1]
    assert inter.non_tensor_batch["uid"].tolist() == ["u0", "u0", "u0", "u1", "u1", "u1"]
    assert inter.batch["x"].tolist() == [[0, 10]] * 3 + [[1, 11]] * 3
    tiled = data.repeat(2, interleave=False)
    assert rows_of(tiled) == [0, 1, 0, 1]
    assert tiled.non_tensor_batch["ids"].tolist() == [[0, 0], [1, 1], [0, 0], [1, 1]]
    with pytest.raises(ValueError, match="repeat_times"):
        data.repeat(0)


@pytest.mark.parametrize("n, divisor, pad, padded_rows", [(5, 4, 3, [0, 1, 2]), (2, 5, 3, [0, 1, 0]), (4, 2, 0, [])])
def test_pad_and_unpad(n, divisor, pad, padded_rows):
    data = make(n)
    padded, pad_size = pad_dataproto_to_divisor(data, divisor)
    assert pad_size == pad
    assert len(padded) % divisor == 0
    assert rows_of(padded) == list(range(n)) + padded_rows
    restored = unpad_dataproto(padded, pad_size)
    assert rows_of(restored) == list(range(n))
    assert restored.non_tensor_batch["uid"].tolist() == data.non_tensor_batch["uid"].tolist()


def test_pad_and_unpad_reject_bad_arguments():
    with pytest.raises(ValueError, match="size_divisor"):
        pad_dataproto_to_divisor(make(3), 0)
    with pytest.raises(ValueError, match="pad_size"):
        unpad_dataproto(make(3), 4)


def test_pickle_round_trip_and_to():
    data = make(3)
    back = pickle.loads(pickle.dumps(data))
    assert torch.equal(back.batch["x"], data.batch["x"])
    assert back.non_tensor_batch["ids"].tolist() == [[0, 0], [1, 1], [2, 2]]
    assert back.meta_info == data.meta_info
    assert data.to("cpu").batch["y"].device.type == "cpu"
