"""Ray-backed worker groups."""

from verl.single_controller.ray.base import PendingResult, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

__all__ = ["PendingResult", "RayClassWithInitArgs", "RayResourcePool", "RayWorkerGroup"]
