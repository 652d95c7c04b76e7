r"""Exact running quantiles of the clipping-statistic history, kept on the device.

The ``auto`` thresholds need ``numpy.quantile(h_t, p)`` of every norm seen so far. Sorting the
whole history each step would cost ``O(T log T)`` and a host round trip; instead the history is
kept *sorted* on the device and each new value ``v`` is inserted by one elementwise pass,

.. math::
    s'_j = \min\bigl(s_j,\ \max(s_{j-1}, v)\bigr) \qquad (s_{-1} = -\infty,\ \text{free slots } +\infty),

which keeps every ``s_j <= v`` in place, writes ``v`` at the first ``s_j > v`` and moves the rest
one slot to the right: a sorted insert with no ``searchsorted``, no scatter and no host-side
index (one ``torch.clamp`` with tensor bounds, into a second buffer). A skipped step inserts
``+inf``, which changes nothing. With ``window=W`` the value leaving the window is removed first
by the mirror pass (``s'_j = s_j`` if ``s_j < old`` else ``s_{j+1}``). A step therefore costs one
(two when windowed) streaming pass over ``4·T`` bytes per unit and a few 0-d operations, and
never synchronises.

Memory: per unit, two sorted buffers (the pass writes one from the other) and one chronological
record, each of capacity ``>= T`` (or ``W``), in the dtype of the first values pushed (float32,
or float64 for the norms of float64 gradients, so that ``p = 1`` gives exactly the current norm
and never clips it); half precision is upcast.
"""

from __future__ import annotations

from typing import Any

import torch

_INITIAL_CAPACITY = 1024
_INF = float("inf")


class SortedHistory:
    """A stream of ``num_units`` values per step with exact linear-interpolation quantiles.

    ``push`` takes a ``valid`` flag (a 0-d bool tensor): a skipped step (non-finite gradient)
    leaves the history untouched without the host ever looking at the flag.
    """

    def __init__(self, num_units: int, window: int | None = None) -> None:
        self.num_units = num_units
        self.window = window
        # [U, cap + 2]: column 0 is -inf, columns 1..cap the ascending values (+inf when free),
        # column cap + 1 is +inf, so both neighbours of every value slot are plain views.
        self._buf: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None  # the buffer the next pass writes into
        self.raw: torch.Tensor | None = None  # [U, cap], chronological (a ring when windowed)
        self.count: torch.Tensor | None = None  # 0-d int64: valid values pushed so far
        self.pushes = 0  # host-side count of push calls; bounds ``count`` without reading it

    # -- storage ---------------------------------------------------------------------------
    def _set_sorted(self, values: torch.Tensor) -> None:
        """Lay the ascending ``[U, cap]`` values into fresh padded buffers."""
        pad = torch.full_like(values[:, :1], _INF)
        self._buf = torch.cat([-pad, values, pad], dim=1)
        self._spare = self._buf.clone()

    def _allocate(self, device: torch.device, capacity: int, dtype: torch.dtype) -> None:
        shape = (self.num_units, capacity)
        self._set_sorted(torch.full(shape, _INF, device=device, dtype=dtype))
        self.raw = torch.zeros(shape, device=device, dtype=dtype)
        self.count = torch.zeros((), dtype=torch.int64, device=device)

    def _grow(self) -> None:
        assert self.raw is not None
        self._set_sorted(torch.cat([self.sorted, torch.full_like(self.sorted, _INF)], dim=1))
        self.raw = torch.cat([self.raw, torch.zeros_like(self.raw)], dim=1)

    @property
    def sorted(self) -> torch.Tensor | None:
        """The ascending history ``[U, capacity]``, ``+inf`` in the free slots (a view)."""
        return None if self._buf is None else self._buf[:, 1:-1]

    @property
    def capacity(self) -> int:
        return 0 if self._buf is None else self._buf.shape[1] - 2

    # -- update ----------------------------------------------------------------------------
    def _pass(self, fn: Any, *args: Any) -> None:
        """One elementwise pass from the current buffer into the spare one, then swap them."""
        assert self._buf is not None and self._spare is not None
        fn(*args, out=self._spare[:, 1:-1])
        self._buf, self._spare = self._spare, self._buf

    def push(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one value per unit (``values`` of shape ``[U]``) when ``valid`` is true."""
        values = values.reshape(self.num_units, 1)
        if self._buf is None:
            cap = self.window if self.window is not None else _INITIAL_CAPACITY
            dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
            self._allocate(values.device, cap, dtype)
        elif self.window is None and self.pushes >= self.capacity:
            self._grow()  # count <= pushes < capacity keeps a free +inf slot for the insert
        assert self._buf is not None and self.raw is not None and self.count is not None
        values = values.to(self._buf.dtype)
        slot = (self.count % self.capacity).reshape(1, 1).expand(self.num_units, 1)
        if self.window is not None:
            # Remove the value leaving the window: s'_j = s_j if s_j < old else s_{j+1}
            # (old = +inf, which removes nothing, until the window is full or on a skip).
            full = valid & (self.count >= self.window)
            old = self.raw.gather(1, slot).masked_fill(~full, _INF)
            here, after = self._buf[:, 1:-1], self._buf[:, 2:]
            self._pass(torch.where, here < old, here, after)
        # Insert: s'_j = min(s_j, max(s_{j-1}, v)); v = +inf (a skipped step) changes nothing.
        insert = values.masked_fill(~valid, _INF)
        self._pass(torch.clamp, self._buf[:, :-2], insert, self._buf[:, 1:-1])
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
        assert self._buf is not None
        n = self.size().to(torch.float64)
        # numpy's virtual index for method="linear", computed as numpy does: (n - 1) * q
        virtual = (n - 1) * q
        below = torch.floor(virtual)
        gamma = virtual - below
        last = (n - 1).clamp(min=0)
        # + 1: value slot i is column i + 1 of the padded buffer
        lo = below.clamp(min=0).minimum(last).to(torch.int64) + 1
        hi = (below + 1).clamp(min=0).minimum(last).to(torch.int64) + 1
        a = self._buf.index_select(1, lo.reshape(1)).squeeze(1).double()
        b = self._buf.index_select(1, hi.reshape(1)).squeeze(1).double()
        diff = b - a
        value = torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        value = torch.where(n > 0, value, torch.full_like(value, _INF))
        return value.to(self._buf.dtype)

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
        sorted_ = self.sorted
        return {
            "num_units": self.num_units,
            "window": self.window,
            "pushes": self.pushes,
            # copies: the buffers are updated in place, and a saved state must not change
            "sorted": None if sorted_ is None else sorted_.clone(),
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
        if state["sorted"] is None:
            self._buf = self._spare = self.raw = self.count = None
            return
        self._set_sorted(state["sorted"].to(device))
        self.raw = state["raw"].to(device, copy=True)
        self.count = state["count"].to(device, copy=True)
