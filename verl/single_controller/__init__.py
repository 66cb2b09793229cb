"""Single-controller plumbing: workers, the ``@register`` dispatch decorator and Ray worker groups.

``verl.single_controller.ray`` (Ray groups) is imported lazily so that importing a worker class
does not import Ray.
"""

from verl.single_controller.base import Dispatch, Worker, register

__all__ = ["Dispatch", "Worker", "register"]
