"""Checks of user values: every error reads ``Invalid <key>: <value!r>; expected <what>``.

One set of helpers for the optimizers' arguments and for the benchmark's config values alike
(so it imports nothing beyond torch and the standard library). ``key`` is what the user typed:
``lr`` for a constructor argument, ``task.batch_size`` for a Hydra config value. A dotted key is
a config key, and its messages spell ``None`` as YAML does, ``null`` (a YAML ``None`` is the
string ``'None'``). Each check returns the value it accepted, so that a caller can write
``self.batch_size = check_int("task.batch_size", batch_size, 1)``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


def invalid(key: str, value: object, expected: str) -> ValueError:
    """The one error format; for checks the helpers below do not cover."""
    return ValueError(f"Invalid {key}: {value!r}; expected {expected}")


def _or_none(key: str, expected: str, optional: bool) -> str:
    if not optional:
        return expected
    return f"{'null' if '.' in key else 'None'} or {expected}"


@contextmanager
def naming(owner: str) -> Iterator[None]:
    """Append the class the user called to the ``ValueError`` raised inside (once).

    Appended rather than prefixed, so that a message still starts with ``Invalid <key>``.
    """
    try:
        yield
    except ValueError as error:
        message = str(error)
        if message.endswith(f"({owner})"):
            raise
        raise ValueError(f"{message} ({owner})") from error


def check_choice(key: str, value: Any, accepted: Iterable[Any], *, optional: bool = False) -> Any:
    accepted = tuple(accepted)
    if (value is None and optional) or value in accepted:
        return value
    expected = f"one of {', '.join(str(a) for a in accepted)}"
    raise invalid(key, value, _or_none(key, expected, optional))


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(
    v: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    # written so that NaN fails (every comparison with NaN is False)
    above = low is None or (v > low if low_open else v >= low)
    below = high is None or (v < high if high_open else v <= high)
    return bool(above and below) and v == v


def check_int(
    key: str,
    value: Any,
    low: int | None = None,
    high: int | None = None,
    *,
    optional: bool = False,
) -> Any:
    """An integer (``bool`` refused) in ``[low, high]``; returned as a Python ``int``."""
    if value is None and optional:
        return None
    if (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and _within(int(value), low, high, False, False)
    ):
        return int(value)
    expected = f"an integer {_bounds(low, high, False, False)}".rstrip()
    raise invalid(key, value, _or_none(key, expected, optional))


def check_number(
    key: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> Any:
    """A real number (``bool`` refused, NaN refused) within the bounds; returned unchanged.

    A one-element floating-point tensor counts as a number (a tensor ``lr``, as torch accepts).
    """
    if value is None and optional:
        return None
    if isinstance(value, torch.Tensor) and value.numel() != 1:  # torch's own wording
        raise ValueError(
            f"Invalid {key}: a tensor of shape {list(value.shape)}; Tensor {key} must be 1-element"
        )
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        number: float | None = float(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
    else:
        number = None
    if number is not None and _within(number, low, high, low_open, high_open):
        return value
    expected = f"a value {_bounds(low, high, low_open, high_open)}".rstrip()
    raise invalid(key, value, _or_none(key, expected, optional))


def check_nonnegative(key: str, value: Any) -> Any:
    return check_number(key, value, 0)


def check_positive(key: str, value: Any) -> Any:
    return check_number(key, value, 0, low_open=True)


def check_path(
    key: str, value: Any, *, optional: bool = False, expected: str = "a path"
) -> str | None:
    """A non-empty ``str`` or ``os.PathLike`` (not checked on disk), returned as a ``str``.

    Existence is left to the code that reads it, which can name the layout it expects.
    """
    if value is None and optional:
        return None
    if isinstance(value, str | os.PathLike) and str(os.fspath(value)).strip():
        return str(os.fspath(value))
    raise invalid(key, value, _or_none(key, expected, optional))


def check_false(key: str, value: Any, why: str) -> None:
    """A torch flag this library accepts only switched off (``differentiable``, ``capturable``)."""
    if value:
        raise invalid(key, value, f"False ({why})")
