"""``torch.compiler.disable`` without importing TorchDynamo before anything compiles.

``torch.compiler.disable`` imports TorchDynamo (over a second per process start) when it decorates,
so a module decorating with it at import costs every run that never compiles. :func:`eager_only`
calls the function directly unless a compile is tracing it, and then through torch's own lazily
imported ``disable``, the pattern of torch's optimizers (``_disable_dynamo_if_unsupported``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

_P = ParamSpec("_P")
_T = TypeVar("_T")
# torch < 2.3 has no torch.compiler.is_compiling; its private name is the same test
_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._utils.is_compiling


def eager_only(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """``fn``, run eagerly (one graph break) when ``torch.compile`` traces a call to it.

    This is ``torch.compiler.disable`` and imports TorchDynamo. A lazy wrapper that deferred the
    import let Dynamo trace into ``fn`` when its first call came while tracing (the ``auto``
    history's quantile under ``torch.compile``, order-dependent across tests), so correctness
    wins over a second of start-up.
    """
    return torch.compiler.disable(fn)


# the code object of the wrapper torch._disable_dynamo returns (built here without TorchDynamo)
_LAZY_DISABLE_CODE = torch._disable_dynamo(lambda: None).__code__


def unwrapped_when_eager(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """``method`` (a torch function marked ``torch._disable_dynamo``) without that wrapper unless
    a compile is tracing: the wrapper imports TorchDynamo at its first call only to turn
    compilation off, as torch does for ``Optimizer.zero_grad`` and ``add_param_group``."""
    if _is_compiling() or getattr(method, "__code__", None) is not _LAZY_DISABLE_CODE:
        return method
    return method.__wrapped__  # type: ignore[attr-defined]
