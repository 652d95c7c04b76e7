"""The fair protocol of every comparison: grids, robust selection, edges, report statistics.

This module holds the statistics and the bookkeeping only (no files, no runs); the drivers
(``scripts/tuned_comparison.py``, ``scripts/regime_map.py``) make the runs and call it. The
protocol, in words:

1. **Equal budgets.** Every method is tuned on the product of its learning-rate grid and the grid
   of its own second knob (λ for a fixed threshold, p for ``auto``, β₂ or ε for Adam, z for
   ZClip, the quantile for AutoClip, the clip factor for AGC, δ for Huber). A method without a
   natural second knob gets the same count another stated way (a momentum grid for SGD, say).
   :func:`settings_count` counts a method's settings and every table prints the count;
   :func:`unequal_counts` names the methods whose count differs.
2. **Grids.** Learning rates on a half-decade grid (:func:`half_decade_grid`, mantissas 1 and 3:
   1e-3, 3e-3, 1e-2, ...) or any fixed ratio (:func:`geometric_grid`).
3. **Robust selection.** Each setting is scored by the **median** over the tuning seeds of its
   final metric; a diverged, failed or non-finite run scores worst (+∞ when oriented so that
   smaller is better), and a setting missing a tuning seed is not a candidate. The best score
   wins (:func:`select`). Ties (equal medians, such as MCC 0 on a majority-class plateau) are
   broken by the median of a second metric (the validation loss, lower is better), then by the
   earlier setting in grid order (the smaller learning rate, then the smaller knob value): the
   rule and the number of tied settings are returned with the choice.
4. **Edges.** A choice on the first or last value of a tuned axis is an edge choice
   (:func:`edge_flag`), for the second knob as for the learning rate. :func:`extend_axis` gives
   the axis one step beyond such an edge; drivers extend and re-tune until no choice sits on an
   edge or a stated cap (or the knob's bound) is hit, and every edge that remains is flagged.
5. **Report statistics.** The chosen setting is run on fresh report seeds; :func:`summarize`
   gives their mean, median and a bootstrap 90% interval of the mean
   (``scipy.stats.bootstrap``, BCa, 9,999 resamples, a fixed seed; percentile where BCa is
   undefined; non-finite values are counted as failed and left out of the statistics).
6. **Paired differences.** Against a named baseline over the same report seeds,
   :func:`paired_difference` gives the mean and median of the per-seed differences, a bootstrap
   90% interval of the mean difference, the Wilcoxon signed-rank p and the paired t-test p
   (``scipy.stats``). :func:`verdict` says a difference **holds** only when the interval
   excludes 0 *and* the paired t-test agrees at the same level (p < 0.10) with every pair
   finite: with five seeds a bootstrap interval alone is too narrow (it ignores the t
   distribution's small-sample width). :func:`best_baseline` names the baseline to beat.
7. **Aggregates across tasks** (optional): with ``rliable`` (Agarwal et al. 2021), the
   interquartile mean of normalised scores with stratified-bootstrap intervals
   (:func:`aggregate_iqm`) and score-distribution performance profiles (:func:`score_profiles`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

#: the report level of every interval and test of the protocol
CONFIDENCE = 0.90
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
#: knob scales :func:`extend_axis` steps in: a ratio (log), a difference (linear), or a ratio of
#: 1 − x (log1m: β₂, percentiles near 1)
SCALES = ("log", "linear", "log1m")


# ------------------------------------------------------------------------------------ grids


def _round_sig(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def half_decade_grid(low: float, high: float) -> list[float]:
    """The half-decade values from ``low`` to ``high``: mantissas 1 and 3 (1e-3, 3e-3, 1e-2, ...)
    that lie in ``[low, high]`` (both positive)."""
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(
            f"Invalid grid bounds: low={low!r}, high={high!r}; expected 0 < low <= high"
        )
    first, last = math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1
    values = [m * 10.0**e for e in range(first, last + 1) for m in (1, 3)]
    eps = 1e-9
    return [_round_sig(v, 1) for v in values if low * (1 - eps) <= v <= high * (1 + eps)]


def geometric_grid(low: float, ratio: float, count: int, digits: int = 3) -> list[float]:
    """``count`` values ``low, low·ratio, low·ratio², ...``, each to ``digits`` significant digits."""
    if not (low > 0 and ratio > 1 and count >= 1):
        raise ValueError(f"Invalid geometric grid: low={low!r}, ratio={ratio!r}, count={count!r}; "
                         "expected low > 0, ratio > 1, count >= 1")  # fmt: skip
    return [_round_sig(low * ratio**i, digits) for i in range(count)]


@dataclass(frozen=True)
class Axis:
    """One tuned axis of a method: its override ``key``, its ``values`` in grid order, the
    ``scale`` it is extended on, the ``bounds`` a value may not cross (open interval) and, when
    given, the ``step`` of an extension (a ratio on a log scale, a difference on a linear one)
    instead of the axis' own end step (a λ grid on close quantiles grows by half decades)."""

    key: str
    values: tuple[float, ...]
    scale: str = "log"
    bounds: tuple[float, float] = (0.0, math.inf)
    step: float | None = None

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(
                f"Invalid scale for {self.key}: {self.scale!r}; expected one of {SCALES}"
            )
        if not self.values:
            raise ValueError(f"Invalid axis {self.key}: no values")
        if list(self.values) != sorted(self.values) or len(set(self.values)) != len(self.values):
            raise ValueError(f"Invalid axis {self.key}: {list(self.values)}; expected distinct "
                             "values in increasing order")  # fmt: skip

    @property
    def name(self) -> str:
        """The key's last part, a list index kept with its list (``step_rule.betas.1`` →
        ``betas[1]``, ``optimizer.clipping_level`` → ``clipping_level``): what tables print."""
        parts = self.key.split(".")
        if len(parts) > 1 and parts[-1].isdigit():
            return f"{parts[-2]}[{parts[-1]}]"
        return parts[-1]


def settings(axes: Sequence[Axis]) -> list[tuple[float, ...]]:
    """Every setting of a method, the product of its axes, in grid order (first axis slowest)."""
    return list(product(*(a.values for a in axes)))


def settings_count(axes: Sequence[Axis]) -> int:
    """How many settings a method is tuned on: the product of its axes' lengths."""
    return math.prod(len(a.values) for a in axes)


def unequal_counts(spaces: Mapping[str, Sequence[Axis]]) -> dict[str, int]:
    """The methods whose settings count differs from the most common count (``{}``: all equal)."""
    counts = {name: settings_count(axes) for name, axes in spaces.items()}
    if not counts:
        return {}
    values = list(counts.values())
    common = max(set(values), key=values.count)
    return {name: n for name, n in counts.items() if n != common}


# -------------------------------------------------------------------------------- selection


def oriented(value: float, lower_is_better: bool) -> float:
    """``value`` so that smaller is better; a non-finite value (diverged, failed) is +∞, worst."""
    if value is None or not math.isfinite(value):
        return math.inf
    return float(value) if lower_is_better else -float(value)


def robust_score(values: Sequence[float], lower_is_better: bool) -> float:
    """The median over seeds of the oriented values (smaller is better; failures count worst)."""
    if len(values) == 0:
        return math.inf
    return float(np.median([oriented(v, lower_is_better) for v in values]))


@dataclass
class Selection:
    """A method's chosen setting, its robust score (oriented: smaller is better), how many
    settings tied with it on that score and how the tie was broken, and every candidate's score."""

    setting: Hashable
    score: float
    tied: int
    rule: str
    scores: dict[Hashable, float] = field(default_factory=dict)


TIE_RULE = "median tie-break metric (lower is better), then grid order"


def select(
    results: Mapping[Hashable, Mapping[int, float]],
    seeds: Sequence[int],
    lower_is_better: bool,
    tie_break: Mapping[Hashable, Mapping[int, float]] | None = None,
) -> Selection | None:
    """The best setting of ``results`` (setting → {tuning seed: final metric}) by the median
    over ``seeds``; settings are in grid order (a dict's order). A setting without every seed is
    no candidate; ``None`` when none is complete. Equal medians are told apart by the median of
    ``tie_break`` (lower is better; a missing value counts worst), then by grid order."""
    seeds = list(seeds)
    scores, order = {}, {}
    for i, (setting, by_seed) in enumerate(results.items()):
        if all(s in by_seed for s in seeds):
            scores[setting] = robust_score([by_seed[s] for s in seeds], lower_is_better)
            order[setting] = i
    if not scores:
        return None
    best = min(scores.values())
    tied = [s for s in scores if scores[s] == best]

    def tie_key(setting: Hashable) -> tuple[float, int]:
        values = (tie_break or {}).get(setting, {})
        second = robust_score([values.get(s, math.nan) for s in seeds], lower_is_better=True)
        return (second if tie_break is not None else 0.0), order[setting]

    chosen = min(tied, key=tie_key)
    rule = "unique best median" if len(tied) == 1 else TIE_RULE
    return Selection(chosen, best, len(tied), rule, scores)


# ------------------------------------------------------------------------------------ edges


def edge_flag(values: Sequence[float], chosen: float) -> str:
    """``"low"``/``"high"`` when ``chosen`` is the smallest/largest value of a tuned axis,
    ``"only"`` for a one-value axis (nothing was tuned), ``""`` inside."""
    values = sorted(values)
    if chosen not in values:
        raise ValueError(f"Invalid choice {chosen!r}; expected one of the axis values {values}")
    if len(values) == 1:
        return "only"
    return "low" if chosen == values[0] else ("high" if chosen == values[-1] else "")


def edge_flags(axes: Sequence[Axis], setting: Sequence[float]) -> dict[str, str]:
    """The edge flag of a chosen ``setting`` on each of its ``axes`` (by the axis key)."""
    return {a.key: edge_flag(a.values, v) for a, v in zip(axes, setting, strict=True)}


def _step(axis: Axis, side: str) -> float:
    """The next value beyond ``side`` of ``axis``, one of its own end steps away."""
    v = axis.values
    a, b = (v[0], v[min(1, len(v) - 1)]) if side == "low" else (v[-1], v[max(-2, -len(v))])
    if axis.step is not None and axis.scale != "log1m":
        sign = -1 if side == "low" else 1
        return a + sign * axis.step if axis.scale == "linear" else a * axis.step**sign
    if axis.scale == "linear":
        return a + (a - b)
    if axis.scale == "log":
        return a * (a / b)
    return 1 - (1 - a) * ((1 - a) / (1 - b))  # log1m: the same ratio of 1 − x


def _on_half_decades(axis: Axis) -> bool:
    """Whether a log axis' values are all half-decade values (mantissa 1 or 3)."""
    return axis.scale == "log" and all(
        v > 0 and _round_sig(v, 1) == v and str(f"{v:e}")[0] in "13" for v in axis.values
    )


def _lattice_step(values: Sequence[float], side: str) -> float:
    """The half-decade value next to the end of ``values`` on ``side``."""
    end = values[0] if side == "low" else values[-1]
    mantissa, exponent = int(f"{end:e}"[0]), math.floor(math.log10(end) + 1e-9)
    if side == "high":
        return 3 * 10.0**exponent if mantissa == 1 else 10.0 ** (exponent + 1)
    return 10.0**exponent if mantissa == 3 else 3 * 10.0 ** (exponent - 1)


def extend_axis(axis: Axis, side: str, digits: int = 3) -> Axis | None:
    """``axis`` with one more value beyond its ``side`` (``"low"`` or ``"high"``) edge, at the
    axis' own end step on its scale (a ratio, a difference, or a ratio of 1 − x; the next
    half-decade value for a grid of half-decade values), rounded to
    ``digits`` significant digits; ``None`` when that value would cross the axis' bounds or the
    axis has a single value and no ``step`` (no step to repeat)."""
    if side not in ("low", "high"):
        raise ValueError(f"Invalid side: {side!r}; expected 'low' or 'high'")
    if len(axis.values) < 2 and axis.step is None:
        return None
    new = _lattice_step(axis.values, side) if _on_half_decades(axis) else _step(axis, side)
    new = 1 - _round_sig(1 - new, digits) if axis.scale == "log1m" else _round_sig(new, digits)
    low, high = axis.bounds
    if not (low < new < high) or new in axis.values:
        return None
    values = (new, *axis.values) if side == "low" else (*axis.values, new)
    return Axis(axis.key, values, axis.scale, axis.bounds, axis.step)


def extensions(axes: Sequence[Axis], setting: Sequence[float]) -> tuple[list[Axis], dict[str, str]]:
    """One round of the grid-extension loop: ``axes`` with every axis whose chosen value sits on
    an edge extended one step beyond it, and the edges that cannot be extended (key → flag).
    Drivers re-tune the new settings and call it again until nothing changes or their cap."""
    flags = edge_flags(axes, setting)
    grown, stuck = [], {}
    for axis in axes:
        flag = flags[axis.key]
        wider = extend_axis(axis, flag) if flag in ("low", "high") else None
        if flag in ("low", "high") and wider is None:
            stuck[axis.key] = flag
        grown.append(wider or axis)
    return grown, stuck


# --------------------------------------------------------------------------- report statistics


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, str]:
    """``(low, high, method)``: a bootstrap interval of ``statistic`` over ``values``
    (``scipy.stats.bootstrap``, BCa; percentile where BCa is undefined, as for constant or
    two-point samples); ``(v, v, "constant")`` when every value is equal, NaN for < 2 values."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size < 2:
        v = float(statistic(x)) if x.size else math.nan
        return v, v, "one value"
    if np.all(x == x[0]):
        return float(x[0]), float(x[0]), "constant"
    for method in ("BCa", "percentile"):
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa's degenerate-sample warning: percentile follows
            res = stats.bootstrap((x,), lambda s, axis=-1: statistic(s, axis=axis),
                                  confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                                  method=method, rng=np.random.default_rng(seed))  # fmt: skip
        lo, hi = res.confidence_interval
        if math.isfinite(lo) and math.isfinite(hi):
            return float(lo), float(hi), method
    return math.nan, math.nan, "undefined"


@dataclass
class Summary:
    """The report statistics of one method's report seeds."""

    n: int  # report seeds
    failed: int  # of them non-finite (diverged or failed): left out of the statistics below
    mean: float
    median: float
    low: float  # bootstrap 90% interval of the mean
    high: float
    interval: str  # how the interval was made

    def cell(self, digits: int = 4) -> str:
        """``mean [low, high]`` (and the failures) for a table."""
        if not math.isfinite(self.mean):
            return f"— ({self.failed}/{self.n} failed)"
        text = f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text + (f" ({self.failed}/{self.n} failed)" if self.failed else "")


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, median and a bootstrap interval of the mean over the finite ``values`` (one per
    report seed); the non-finite ones are counted as failed."""
    x = np.asarray([v if v is not None else math.nan for v in values], dtype=float)
    ok = x[np.isfinite(x)]
    if ok.size == 0:
        return Summary(x.size, x.size, math.nan, math.nan, math.nan, math.nan, "no finite value")
    lo, hi, how = bootstrap_interval(ok, np.mean, confidence)
    return Summary(
        x.size, int(x.size - ok.size), float(ok.mean()), float(np.median(ok)), lo, hi, how
    )


@dataclass
class Paired:
    """A method against a baseline over the report seeds both have: per-seed differences
    (method − baseline, in the metric's own units)."""

    n: int  # pairs with both values finite
    dropped: int  # pairs left out: a value missing or non-finite
    mean: float
    median: float
    low: float  # bootstrap 90% interval of the mean difference
    high: float
    p_wilcoxon: float
    p_t: float
    lower_is_better: bool

    @property
    def verdict(self) -> str:
        return verdict(self)


def _p(test: Callable[[], Any]) -> float:
    """A test's two-sided p; 1.0 when every difference is zero (nothing to test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = float(test().pvalue)
        except ValueError:
            return 1.0
    return 1.0 if math.isnan(p) else p


def paired_difference(
    method: Mapping[int, float], baseline: Mapping[int, float], lower_is_better: bool
) -> Paired:
    """``method`` − ``baseline`` over the seeds both have (seed → final metric): mean and median
    difference, bootstrap 90% interval of the mean difference, Wilcoxon signed-rank p and paired
    t-test p (two-sided, ``scipy.stats``). Pairs with a non-finite value are dropped and counted."""
    from scipy import stats

    common = sorted(set(method) & set(baseline))
    pairs = [(method[s], baseline[s]) for s in common]
    ok = [(a, b) for a, b in pairs if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]  # fmt: skip
    dropped = len(set(method) | set(baseline)) - len(ok)
    a = np.array([p[0] for p in ok], dtype=float)
    b = np.array([p[1] for p in ok], dtype=float)
    d = a - b
    if d.size < 2:
        mean = float(d.mean()) if d.size else math.nan
        return Paired(d.size, dropped, mean, mean, math.nan, math.nan, math.nan, math.nan, lower_is_better)  # fmt: skip
    lo, hi, _ = bootstrap_interval(d, np.mean)
    p_w = _p(lambda: stats.wilcoxon(a, b))
    p_t = _p(lambda: stats.ttest_rel(a, b))
    return Paired(d.size, dropped, float(d.mean()), float(np.median(d)), lo, hi, p_w, p_t, lower_is_better)  # fmt: skip


def verdict(p: Paired, alpha: float = 1 - CONFIDENCE) -> str:
    """``"holds: better"``/``"holds: worse"`` only when the bootstrap interval of the mean
    difference excludes 0, the paired t-test agrees (p < ``alpha``) and no pair was dropped;
    otherwise ``"not established"`` (or ``"too few pairs"`` below 3)."""
    if p.n < 3:
        return "too few pairs"
    if p.dropped or not (math.isfinite(p.low) and math.isfinite(p.high)):
        return "not established"
    excludes = p.low > 0 or p.high < 0
    if not (excludes and p.p_t < alpha):
        return "not established"
    up = p.mean > 0
    return "holds: better" if up != p.lower_is_better else "holds: worse"


def best_baseline(
    summaries: Mapping[str, Summary], baselines: Sequence[str], lower_is_better: bool
) -> str | None:
    """The baseline with the best median report value (failures counted worst), ``None`` when
    no baseline was reported: the one every other method's difference is measured against."""
    present = [b for b in baselines if b in summaries]
    if not present:
        return None

    def key(name: str) -> tuple[float, int]:
        s = summaries[name]
        return s.failed, oriented(s.median, lower_is_better)

    return min(present, key=key)


def adjusted_p(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``) of a
    table's comparisons, NaNs kept in place: many methods against one baseline at 90% make about
    one chance "difference" in ten."""
    from scipy import stats

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok])
    return [float(v) for v in out]


# ------------------------------------------------------------------------ aggregates (rliable)


def normalized(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Scores rescaled so that ``low`` (a task's reference, such as its baseline's median) maps
    to 0 and ``high`` (the value to reach: a target or the best method's median) to 1; this
    orients lower-is-better metrics as well (their ``high`` is below their ``low``)."""
    if high == low or not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"Invalid normalisation: low={low!r}, high={high!r}; expected two "
                         "different finite values")  # fmt: skip
    return (np.asarray(values, dtype=float) - low) / (high - low)


def _stratified_bootstrap(scores: np.ndarray) -> Any:
    """rliable's ``StratifiedBootstrap`` (runs resampled within each task) of ``scores``, on
    arch 7 and arch 8 alike: arch 8 takes no ``random_state``, which rliable 1.2 passes on (and
    rliable draws its resamples from NumPy's global generator anyway; the callers seed it)."""
    from arch.bootstrap import IIDBootstrap
    from rliable import library as rly

    class WithoutRandomState(IIDBootstrap):
        def __init__(self, *args: Any, random_state: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    class Stratified(rly.StratifiedBootstrap, WithoutRandomState):
        pass

    return Stratified(scores)


def _interval_estimates(
    scores: Mapping[str, np.ndarray], func: Callable[[np.ndarray], np.ndarray], reps: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method ``(func(scores), low, high)``: stratified-bootstrap percentile intervals at the
    protocol's level, as ``rliable.library.get_interval_estimates`` makes them, seeded."""
    state = np.random.get_state()
    np.random.seed(seed)  # rliable resamples with NumPy's global generator
    try:
        out = {}
        for name, x in scores.items():
            x = np.asarray(x, dtype=float)
            lo, hi = _stratified_bootstrap(x).conf_int(
                func, reps=reps, size=CONFIDENCE, method="percentile"
            )
            out[name] = (np.asarray(func(x)), lo, hi)
        return out
    finally:
        np.random.set_state(state)


def aggregate_iqm(
    scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = BOOTSTRAP_SEED
) -> dict[str, tuple[float, float, float]]:
    """Per method ``(IQM, low, high)`` over its ``(runs × tasks)`` normalised scores: rliable's
    interquartile mean (``rliable.metrics.aggregate_iqm``) with a stratified-bootstrap 90%
    percentile interval (runs resampled within each task)."""
    from rliable import metrics

    est = _interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps, seed)
    return {k: (float(p[0]), float(lo[0]), float(hi[0])) for k, (p, lo, hi) in est.items()}


def score_profiles(
    scores: Mapping[str, np.ndarray], taus: Sequence[float], reps: int = 2000,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
    """Per method ``(profile, low, high)`` at ``taus``: rliable's score distribution (the share
    of runs, over all tasks, with a normalised score above τ;
    ``rliable.library.score_distributions``) with stratified-bootstrap 90% intervals."""
    from rliable import library as rly

    taus = np.asarray(taus, dtype=float)
    return _interval_estimates(scores, lambda x: rly.score_distributions(x, taus), reps, seed)
