"""Exact running quantiles of the clipping-statistic history, kept on the device.

The ``auto`` thresholds need ``numpy.quantile(h_t, p)`` of every norm seen so far. Sorting the
whole history each step would cost ``O(T log T)`` and a host round trip; instead the history is
kept *sorted* on the device and each new value is inserted with ``searchsorted`` plus one shifted
copy, so a step costs ``O(T)`` elementwise device work (a few passes over ``4·T`` bytes per unit)
and never synchronises. With ``window=W`` only the last ``W`` values count (the oldest value is
removed the same way), bounding memory and per-step cost by ``W``.

Memory: two arrays (sorted and chronological) of capacity ``>= T`` (or ``W``) per unit, in the
dtype of the first values pushed (float32, or float64 for the norms of float64 gradients, so
that ``p = 1`` gives exactly the current norm and never clips it); half precision is upcast.
"""

from __future__ import annotations

from typing import Any

import torch

_INITIAL_CAPACITY = 1024


class SortedHistory:
    """A stream of ``num_units`` values per step with exact linear-interpolation quantiles.

    ``push`` takes a ``valid`` flag (a 0-d bool tensor): a skipped step (non-finite gradient)
    leaves the history untouched without the host ever looking at the flag.
    """

    def __init__(self, num_units: int, window: int | None = None) -> None:
        self.num_units = num_units
        self.window = window
        self.sorted: torch.Tensor | None = None  # [U, cap], ascending, +inf padded
        self.raw: torch.Tensor | None = None  # [U, cap], chronological (a ring when windowed)
        self.count: torch.Tensor | None = None  # 0-d int64: valid values pushed so far
        self.pushes = 0  # host-side count of push calls; bounds ``count`` without reading it
        self._positions: torch.Tensor | None = None  # arange(capacity), made once per capacity

    # -- storage ---------------------------------------------------------------------------
    def _allocate(self, device: torch.device, capacity: int, dtype: torch.dtype) -> None:
        shape = (self.num_units, capacity)
        self.sorted = torch.full(shape, float("inf"), device=device, dtype=dtype)
        self.raw = torch.zeros(shape, device=device, dtype=dtype)
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def _grow(self) -> None:
        assert self.sorted is not None and self.raw is not None
        cap = self.sorted.shape[1]
        self.sorted = torch.cat([self.sorted, torch.full_like(self.sorted, float("inf"))], dim=1)
        self.raw = torch.cat([self.raw, torch.zeros_like(self.raw)], dim=1)
        assert self.sorted.shape[1] == 2 * cap

    @property
    def capacity(self) -> int:
        return 0 if self.sorted is None else self.sorted.shape[1]

    # -- update ----------------------------------------------------------------------------
    def push(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one value per unit (``values`` of shape ``[U]``) when ``valid`` is true."""
        values = values.reshape(self.num_units, 1)
        if self.sorted is None:
            cap = self.window if self.window is not None else _INITIAL_CAPACITY
            dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
            self._allocate(values.device, cap, dtype)
        elif self.window is None and self.pushes >= self.capacity:
            self._grow()  # count <= pushes < capacity keeps a free +inf slot for the insert
        assert self.sorted is not None and self.raw is not None and self.count is not None
        values = values.to(self.sorted.dtype)
        cap = self.capacity
        if self._positions is None or self._positions.numel() != cap:
            self._positions = torch.arange(cap, device=values.device)
        idx = self._positions
        slot = (self.count % cap).reshape(1, 1).expand(self.num_units, 1)
        beyond = torch.full_like(slot, cap)  # a position no element has: "change nothing"
        sorted_ = self.sorted
        if self.window is not None:
            # Drop the value that leaves the window: everything after its position moves left.
            old = self.raw.gather(1, slot)
            at = torch.searchsorted(sorted_, old, side="left")
            at = torch.where(valid & (self.count >= self.window), at, beyond)
            left = torch.cat([sorted_[:, 1:], torch.full_like(sorted_[:, :1], float("inf"))], 1)
            sorted_ = torch.where(idx >= at, left, sorted_)
        # Insert: elements after the insertion point move right by one (the last slot is +inf
        # padding), then the value is written at its point. An invalid push inserts nowhere.
        at = torch.searchsorted(sorted_, values, right=True)
        at = torch.where(valid, at, beyond)
        right = torch.cat([sorted_[:, :1], sorted_[:, :-1]], dim=1)
        inserted = torch.where(idx < at, sorted_, right)
        point = at.clamp(max=cap - 1)
        inserted.scatter_(1, point, torch.where(valid, values, inserted.gather(1, point)))
        self.sorted = inserted
        # The chronological record changes in one element per unit, in place.
        self.raw.scatter_(1, slot, torch.where(valid, values, self.raw.gather(1, slot)))
        self.count = self.count + valid.to(torch.int64)
        self.pushes += 1

    # -- queries ---------------------------------------------------------------------------
    def size(self) -> torch.Tensor:
        """Number of values currently counted (0-d device tensor)."""
        assert self.count is not None
        return self.count if self.window is None else self.count.clamp(max=self.window)

    def quantile(self, q: float) -> torch.Tensor:
        """``numpy.quantile(history, q)`` (method "linear") per unit, shape ``[U]``; +inf if empty.

        Interpolated in float64, returned in the history's dtype.
        """
        assert self.sorted is not None
        n = self.size().to(torch.float64)
        # numpy's virtual index for method="linear", computed as numpy does: (n - 1) * q
        virtual = (n - 1) * q
        below = torch.floor(virtual)
        gamma = virtual - below
        last = (n - 1).clamp(min=0)
        lo = below.clamp(min=0).minimum(last).to(torch.int64)
        hi = (below + 1).clamp(min=0).minimum(last).to(torch.int64)
        a = self.sorted.index_select(1, lo.reshape(1)).squeeze(1).double()
        b = self.sorted.index_select(1, hi.reshape(1)).squeeze(1).double()
        diff = b - a
        value = torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        value = torch.where(n > 0, value, torch.full_like(value, float("inf")))
        return value.to(self.sorted.dtype)

    def values(self) -> torch.Tensor:
        """The counted history in chronological order, shape ``[U, n]`` (synchronises; not for step())."""
        assert self.raw is not None
        n = int(self.size())
        if self.window is None or int(self.count) <= self.window:
            return self.raw[:, :n].clone()
        start = int(self.count) % self.window
        return torch.cat([self.raw[:, start:], self.raw[:, :start]], dim=1)

    # -- persistence -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "num_units": self.num_units,
            "window": self.window,
            "pushes": self.pushes,
            # copies: ``raw`` is updated in place, and a saved state must not change afterwards
            "sorted": None if self.sorted is None else self.sorted.clone(),
            "raw": None if self.raw is None else self.raw.clone(),
            "count": None if self.count is None else self.count.clone(),
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        if state["num_units"] != self.num_units or state["window"] != self.window:
            raise ValueError(
                "clip history in the state_dict has "
                f"num_units={state['num_units']}, window={state['window']}, but this optimizer "
                f"expects num_units={self.num_units}, window={self.window}"
            )
        self.pushes = int(state["pushes"])
        for key in ("sorted", "raw", "count"):
            value = state[key]
            setattr(self, key, None if value is None else value.to(device, copy=True))
