r"""Exact running quantiles of the clipping-statistic history.

The ``auto`` thresholds need ``numpy.quantile(h_t, p)`` of every norm seen so far. Sorting the
whole history each step would cost ``O(T log T)``; instead the history is kept *sorted*, and each
step inserts one value and reads the two order statistics around the quantile. There are two
ways to do the insert, on the same buffers (so a state saved on one device loads on any other):

* **Device path** (CUDA and other accelerators): no host read at all. The new value ``v`` goes
  in by one elementwise pass,

  .. math::
      s'_j = \min\bigl(s_j,\ \max(s_{j-1}, v)\bigr)
      \qquad (s_{-1} = -\infty,\ \text{free slots } +\infty),

  which keeps every ``s_j <= v`` in place, writes ``v`` at the first ``s_j > v`` and moves the
  rest one slot right: one ``torch.clamp`` with tensor bounds into a second buffer, with no
  ``searchsorted``, scatter or host-side index. A skipped step inserts ``+inf``, which changes
  nothing. With ``window=W`` the value leaving the window is first removed by the mirror pass
  (``s'_j = s_j`` if ``s_j < old`` else ``s_{j+1}``). The quantile is interpolated from device
  indices in a few 0-d operations.
* **Host path** (CPU tensors only; their default): reading a CPU tensor is no synchronisation, so
  the step reads the value and the skip flag and updates the same buffers through NumPy views
  with a binary search and one ``memmove``: about half the cost of the ~30 small tensor
  operations of the device path, which dominate its cost there (0.16–0.4 ms against 0.45–0.8
  ms per step at T = 100,000 in ``scripts/bench_step.py``).

Both give ``numpy.quantile`` bit for bit. The optimizers choose with ``history_path`` (see
:class:`~clip_core.ClippedOptimizer`). Memory: per unit, a sorted buffer (two on the device
path, which writes one from the other) and a chronological record, each of capacity ``>= T``
(or ``W``), in the dtype of the first values pushed (float32, or float64 for the norms of
float64 gradients, so that ``p = 1`` gives exactly the current norm and never clips it); half
precision is upcast.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import torch

from clip_core._eager import eager_only

_INITIAL_CAPACITY = 1024
_INF = float("inf")


def _lerp(a: float, b: float, gamma: float) -> float:
    """numpy's ``_lerp`` (the "linear" method's interpolation), in float64 as numpy does."""
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


class SortedHistory:
    """A stream of ``num_units`` values per step with exact linear-interpolation quantiles.

    ``push`` takes a ``valid`` flag (a 0-d bool tensor): a skipped step (non-finite gradient)
    leaves the history untouched. On the device path the host never looks at the flag.
    ``quantile`` returns shape ``[num_units]``, or 0-d with ``scalar=True`` (one unit).
    ``host_path=True`` (default) takes the host path for CPU tensors and the device path for
    others (NumPy cannot view them); ``False`` takes the device path everywhere.
    """

    def __init__(
        self,
        num_units: int,
        window: int | None = None,
        *,
        scalar: bool = False,
        host_path: bool = True,
    ) -> None:
        if scalar and num_units != 1:
            raise ValueError(f"scalar=True needs num_units=1, got {num_units}")
        self.num_units = num_units
        self.window = window
        self.host_path = host_path
        self._out_shape = () if scalar else (num_units,)
        # [U, cap + 2]: column 0 is -inf, columns 1..cap the ascending values (+inf when free),
        # column cap + 1 is +inf, so both neighbours of every value slot are plain views.
        self._buf: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None  # device path: the buffer the next pass writes
        # [U, cap + 1]: chronological (a ring when windowed); a skipped push on the device path
        # writes its value into the last column, which is no slot, so it needs no read first.
        self._raw: torch.Tensor | None = None
        self.count: torch.Tensor | None = None  # 0-d int64: valid values pushed so far
        self.pushes = 0  # host-side count of push calls; bounds ``count`` without reading it
        self._host = False

    # -- storage ---------------------------------------------------------------------------
    def _set_buffers(self, sorted_: torch.Tensor, raw: torch.Tensor, count: torch.Tensor) -> None:
        """Lay ascending ``[U, cap]`` values and the record into fresh padded buffers."""
        pad = torch.full_like(sorted_[:, :1], _INF)
        self._buf = torch.cat([-pad, sorted_, pad], dim=1)
        self._raw = torch.cat([raw, torch.zeros_like(raw[:, :1])], dim=1)
        self.count = count.to(torch.int64, copy=True)
        self._host = self._buf.device.type == "cpu" and self.host_path
        if self._host:  # views sharing the tensors' memory
            self._np_buf, self._np_raw = self._buf.numpy(), self._raw.numpy()
            self._np_count = self.count.numpy()
        else:
            self._spare = self._buf.clone()
            # column offsets of value slots i and i + 1, made on the device once
            self._neighbours = torch.arange(1.0, 3.0, dtype=torch.float64, device=self._buf.device)

    def _grow(self) -> None:
        assert self.sorted is not None and self.raw is not None and self.count is not None
        sorted_ = torch.cat([self.sorted, torch.full_like(self.sorted, _INF)], dim=1)
        self._set_buffers(sorted_, torch.cat([self.raw, torch.zeros_like(self.raw)], 1), self.count)

    @property
    def sorted(self) -> torch.Tensor | None:
        """The ascending history ``[U, capacity]``, ``+inf`` in the free slots (a view)."""
        return None if self._buf is None else self._buf[:, 1:-1]

    @property
    def raw(self) -> torch.Tensor | None:
        """The chronological values ``[U, capacity]`` (a ring when windowed; a view)."""
        return None if self._raw is None else self._raw[:, :-1]

    @property
    def capacity(self) -> int:
        return 0 if self._buf is None else self._buf.shape[1] - 2

    # -- update ----------------------------------------------------------------------------
    def push(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        """Add one value per unit (``values`` of ``U`` elements) when ``valid`` is true."""
        if self._buf is None:
            cap = self.window if self.window is not None else _INITIAL_CAPACITY
            dtype = torch.float64 if values.dtype == torch.float64 else torch.float32
            shape, device = (self.num_units, cap), values.device
            self._set_buffers(
                torch.full(shape, _INF, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros((), dtype=torch.int64, device=device),
            )
        elif self.window is None and self.pushes >= self.capacity:
            self._grow()  # count <= pushes < capacity keeps a free +inf slot for the insert
        if self._host:
            self._push_host(values, valid)
        else:
            assert self._buf is not None
            self._push_device(values.reshape(self.num_units, 1).to(self._buf.dtype), valid)
        self.pushes += 1

    # torch.compile cannot trace the host path's reads: it runs eagerly, one graph break each
    @eager_only
    def _push_host(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        # Python floats and bisect over the NumPy rows: every call into torch or NumPy costs
        # tens of microseconds here, on caches the step's large passes have just emptied.
        if not bool(valid):
            return
        count, cap = int(self._np_count), self.capacity
        slot = count % cap
        full = self.window is not None and count >= self.window
        size = min(count, cap)  # values in each row before this push
        items = values.tolist()
        for unit, value in enumerate(items if isinstance(items, list) else [items]):
            row = self._np_buf[unit]  # row[1 : size + 1] holds the values
            kept = size
            if full:  # drop the value leaving the window: the rest moves one slot left (the
                # stale last slot is overwritten by the insert's shift below)
                at = bisect.bisect_left(row, float(self._np_raw[unit, slot]), 1, size + 1)
                row[at:size] = row[at + 1 : size + 1]
                kept = size - 1
            at = bisect.bisect_right(row, value, 1, kept + 1)
            row[at + 1 : kept + 2] = row[at : kept + 1]  # numpy handles the overlap
            row[at] = value
            self._np_raw[unit, slot] = value
        self._np_count[()] = count + 1

    def _pass(self, fn: Any, *args: torch.Tensor) -> None:
        """One elementwise pass from the current buffer into the spare one, then swap them.

        ``args`` are views of the current buffer's columns ``1..n`` shifted by -1, 0 or +1.
        """
        assert self._spare is not None
        n = args[0].shape[1]
        fn(*args, out=self._spare[:, 1 : n + 1])
        self._buf, self._spare = self._spare, self._buf

    def _push_device(self, values: torch.Tensor, valid: torch.Tensor) -> None:
        assert self._buf is not None and self._raw is not None and self.count is not None
        cap = self.capacity
        # Columns past count + 1 <= pushes + 1 hold +inf in both buffers and stay so: the passes
        # need not touch them (the host knows that bound without reading count).
        n = min(cap, self.pushes + 1)
        buf = self._buf
        slot = self.count if self.window is None else self.count % cap
        if self.window is not None:
            # Remove the value leaving the window: s'_j = s_j if s_j < old else s_{j+1}
            # (old = +inf, which removes nothing, until the window is full or on a skip).
            full = valid & (self.count >= self.window)
            old = torch.where(full, self._raw.index_select(1, slot.reshape(1)), _INF)
            here = buf[:, 1 : n + 1]
            self._pass(torch.where, here < old, here, buf[:, 2 : n + 2])
            buf = self._buf
        # Insert: s'_j = min(s_j, max(s_{j-1}, v)); v = +inf (a skipped step) changes nothing.
        self._pass(torch.clamp, buf[:, :n], torch.where(valid, values, _INF), buf[:, 1 : n + 1])
        # The chronological record: one element per unit, or the spare column on a skip.
        column = torch.where(valid, slot, cap).reshape(1, 1).expand(self.num_units, 1)
        self._raw.scatter_(1, column, values)
        self.count = self.count + valid

    # -- queries ---------------------------------------------------------------------------
    def size(self) -> torch.Tensor:
        """Number of values currently counted (0-d tensor on the history's device)."""
        assert self.count is not None
        return self.count if self.window is None else self.count.clamp(max=self.window)

    def quantile(self, q: float) -> torch.Tensor:
        """``numpy.quantile(history, q)`` (method "linear") per unit; +inf if empty.

        Interpolated in float64, returned in the history's dtype.
        """
        assert self._buf is not None
        return self._quantile_host(q) if self._host else self._quantile_device(q)

    @eager_only
    def _quantile_host(self, q: float) -> torch.Tensor:
        n = int(self._np_count)
        n = n if self.window is None else min(n, self.window)
        if n == 0:
            return torch.full(self._out_shape, _INF, dtype=self._buf.dtype)
        # numpy's virtual index for method="linear", computed as numpy does: (n - 1) * q
        virtual = (n - 1) * q
        below = math.floor(virtual)
        lo, hi = 1 + min(below, n - 1), 1 + min(below + 1, n - 1)  # columns of slots below, +1
        gamma = virtual - below
        values = [_lerp(float(row[lo]), float(row[hi]), gamma) for row in self._np_buf]
        # rounds as .to() does; from_numpy costs half of torch.tensor(list) on cold caches
        return torch.from_numpy(np.array(values, dtype=self._np_buf.dtype).reshape(self._out_shape))

    def _quantile_device(self, q: float) -> torch.Tensor:
        assert self._buf is not None
        n = self.size().to(torch.float64)
        virtual = (n - 1) * q
        below = torch.floor(virtual)
        gamma = virtual - below
        # value slots below and below + 1, clamped into 0..n-1, are columns 1..n of the buffer
        columns = torch.clamp(below + self._neighbours, min=1.0).minimum(n)
        a, b = self._buf.index_select(1, columns.to(torch.int64)).double().unbind(1)
        diff = b - a  # numpy's _lerp, elementwise
        value = torch.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)
        return torch.where(n > 0, value, _INF).to(self._buf.dtype).reshape(self._out_shape)

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
        sorted_, raw = self.sorted, self.raw
        return {
            "num_units": self.num_units,
            "window": self.window,
            "pushes": self.pushes,
            # copies: the buffers are updated in place, and a saved state must not change
            "sorted": None if sorted_ is None else sorted_.clone(),
            "raw": None if raw is None else raw.clone(),
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
            self._buf = self._spare = self._raw = self.count = None
            return
        self._set_buffers(
            state["sorted"].to(device), state["raw"].to(device), state["count"].to(device)
        )
