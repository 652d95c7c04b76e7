"""Argument checks shared by the optimizers: every error names the argument, the value and the range."""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r}; expected one of {', '.join(choices)}")


def _require_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Invalid {name}: {value!r}; expected a real number")
    if math.isnan(value):
        raise ValueError(f"Invalid {name}: {value!r}; expected a real number, not NaN")
    return float(value)


def check_nonnegative(name: str, value: object) -> None:
    if _require_number(name, value) < 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a value >= 0")


def check_positive(name: str, value: object) -> None:
    if not _require_number(name, value) > 0:
        raise ValueError(f"Invalid {name}: {value!r}; expected a value > 0")


def check_interval(
    name: str, value: object, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
    v = _require_number(name, value)
    above = v > low if low_open else v >= low
    below = v < high if high_open else v <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"Invalid {name}: {value!r}; expected a value in {interval}")


def check_optional_int(name: str, value: object, minimum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"Invalid {name}: {value!r}; expected None or an integer >= {minimum}")
