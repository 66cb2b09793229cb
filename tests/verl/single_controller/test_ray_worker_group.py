"""RayWorkerGroup with two CPU ranks on a local Ray: every dispatch mode and a gloo all_reduce."""

import os
import sys

import pytest
import torch

from verl.protocol import DataProto
from verl.single_controller.base import Dispatch, Worker, register

import ray  # CI has it: a missing one fails, it is not skipped

pytestmark = pytest.mark.slow


class EchoWorker(Worker):
    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    @register(Dispatch.ONE_TO_ALL)
    def init_dist(self):
        from verl.utils.distributed import init_distributed

        info = self.dist_info
        init_distributed("cpu", info.rank, info.world_size, info.master_addr, info.master_port, timeout_s=60)
        return True

    @register(Dispatch.ONE_TO_ALL)
    def whoami(self, tag):
        return {"rank": self.rank, "world_size": self.world_size, "tag": tag, "master": os.environ["MASTER_ADDR"],
                "port": os.environ["MASTER_PORT"]}

    @register(Dispatch.DP_COMPUTE_PROTO)
    def scale(self, data, factor):
        n = len(data)
        return DataProto.from_dict({"y": data.batch["x"] * factor + self.offset},
                                   {"rank": [self.rank] * n}, {"from_rank": self.rank})

    @register(Dispatch.RANK_ZERO)
    def rank_only(self):
        return self.rank

    @register(Dispatch.ALL_TO_ALL)
    def add(self, a, b=0):
        return a + b + 100 * self.rank

    @register(Dispatch.ONE_TO_ALL, blocking=False)
    def all_reduce_sum(self, value):
        import torch.distributed as dist

        t = torch.tensor([value * (self.rank + 1)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item())


@pytest.fixture(scope="module")
def group(ray_cluster):
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pool = RayResourcePool([2], use_gpu=False)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(EchoWorker, offset=7), device="cpu", call_timeout_s=120)
    yield wg
    wg.shutdown()
    pool.remove()


def test_group_has_ranks_and_environment(group):
    assert group.world_size == 2
    assert set(group.method_names) == {"init_dist", "whoami", "scale", "rank_only", "add", "all_reduce_sum"}
    infos = group.whoami("hi")
    assert [i["rank"] for i in infos] == [0, 1]
    assert all(i["world_size"] == 2 and i["tag"] == "hi" for i in infos)
    assert infos[0]["master"] == infos[1]["master"] and infos[0]["port"] == infos[1]["port"]


def test_dp_compute_proto_splits_and_concatenates(group):
    data = DataProto.from_dict({"x": torch.arange(6)})
    out = group.scale(data, 3)
    assert out.batch["y"].tolist() == [3 * i + 7 for i in range(6)]
    assert list(out.non_tensor_batch["rank"]) == [0, 0, 0, 1, 1, 1]
    assert out.meta_info == {"from_rank": 0}
    with pytest.raises(ValueError, match="not divisible"):
        group.scale(DataProto.from_dict({"x": torch.arange(3)}), 1)


def test_rank_zero_and_all_to_all(group):
    assert group.rank_only() == 0
    assert group.add(1, b=2) == [3, 103]


def test_all_reduce_across_ranks_non_blocking(group):
    assert group.init_dist() == [True, True]
    pending = group.all_reduce_sum(2.0)
    # rank 0 contributes 2 * 1, rank 1 contributes 2 * 2
    assert pending.get() == [6.0, 6.0]
