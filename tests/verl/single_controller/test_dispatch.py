"""Dispatch/collect rules and the worker environment, without Ray."""

import pytest
import torch

from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, Worker, read_dist_info, register, registered_methods
from verl.single_controller.base.decorator import collect_results, dispatch_args


def _proto(n):
    return DataProto.from_dict({"x": torch.arange(n)}, {"tag": [f"r{i}" for i in range(n)]}, {"m": 1})


def test_one_to_all_and_all_to_all_send_the_same_args_to_every_rank():
    for mode in (Dispatch.ONE_TO_ALL, Dispatch.ALL_TO_ALL):
        calls = dispatch_args(mode, 3, (1, "a"), {"k": 2})
        assert [c[0] for c in calls] == [0, 1, 2]
        assert all(c[1] == (1, "a") and c[2] == {"k": 2} for c in calls)
        assert collect_results(mode, ["r0", "r1", "r2"]) == ["r0", "r1", "r2"]


def test_rank_zero_calls_only_rank_zero_and_returns_its_result():
    assert dispatch_args(Dispatch.RANK_ZERO, 4, (5,), {}) == [(0, (5,), {})]
    assert collect_results(Dispatch.RANK_ZERO, ["only"]) == "only"


def test_dp_compute_proto_chunks_in_rank_order_and_concats_back():
    data = _proto(6)
    calls = dispatch_args(Dispatch.DP_COMPUTE_PROTO, 3, (data,), {"scale": 2})
    assert [c[0] for c in calls] == [0, 1, 2]
    assert [c[1][0].batch["x"].tolist() for c in calls] == [[0, 1], [2, 3], [4, 5]]
    assert [list(c[1][0].non_tensor_batch["tag"]) for c in calls] == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"]]
    assert all(c[2] == {"scale": 2} for c in calls)
    parts = [DataProto.from_dict({"y": torch.tensor([10 * r, 10 * r + 1])}, meta_info={"rank": r}) for r in range(3)]
    out = collect_results(Dispatch.DP_COMPUTE_PROTO, parts)
    assert out.batch["y"].tolist() == [0, 1, 10, 11, 20, 21]
    assert out.meta_info == {"rank": 0}


def test_dp_compute_proto_rejects_uneven_rows_and_missing_dataproto():
    with pytest.raises(ValueError, match="not divisible"):
        dispatch_args(Dispatch.DP_COMPUTE_PROTO, 4, (_proto(6),), {})
    with pytest.raises(TypeError, match="at least one DataProto"):
        dispatch_args(Dispatch.DP_COMPUTE_PROTO, 2, (3,), {})
    with pytest.raises(TypeError, match="expected DataProto"):
        collect_results(Dispatch.DP_COMPUTE_PROTO, [_proto(1), "oops"])


def test_register_records_mode_and_is_inherited():
    class Base(Worker):
        @register(Dispatch.RANK_ZERO, blocking=False)
        def a(self):
            return 1

    class Child(Base):
        @register(Dispatch.DP_COMPUTE_PROTO)
        def b(self, data):
            return data

        def plain(self):
            return 0

    specs = registered_methods(Child)
    assert set(specs) == {"a", "b"}
    assert specs["a"].dispatch_mode is Dispatch.RANK_ZERO and specs["a"].blocking is False
    assert specs["b"].dispatch_mode is Dispatch.DP_COMPUTE_PROTO and specs["b"].blocking is True
    with pytest.raises(TypeError):
        register("one_to_all")


def test_read_dist_info_parses_and_validates_environment():
    info = read_dist_info({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234",
                           "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.master_addr, info.master_port) == (1, 2, 1, "10.0.0.1", 1234)
    single = read_dist_info({})
    assert (single.rank, single.world_size) == (0, 1)
    with pytest.raises(ValueError, match="set together"):
        read_dist_info({"RANK": "0"})
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        read_dist_info({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"})
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        read_dist_info({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not an integer"):
        read_dist_info({"RANK": "x", "WORLD_SIZE": "2"})
