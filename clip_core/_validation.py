"""Argument checks shared by the optimizers: every error names the argument, the value and the range."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


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


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r}; expected one of {', '.join(choices)}")


def _require_number(name: str, value: object, expected: str) -> float:
    """``value`` as a float; a non-number gets the same message as an out-of-range value.

    A one-element floating-point tensor counts as a number (a tensor ``lr``, as torch accepts).
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Invalid {name}: {value!r}; expected {expected}")
    return float(value)


# The comparisons below are written so that NaN fails them (every comparison with NaN is False).
def check_nonnegative(name: str, value: object) -> None:
    expected = "a value >= 0"
    if not _require_number(name, value, expected) >= 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected {expected}")


def check_positive(name: str, value: object) -> None:
    expected = "a value > 0"
    if not _require_number(name, value, expected) > 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected {expected}")


def check_interval(
    name: str, value: object, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    expected = f"a value in {interval}"
    v = _require_number(name, value, expected)
    above = v > low if low_open else v >= low
    below = v < high if high_open else v <= high
    if not (above and below):
        raise ValueError(f"Invalid {name}: {value!r}; expected {expected}")


def check_optional_int(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r}; expected None or an integer >= {minimum}")


def check_false(name: str, value: object, why: str) -> None:
    """A torch flag this library accepts only switched off (``differentiable``, ``capturable``)."""
    if value:
        raise ValueError(f"Invalid {name}: {value!r}; expected False ({why})")
