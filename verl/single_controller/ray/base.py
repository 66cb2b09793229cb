"""Worker groups on Ray: one Ray actor per rank, placed by placement-group bundles.

``RayResourcePool`` reserves one placement group per node (``process_on_nodes[i]`` bundles,
packed on one node). ``RayWorkerGroup`` starts one actor per bundle, gives each the
``RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT`` environment (the master is a free
port on rank 0's node), and turns every ``@register``'ed method of the worker class into a
method of the group (see ``verl.single_controller.base.decorator`` for the dispatch modes).

Several groups may share one pool (e.g. actor and critic): with ``max_colocate_count=k`` each
actor takes 1/k of its bundle, so up to k groups fit on the same bundles.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable, Optional

import ray
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from verl.single_controller.base.decorator import MethodSpec, collect_results, dispatch_args, registered_methods

logger = logging.getLogger(__name__)

_DEVICES = ("cuda", "cpu")


class RayResourcePool:
    """Bundles reserved for workers: ``process_on_nodes[i]`` workers on node i.

    Args:
        process_on_nodes: workers (GPUs, or worker processes on cpu) per node.
        use_gpu: each bundle is {"GPU": 1, "CPU": 1} when True, else {"CPU": 1}.
        max_colocate_count: how many worker groups may share each bundle.
        name_prefix: prefix of the placement-group names (for ``ray status`` readability).
        ready_timeout_s: how long to wait for Ray to reserve the bundles.
    """

    def __init__(self, process_on_nodes: list[int], use_gpu: bool, max_colocate_count: int = 1,
                 name_prefix: str = "", ready_timeout_s: float = 300.0) -> None:
        nodes = list(process_on_nodes)
        if not nodes or any(not isinstance(n, int) or isinstance(n, bool) or n <= 0 for n in nodes):
            raise ValueError("RayResourcePool: process_on_nodes must be a non-empty list of positive ints, "
                             f"got {process_on_nodes!r}")
        if not isinstance(max_colocate_count, int) or max_colocate_count < 1:
            raise ValueError(f"RayResourcePool: max_colocate_count must be an int >= 1, got {max_colocate_count!r}")
        self.process_on_nodes = nodes
        self.use_gpu = bool(use_gpu)
        self.max_colocate_count = max_colocate_count
        self.name_prefix = name_prefix
        self.ready_timeout_s = ready_timeout_s
        self._pgs: Optional[list[PlacementGroup]] = None

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    @property
    def bundle(self) -> dict[str, float]:
        return {"GPU": 1, "CPU": 1} if self.use_gpu else {"CPU": 1}

    def actor_resources(self) -> dict[str, float]:
        """Ray resources one worker actor asks for inside its bundle."""
        share = 1.0 / self.max_colocate_count
        return {"num_cpus": share, "num_gpus": share if self.use_gpu else 0}

    def get_placement_groups(self) -> list[PlacementGroup]:
        """Reserve (once) and return one ready placement group per node."""
        if self._pgs is not None:
            return self._pgs
        tag = uuid.uuid4().hex[:8]
        pgs = [
            placement_group([dict(self.bundle) for _ in range(n)], strategy="STRICT_PACK",
                            name=f"{self.name_prefix}pool_{tag}_node{i}")
            for i, n in enumerate(self.process_on_nodes)
        ]
        try:
            ray.get([pg.ready() for pg in pgs], timeout=self.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            for pg in pgs:
                remove_placement_group(pg)
            raise RuntimeError(
                f"RayResourcePool: could not reserve bundles {self.bundle} x {self.process_on_nodes} (per node) "
                f"within {self.ready_timeout_s}s; cluster resources: {ray.cluster_resources()}"
            ) from None
        self._pgs = pgs
        return pgs

    def bundle_slots(self) -> list[tuple[PlacementGroup, int]]:
        """(placement group, bundle index) of every rank, in rank order."""
        return [(pg, i) for pg, n in zip(self.get_placement_groups(), self.process_on_nodes) for i in range(n)]

    def remove(self) -> None:
        """Release the placement groups (the pool's actors must be gone)."""
        for pg in self._pgs or []:
            remove_placement_group(pg)
        self._pgs = None


class RayClassWithInitArgs:
    """A worker class (plain or ``ray.remote``-decorated) and its constructor arguments."""

    def __init__(self, cls: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(cls, ray.actor.ActorClass):
            self.cls = cls.__ray_actor_class__
            self.remote_cls = cls
        elif isinstance(cls, type):
            self.cls = cls
            self.remote_cls = ray.remote(cls)
        else:
            raise TypeError(f"RayClassWithInitArgs: expected a class or a ray.remote class, got {cls!r}")
        self.args = args
        self.kwargs = kwargs


@ray.remote(num_cpus=0)
def _node_ip_and_free_port() -> tuple[str, int]:
    from verl.utils.distributed import get_free_port, get_node_ip

    return get_node_ip(), get_free_port()


class PendingResult:
    """The result of a non-blocking group call; ``get()`` waits and collects."""

    def __init__(self, refs: list[ray.ObjectRef], spec: MethodSpec, timeout_s: Optional[float]) -> None:
        self.refs = refs
        self._spec = spec
        self._timeout_s = timeout_s

    def get(self, timeout_s: Optional[float] = None) -> Any:
        timeout = self._timeout_s if timeout_s is None else timeout_s
        return collect_results(self._spec.dispatch_mode, ray.get(self.refs, timeout=timeout))


class RayWorkerGroup:
    """One Ray actor per rank of ``resource_pool``, driven as a single object.

    Args:
        resource_pool: where the ranks go.
        ray_cls_with_init: the worker class and its constructor arguments.
        device: "cuda" or "cpu"; must agree with ``resource_pool.use_gpu``.
        call_timeout_s: bound on every wait for the ranks (None = wait as long as the call takes).
        extra_env: more environment variables for every rank.
    """

    def __init__(self, resource_pool: RayResourcePool, ray_cls_with_init: RayClassWithInitArgs, device: str = "cuda",
                 call_timeout_s: Optional[float] = None, extra_env: Optional[dict[str, str]] = None) -> None:
        if device not in _DEVICES:
            raise ValueError(f"RayWorkerGroup: device must be one of {_DEVICES}, got {device!r}")
        if (device == "cuda") != resource_pool.use_gpu:
            raise ValueError(f"RayWorkerGroup: device={device!r} but the resource pool has use_gpu={resource_pool.use_gpu}")
        if not ray.is_initialized():
            raise RuntimeError("RayWorkerGroup: call ray.init() (local or with address=...) before building a group")
        self.device = device
        self.resource_pool = resource_pool
        self.call_timeout_s = call_timeout_s
        self._cls = ray_cls_with_init.cls
        self._specs = registered_methods(self._cls)
        slots = resource_pool.bundle_slots()
        master_addr, master_port = self._pick_master(slots[0][0])
        resources = resource_pool.actor_resources()
        self._workers = []
        for rank, (pg, bundle_index) in enumerate(slots):
            env = {
                "RANK": str(rank),
                "WORLD_SIZE": str(len(slots)),
                "LOCAL_RANK": str(bundle_index),
                "MASTER_ADDR": master_addr,
                "MASTER_PORT": str(master_port),
                **(extra_env or {}),
            }
            options = {
                "num_cpus": resources["num_cpus"],
                "num_gpus": resources["num_gpus"],
                "scheduling_strategy": PlacementGroupSchedulingStrategy(placement_group=pg,
                                                                        placement_group_bundle_index=bundle_index),
                "runtime_env": {"env_vars": env},
            }
            handle = ray_cls_with_init.remote_cls.options(**options).remote(*ray_cls_with_init.args,
                                                                           **ray_cls_with_init.kwargs)
            self._workers.append(handle)
        # Surface constructor errors now, with the worker's traceback.
        ray.get([w.__ray_ready__.remote() for w in self._workers], timeout=call_timeout_s)
        for name, spec in self._specs.items():
            if hasattr(self, name):
                raise AttributeError(f"RayWorkerGroup: worker method {name!r} clashes with a group attribute")
            setattr(self, name, self._group_method(name, spec))
        logger.info("started %d %s workers (master %s:%s)", len(self._workers), self._cls.__name__, master_addr,
                    master_port)

    @staticmethod
    def _pick_master(pg: PlacementGroup) -> tuple[str, int]:
        node_id = placement_group_table(pg)["bundles_to_node_id"][0]
        task = _node_ip_and_free_port.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        return ray.get(task.remote(), timeout=120)

    @property
    def world_size(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> list:
        """The Ray actor handles, in rank order."""
        return list(self._workers)

    @property
    def method_names(self) -> list[str]:
        return sorted(self._specs)

    def _group_method(self, name: str, spec: MethodSpec) -> Callable:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls = dispatch_args(spec.dispatch_mode, self.world_size, args, kwargs)
            refs = [getattr(self._workers[rank], name).remote(*a, **kw) for rank, a, kw in calls]
            pending = PendingResult(refs, spec, self.call_timeout_s)
            return pending.get() if spec.blocking else pending

        call.__name__ = name
        call.__doc__ = getattr(self._cls, name).__doc__
        return call

    def shutdown(self) -> None:
        """Kill the worker actors (the pool stays reserved)."""
        for w in self._workers:
            ray.kill(w, no_restart=True)
        self._workers = []
