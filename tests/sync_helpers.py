"""One detector of host-device synchronisation for every test that needs one.

:class:`SyncRecorder` is a ``TorchFunctionMode`` that records each torch call which would make
the host wait for the device. ``tests/clip_core/test_state_and_sync.py`` applies it to every optimizer's
``step()`` and ``tests/tasks/test_task_contract.py`` to every task's ``loss()``.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

# Calls that make the host wait for the device: reading values (item, tolist, numpy, Python
# conversions, printing), comparisons that return Python bools, ops with data-dependent output
# shapes (nonzero, masked_select, unique, boolean-mask indexing), and copies to the host.
# ``__len__`` is not here: it reads the shape, which the host already knows.
SYNC_NAMES = {
    "item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__",
    "__complex__", "__array__", "__format__", "__repr__", "__str__", "nonzero", "argwhere",
    "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "equal", "allclose",
    "is_nonzero", "bincount", "repeat_interleave",
}  # fmt: skip
INDEXING = {"__getitem__", "__setitem__", "index", "index_put", "index_put_"}


def _devices_in(args, kwargs) -> list[torch.device]:
    found = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.device):
            found.append(a)
        elif isinstance(a, str):
            with contextlib.suppress(RuntimeError):
                found.append(torch.device(a))
        elif isinstance(a, torch.Tensor):
            found.append(a.device)
    return found


def _has_bool_index(args) -> bool:
    stack = list(args[1:])
    while stack:
        a = stack.pop()
        if isinstance(a, tuple | list):
            stack.extend(a)
        elif isinstance(a, torch.Tensor) and a.dtype == torch.bool:
            return True
    return False


class SyncRecorder(TorchFunctionMode):
    """Records every torch call inside the mode that would synchronise host and device.

    Copies between host and device count only when they cross devices: device-to-host
    (``.to(cpu)``, ``copy_`` into a CPU tensor) and host data to a device
    (``torch.tensor(..., device=...)``, a blocking copy from pageable memory). On a CPU-only
    machine these rules are exercised by the self-test alone (with "meta" standing in for the
    accelerator); the CUDA test below covers them for real where a GPU is present.
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", repr(func))
        if name in SYNC_NAMES:
            self.syncs.append(name)
        elif name in INDEXING and _has_bool_index(args):
            self.syncs.append(f"{name}[bool mask]")
        elif name in ("tensor", "as_tensor") and any(
            d.type != "cpu" for d in _devices_in((), kwargs)
        ):
            self.syncs.append(f"{name}(host data, device={kwargs['device']})")
        elif name == "to" and args and isinstance(args[0], torch.Tensor):
            targets = _devices_in(args[1:], kwargs)
            if any(d.type == "cpu" for d in targets) and args[0].device.type != "cpu":
                self.syncs.append(f"to(cpu) from {args[0].device}")
        elif (
            name == "copy_"
            and len(args) >= 2
            and isinstance(args[1], torch.Tensor)
            and args[0].device.type == "cpu"
            and args[1].device.type != "cpu"
        ):
            self.syncs.append(f"copy_ to cpu from {args[1].device}")
        return func(*args, **kwargs)
