"""Worker base class and the ``@register`` dispatch decorator."""

from verl.single_controller.base.decorator import Dispatch, MethodSpec, register, registered_methods
from verl.single_controller.base.worker import DistInfo, Worker, read_dist_info

__all__ = ["Dispatch", "DistInfo", "MethodSpec", "Worker", "read_dist_info", "register", "registered_methods"]
