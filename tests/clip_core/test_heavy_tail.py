"""Tests for clip_core.heavy_tail.

scipy is used only here, as an independent reference (levy_stable samples,
kurtosis, gamma/KS checks).  Every stochastic test uses a fixed seed and a sample
large enough that the tolerance is several standard errors wide, and the
"wrong variant" tests show the same tolerance rejects plausible implementation bugs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from clip_core.heavy_tail import (
    GaussianFit,
    TailSummary,
    alpha_stable_index,
    alpha_stable_interval,
    bootstrap_interval,
    default_hill_k,
    empirical_ccdf,
    gaussian_fit,
    hill_columns,
    hill_curve,
    hill_estimator,
    standardize_columns,
    tail_summary,
)

N_HILL = 1_000_000  # default k = 1000 -> Hill std ~ α/sqrt(1000) ≈ 3% of α
N_STABLE = 200_000  # default K1 = K2 = 447 -> std of α̂ ≈ 0.02-0.03
HILL_RTOL = 0.10
STABLE_ATOL = 0.10


def pareto(alpha: float, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """Classical Pareto(α, x_m=scale) by inversion: P(X > x) = (x / scale)^-α."""
    u = np.random.default_rng(seed).random(n)
    return scale * (1.0 - u) ** (-1.0 / alpha)


def sas(alpha: float, n: int, seed: int) -> np.ndarray:
    """Symmetric α-stable samples from scipy (independent of the code under test)."""
    return stats.levy_stable.rvs(alpha, 0.0, size=n, random_state=seed)


@pytest.fixture(scope="module")
def student3() -> np.ndarray:
    return np.random.default_rng(11).standard_t(3, N_HILL)


@pytest.fixture(scope="module")
def stable_samples() -> dict[float, np.ndarray]:
    return {a: sas(a, N_STABLE, seed=100 + i) for i, a in enumerate((1.2, 1.5, 1.8))}


# ------------------------------------------------------------------ wrong variants
# Plausible bugs, implemented independently, used to show the tolerances have teeth.


def _top(x: np.ndarray, k: int) -> np.ndarray:
    return np.sort(np.abs(x))[::-1][: k + 1]  # X_(1) >= ... >= X_(k+1)


def hill_no_threshold(x, k):  # forgot "− log X_(k+1)"
    return 1.0 / np.mean(np.log(_top(x, k)[:k]))


def hill_smallest(x, k):  # sorted ascending: uses the k smallest values
    s = np.sort(np.abs(x))[: k + 1]
    return 1.0 / np.mean(np.log(s[1:] / s[0]))


def hill_log10(x, k):  # wrong logarithm base
    t = _top(x, k)
    return 1.0 / np.mean(np.log10(t[:k] / t[k]))


def hill_reciprocal(x, k):  # returns the extreme-value index ξ = 1/α instead of α
    t = _top(x, k)
    return np.mean(np.log(t[:k] / t[k]))


def hill_threshold_kth(x, k):  # off by one: threshold X_(k) instead of X_(k+1)
    t = _top(x, k)
    return 1.0 / np.mean(np.log(t[:k] / t[k - 1]))


def _blocks(x: np.ndarray, k1: int) -> tuple[np.ndarray, int]:
    k2 = x.size // k1
    return x[: k1 * k2].reshape(k2, k1), k2


def stable_log_k(x, k1):  # divides by log K instead of log K1
    b, _ = _blocks(x, k1)
    return 1.0 / ((np.log(np.abs(b.sum(1))).mean() - np.log(np.abs(b)).mean()) / math.log(b.size))


def stable_abs_sum(x, k1):  # sums |X| inside the blocks instead of X
    b, _ = _blocks(x, k1)
    return 1.0 / ((np.log(np.abs(b).sum(1)).mean() - np.log(np.abs(b)).mean()) / math.log(k1))


def stable_block_mean(x, k1):  # averages the blocks instead of summing them
    b, _ = _blocks(x, k1)
    return 1.0 / ((np.log(np.abs(b.mean(1))).mean() - np.log(np.abs(b)).mean()) / math.log(k1))


def stable_log_k2(x, k1):  # divides by log K2 instead of log K1
    b, k2 = _blocks(x, k1)
    return 1.0 / ((np.log(np.abs(b.sum(1))).mean() - np.log(np.abs(b)).mean()) / math.log(k2))


# ------------------------------------------------------------------------------ Hill


@pytest.mark.parametrize("alpha", [1.5, 3.0])
def test_hill_recovers_pareto_index(alpha):
    x = pareto(alpha, N_HILL, seed=int(alpha * 10), scale=2.0)
    assert hill_estimator(x) == pytest.approx(alpha, rel=HILL_RTOL)
    # For an exact Pareto law any k is unbiased, so a large k allows a 2% tolerance.
    assert hill_estimator(x, k=N_HILL // 10) == pytest.approx(alpha, rel=0.02)


def test_hill_student_t_and_gaussian(student3):
    a_t = hill_estimator(student3)
    assert a_t == pytest.approx(3.0, rel=HILL_RTOL)
    a_gauss = hill_estimator(np.random.default_rng(12).standard_normal(N_HILL))
    # Light tail: Hill keeps growing with n (≈13 here); far above the t(3) value.
    assert a_gauss > 2.5 * a_t


@pytest.mark.parametrize("wrong", [hill_no_threshold, hill_smallest, hill_log10, hill_reciprocal])
def test_hill_tolerance_rejects_wrong_variants(wrong, student3):
    k = default_hill_k(N_HILL)
    cases = [(pareto(1.5, N_HILL, seed=15), 1.5), (student3, 3.0)]
    for x, alpha in cases:
        assert hill_estimator(x, k) == pytest.approx(alpha, rel=HILL_RTOL)
        assert wrong(x, k) != pytest.approx(alpha, rel=HILL_RTOL), wrong.__name__


def test_hill_exact_distribution_catches_off_by_one():
    """Rényi: for Pareto data k·α/α̂ = Σ log(X_(i)/X_(k+1)) · α ~ Gamma(k, 1) exactly.

    The off-by-one threshold X_(k) changes α̂ by only O(1/k), invisible at k=1000,
    so it is pinned down by this distributional test at small k instead.
    """
    alpha, k, reps = 2.0, 5, 3000
    rng = np.random.default_rng(21)
    data = (1.0 - rng.random((reps, 60))) ** (-1.0 / alpha)
    good = np.array([k * alpha / hill_estimator(row, k) for row in data])
    bad = np.array([k * alpha / hill_threshold_kth(row, k) for row in data])
    # Mean of Gamma(k,1) is k with std sqrt(k/reps) ≈ 0.04 here; the bug gives k-1.
    assert good.mean() == pytest.approx(k, abs=0.15)
    assert bad.mean() != pytest.approx(k, abs=0.15)
    assert stats.kstest(good, stats.gamma(k).cdf).pvalue > 0.01
    assert stats.kstest(bad, stats.gamma(k).cdf).pvalue < 1e-6


def test_hill_small_exact_value():
    # top-3 of |x| = 8, 4, 2; k=2 -> mean(log 8/2, log 4/2) = 1.5 log 2.
    x = np.array([1.0, -2.0, 4.0, 8.0, 0.5])
    assert hill_estimator(x, k=2) == pytest.approx(1.0 / (1.5 * math.log(2.0)))


def test_hill_drops_zeros_and_nonfinite():
    x = pareto(2.0, 10_000, seed=3)
    dirty = np.concatenate([x, [0.0, 0.0, np.nan, np.inf, -np.inf]])
    assert hill_estimator(dirty, k=100) == hill_estimator(x, k=100)
    # n counts only usable values: k = n-1 is fine, n is not.
    assert math.isfinite(hill_estimator(dirty, k=x.size - 1))
    with pytest.raises(
        ValueError, match=r"Invalid k: 10000; expected an integer in \[1, n-1 = 9999\] .*dropping 5"
    ):
        hill_estimator(dirty, k=x.size)


def test_hill_ties_give_inf():
    assert hill_estimator(np.ones(10), k=3) == math.inf


def test_hill_accepts_torch_any_dtype():
    x = pareto(2.5, 5000, seed=4)
    ref = hill_estimator(x, k=70)
    assert hill_estimator(torch.from_numpy(x), k=70) == pytest.approx(ref, rel=1e-12)
    t32 = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    assert hill_estimator(t32, k=70) == pytest.approx(ref, rel=1e-5)
    assert hill_estimator(t32.to(torch.bfloat16), k=70) == pytest.approx(ref, rel=0.05)


def test_default_hill_k():
    assert default_hill_k(2) == 1
    assert default_hill_k(100) == 10
    assert default_hill_k(101) == 11
    assert default_hill_k(N_HILL) == 1000


def test_hill_curve_matches_pointwise():
    x = np.random.default_rng(5).standard_t(2, 20_000)
    ks, alphas = hill_curve(x, [1, 10, 141, 5000, 19_999])
    for k, a in zip(ks, alphas):
        assert a == pytest.approx(hill_estimator(x, int(k)), rel=1e-10)
    ks, alphas = hill_curve(x)
    assert ks[0] == 1 and ks[-1] == x.size - 1 and np.all(np.diff(ks) > 0)
    assert alphas.shape == ks.shape
    with pytest.raises(
        ValueError, match=r"Invalid ks: array\(\[0, 5\]\); expected a 1-D .*n-1 = 19999"
    ):
        hill_curve(x, [0, 5])


@pytest.mark.parametrize(
    ("bad", "kwargs", "match"),
    [
        ([], {}, "empty"),
        (np.zeros(100), {}, "at least 2 finite nonzero"),
        ([np.nan, np.inf, 1.0], {}, "at least 2 finite nonzero"),
        (np.ones((10, 3)), {}, r"1-D .*shape \(10, 3\)"),
        (3.0, {}, r"1-D .*shape \(\)"),
        (np.arange(1.0, 11.0), {"k": 0}, r"Invalid k: 0; expected an integer in \[1, n-1 = 9\]"),
        (np.arange(1.0, 11.0), {"k": 10}, r"Invalid k: 10; expected an integer in"),
        (np.arange(1.0, 11.0), {"k": 2.5}, "Invalid k: 2.5; expected an integer"),
        (np.arange(1.0, 11.0), {"k": True}, "Invalid k: True; expected an integer"),
        (np.array([1 + 1j, 2.0]), {}, "complex"),
        (["a", "b"], {}, "numeric"),
    ],
)
def test_hill_bad_input(bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hill_estimator(bad, **kwargs)


# --------------------------------------------------------------------------- α-stable


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_alpha_stable_recovers_index(alpha, stable_samples):
    x = stable_samples[alpha]
    assert alpha_stable_index(x) == pytest.approx(alpha, abs=STABLE_ATOL)
    assert alpha_stable_index(x, k1=20) == pytest.approx(alpha, abs=STABLE_ATOL)


def test_alpha_stable_gaussian_is_two():
    g = np.random.default_rng(7).standard_normal(N_STABLE)
    raw = alpha_stable_index(g, clip=False)
    assert raw == pytest.approx(2.0, abs=STABLE_ATOL)
    assert alpha_stable_index(g) == min(raw, 2.0)


@pytest.mark.parametrize("wrong", [stable_log_k, stable_abs_sum, stable_block_mean, stable_log_k2])
def test_alpha_stable_tolerance_rejects_wrong_variants(wrong, stable_samples):
    # K1 != K2 so that swapping them is visible (the default K1 = K2 = 447 would hide it).
    k1 = 20
    for alpha in (1.2, 1.5, 1.8):
        x = stable_samples[alpha]
        assert alpha_stable_index(x, k1) == pytest.approx(alpha, abs=STABLE_ATOL)
        assert wrong(x, k1) != pytest.approx(alpha, abs=STABLE_ATOL), wrong.__name__


def test_alpha_stable_needs_centring(stable_samples):
    shifted = stable_samples[1.5] + 3.0
    assert alpha_stable_index(shifted) != pytest.approx(1.5, abs=STABLE_ATOL)
    assert alpha_stable_index(shifted, center=True) == pytest.approx(1.5, abs=STABLE_ATOL)


def test_alpha_stable_matrix_modes(stable_samples):
    x = stable_samples[1.5]
    mat = x.reshape(-1, 8)  # 25_000 samples of an 8-dim noise vector
    # Coordinates mode flattens row-major, i.e. is identical to the 1-D call.
    assert alpha_stable_index(mat) == alpha_stable_index(x)
    # Vectors with i.i.d. SαS coordinates are α-stable vectors: the norm form works too.
    assert alpha_stable_index(mat, mode="vectors") == pytest.approx(1.5, abs=STABLE_ATOL)
    # Per-column location shifts are removed by center=True in both modes.
    shifted = mat + np.linspace(-5.0, 5.0, 8)
    for mode in ("coordinates", "vectors"):
        est = alpha_stable_index(shifted, mode=mode, center=True)
        assert est == pytest.approx(1.5, abs=STABLE_ATOL), mode


def test_alpha_stable_zero_coordinates_and_torch(stable_samples):
    x = stable_samples[1.8]
    ref = alpha_stable_index(x)
    # Dead parameters (exactly-zero noise) and NaN/inf entries are dropped.
    dirty = np.concatenate([x, np.zeros(50_000), [np.nan, np.inf]])
    assert alpha_stable_index(dirty) == pytest.approx(ref, abs=1e-12)
    assert alpha_stable_index(torch.from_numpy(x)) == pytest.approx(ref, abs=1e-12)


def test_alpha_stable_clip_range():
    # Uniform noise is lighter than Gaussian: raw α̂ ≈ 2.4 at K1=10, clipped to exactly 2.
    u = np.random.default_rng(8).uniform(-1.0, 1.0, size=50_000)
    assert alpha_stable_index(u, k1=10, clip=False) > 2.15
    assert alpha_stable_index(u, k1=10) == 2.0
    # Tiny exact example: K1=2, blocks (1,1),(3,-1) -> 1/α̂ = (log 2 + log 2 - log 3/4)/log 2.
    x = np.array([1.0, 1.0, 3.0, -1.0])
    inv = (0.5 * (math.log(2) + math.log(2)) - 0.25 * math.log(3)) / math.log(2)
    assert alpha_stable_index(x, k1=2, clip=False) == pytest.approx(1.0 / inv)


@pytest.mark.parametrize(
    ("bad", "kwargs", "match"),
    [
        ([], {}, "non-empty"),
        (np.zeros((3, 2, 2)), {}, r"shape \(3, 2, 2\)"),
        (5.0, {}, r"shape \(\)"),
        (np.zeros(1000), {}, "at least 4 usable"),
        (np.zeros((100, 3)), {"mode": "vectors"}, "at least 4 usable"),
        (
            np.arange(1.0, 101.0),
            {"k1": 1},
            r"Invalid k1: 1; expected an integer in \[2, K//2 = 50\]",
        ),
        (np.arange(1.0, 101.0), {"k1": 51}, "Invalid k1: 51; expected an integer in"),
        (
            np.arange(1.0, 101.0),
            {"mode": "norms"},
            "Invalid mode: 'norms'; expected one of coordinates, vectors, columns",
        ),
        (np.tile([1.0, -1.0], 50), {"k1": 2}, "50 of 50 block sums are exactly zero"),
    ],
)
def test_alpha_stable_bad_input(bad, kwargs, match):
    with pytest.raises(ValueError, match=match):
        alpha_stable_index(bad, **kwargs)


# ------------------------------------------------------------------- summary, helpers


def test_tail_summary_matches_references(student3):
    s = tail_summary(student3[:100_000])
    x = student3[:100_000]
    assert isinstance(s, TailSummary)
    assert s.n == x.size and s.n_dropped == 0
    assert s.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert s.std == pytest.approx(np.std(x), rel=1e-12)
    assert s.median == pytest.approx(np.median(x), rel=1e-12)
    assert s.excess_kurtosis == pytest.approx(stats.kurtosis(x), rel=1e-9)
    mag = np.abs(x)
    assert s.p99_over_median == pytest.approx(np.percentile(mag, 99) / np.median(mag), rel=1e-12)
    assert s.hill_k == default_hill_k(x.size)
    assert s.hill_alpha == hill_estimator(x)
    assert s.stable_alpha is not None and 1.0 < s.stable_alpha < 2.0  # inferred as noise
    assert set(s.as_dict()) >= {"n", "excess_kurtosis", "hill_alpha", "stable_alpha"}


def test_tail_summary_norms_and_dirty_input():
    rng = np.random.default_rng(9)
    norms = np.linalg.norm(rng.standard_normal((20_000, 10)), axis=1)
    s = tail_summary(np.concatenate([norms, [np.nan, np.inf]]))
    assert s.n == norms.size and s.n_dropped == 2
    assert s.stable_alpha is None  # positive data: SαS model not applicable
    assert s.excess_kurtosis == pytest.approx(stats.kurtosis(norms), rel=1e-9)
    assert s.p99_over_median == pytest.approx(
        np.percentile(norms, 99) / np.median(norms), rel=1e-12
    )
    assert tail_summary(norms, noise=True).stable_alpha is not None
    gauss = tail_summary(rng.standard_normal(50_000))
    assert abs(gauss.excess_kurtosis) < 0.1 and gauss.stable_alpha == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize(
    ("bad", "match"),
    [([], "empty"), (np.zeros(50), "nonzero"), (np.ones((4, 4)), "1-D"), ([np.nan] * 3, "nonzero")],
)
def test_tail_summary_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        tail_summary(bad)


def test_gaussian_fit_matches_scipy():
    x = np.random.default_rng(10).normal(1.5, 0.3, size=10_000)
    fit = gaussian_fit(torch.from_numpy(x))
    loc, scale = stats.norm.fit(x)
    assert isinstance(fit, GaussianFit)
    assert fit.mean == pytest.approx(loc, rel=1e-12) and fit.std == pytest.approx(scale, rel=1e-12)
    grid = np.linspace(0.0, 3.0, 7)
    np.testing.assert_allclose(fit.pdf(grid), stats.norm(loc, scale).pdf(grid), rtol=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        gaussian_fit(np.ones(5))
    with pytest.raises(ValueError, match="at least 2 finite"):
        gaussian_fit([1.0, np.nan])


def test_empirical_ccdf():
    x = np.array([3.0, -1.0, 0.0, 2.0, np.nan])
    xs, p = empirical_ccdf(x)
    np.testing.assert_array_equal(xs, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(p, [1.0, 2 / 3, 1 / 3])
    # Pareto tail: log-log slope of the CCDF ≈ -α.
    xs, p = empirical_ccdf(pareto(2.0, 200_000, seed=6))
    tail = slice(100_000, 199_000)
    slope = np.polyfit(np.log(xs[tail]), np.log(p[tail]), 1)[0]
    assert slope == pytest.approx(-2.0, rel=0.05)


# ------------------------------------------- noise over many batches: columns, bootstrap


def scaled_columns(noise: np.ndarray, seed: int) -> np.ndarray:
    """Give every column its own scale: log-scales with spread 1, as across network layers."""
    return noise * np.exp(np.random.default_rng(seed).normal(size=noise.shape[1]))


def test_columns_mode_ignores_unequal_scales():
    gauss = scaled_columns(np.random.default_rng(30).standard_normal((2000, 100)), 31)
    # Pooling raw coordinates reads a scale mixture of Gaussians as heavy-tailed ...
    assert alpha_stable_index(gauss) < 1.7
    # ... blocks down one column at a time read the Gaussian law it is.
    assert alpha_stable_index(gauss, mode="columns") == pytest.approx(2.0, abs=0.05)
    heavy = scaled_columns(sas(1.4, 200_000, seed=32).reshape(2000, 100), 33)
    assert alpha_stable_index(heavy, mode="columns") == pytest.approx(1.4, abs=STABLE_ATOL)


def test_columns_mode_is_not_fooled_by_dependent_coordinates():
    # The coordinates of one mini-batch share its noise: here every row is one Gaussian draw
    # plus small independent parts. Row-major blocks add near-copies (sums grow like the
    # number of copies, not its square root); blocks down a column add independent values.
    rng = np.random.default_rng(34)
    gauss = rng.standard_normal((4000, 1)) + 0.05 * rng.standard_normal((4000, 50))
    assert alpha_stable_index(gauss) < 1.5
    assert alpha_stable_index(gauss, mode="columns") == pytest.approx(2.0, abs=0.1)


def test_columns_mode_small_exact_value():
    # K1=2, column a: blocks (1, 3), (−2, 4); column b: blocks (2, 2), (1, −3).
    x = np.array([[1.0, 2.0], [3.0, 2.0], [-2.0, 1.0], [4.0, -3.0]])
    log_y = np.log([4.0, 2.0, 4.0, 2.0]).mean()
    log_x = np.log(np.abs(x)).mean()
    expected = 1.0 / ((log_y - log_x) / math.log(2))
    assert alpha_stable_index(x, k1=2, mode="columns", clip=False) == pytest.approx(expected)
    # a trailing row that does not fill a block is dropped; a non-finite column is dropped
    padded = np.vstack([np.column_stack([x, np.full(4, np.nan)]), [9.0, 9.0, 9.0]])
    assert alpha_stable_index(padded, k1=2, mode="columns", clip=False) == pytest.approx(expected)
    with pytest.raises(
        ValueError, match=r"Invalid k1: 3; expected an integer in \[2, K//2 = 2\] \(K=4\)"
    ):
        alpha_stable_index(x, k1=3, mode="columns")
    with pytest.raises(ValueError, match="at least 4 rows in at least one finite column"):
        alpha_stable_index(np.full((10, 2), np.nan), mode="columns")
    # A median-centred column of an even count has a ±m pair; a block holding it sums to 0
    # and is left out; mostly-zero block sums (discrete data) are an error.
    cancel = np.vstack([x, [[-1.0, 5.0], [1.0, 7.0]]])
    log_y = np.log([4.0, 2.0, 4.0, 2.0, 12.0]).mean()
    log_x = np.log(np.abs(cancel)).mean()
    expected = 1.0 / ((log_y - log_x) / math.log(2))
    assert alpha_stable_index(cancel, k1=2, mode="columns", clip=False) == pytest.approx(expected)
    with pytest.raises(ValueError, match="3 of 4 block sums are exactly zero"):
        alpha_stable_index(
            np.array([[1.0], [-1.0], [2.0], [-2.0], [1.0], [-1.0], [1.0], [1.0]]),
            k1=2,
            mode="columns",
        )


def test_standardize_columns_matches_numpy():
    rng = np.random.default_rng(35)
    x = rng.standard_t(2, (301, 6)) * [1.0, 10.0, 0.1, 1.0, 1.0, 3.0] + 5.0
    x[:, 3] = 0.0  # a dead coordinate: no scale
    x[:200, 4] = 1.5  # mostly constant: MAD 0
    x[7, 5] = np.inf
    z, kept = standardize_columns(torch.from_numpy(x))
    np.testing.assert_array_equal(kept, [True, True, True, False, False, False])
    for out, j in zip(z.T, (0, 1, 2)):
        med = np.median(x[:, j])
        mad = np.median(np.abs(x[:, j] - med))
        np.testing.assert_allclose(out, (x[:, j] - med) / mad, rtol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        standardize_columns(np.ones(5))


def test_hill_columns_matches_the_one_dimensional_estimator():
    x = np.random.default_rng(36).standard_t(2, (500, 7))
    for k in (None, 3, 499):
        got = hill_columns(x, k)
        want = [hill_estimator(x[:, j], k) for j in range(x.shape[1])]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    x[:, 2] = 0.0
    x[:490, 3] = 0.0  # only 10 nonzero values: too few for k = 23
    got = hill_columns(x)
    assert np.isnan(got[2]) and np.isnan(got[3]) and np.isfinite(got[[0, 1, 4, 5, 6]]).all()
    assert hill_columns(np.ones((10, 2)), 3).tolist() == [math.inf, math.inf]
    with pytest.raises(
        ValueError, match=r"Invalid k: 500; expected an integer in \[1, n-1 = 499\]"
    ):
        hill_columns(x, 500)
    with pytest.raises(ValueError, match="must be finite"):
        hill_columns(np.array([[1.0, np.nan], [2.0, 3.0]]))


def numpy_bootstrap(x, statistic, block, resamples, level, seed):
    """Percentile bootstrap of groups of ``block`` consecutive rows, written out directly."""
    rng = np.random.default_rng(seed)
    groups = x[: len(x) // block * block].reshape(len(x) // block, block, *x.shape[1:])
    reps = [
        statistic(groups[rng.integers(0, len(groups), len(groups))].reshape(-1, *x.shape[1:]))
        for _ in range(resamples)
    ]
    return np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])


@pytest.mark.parametrize("block", [1, 10])
def test_bootstrap_interval_matches_a_direct_numpy_bootstrap(block):
    rng = np.random.default_rng(37)
    # Groups of 10 equal rows: resampling single rows pretends there are 10x more data.
    x = np.repeat(rng.standard_normal(300), 10)
    got = bootstrap_interval(x, np.mean, block=block, level=0.9, resamples=3000, seed=1)
    want = numpy_bootstrap(x, np.mean, block, 3000, 0.9, seed=2)
    width = want[1] - want[0]
    np.testing.assert_allclose(got, want, atol=0.08 * width)
    # The textbook interval of a mean of 300 independent groups: ± 1.645 s / √300.
    half = 1.645 * np.std(x[::10], ddof=1) / math.sqrt(300)
    if block == 10:
        assert width == pytest.approx(2 * half, rel=0.1)
    else:
        assert width == pytest.approx(2 * half / math.sqrt(10), rel=0.1)


def test_normal_bootstrap_interval_matches_numpy_and_suits_hill():
    # A probe's shape: 200 batches x 256 coordinates, groups of 14 batches.
    rng = np.random.default_rng(39)
    x = rng.standard_normal((196, 256))

    def hill(m):
        return float(np.median(hill_columns(m)))

    low, high = bootstrap_interval(x, hill, block=14, resamples=300, seed=4, method="normal")
    groups = x.reshape(14, 14, 256)
    reps = [hill(groups[rng.integers(0, 14, 14)].reshape(-1, 256)) for _ in range(300)]
    half = 1.645 * np.std(reps, ddof=1)  # direct NumPy: θ̂ ± 1.645 × the replicates' std
    assert (low + high) / 2 == pytest.approx(hill(x), rel=1e-12)
    assert (high - low) / 2 == pytest.approx(half, rel=0.2)
    # Why not percentiles: repeated rows tie in the top order statistics and push the Hill
    # replicates upwards, here by more than the replicates' spread (seeds 0-5: 1.2-2.5 SE).
    assert np.mean(reps) > hill(x) + 0.5 * np.std(reps)


def test_bootstrap_interval_of_a_tail_index_on_rows():
    x = sas(1.5, 40_000, seed=38).reshape(400, 100)
    low, high = bootstrap_interval(
        x, lambda m: alpha_stable_index(m, 20, mode="columns"), block=20, resamples=200, seed=3
    )
    assert low < alpha_stable_index(x, 20, mode="columns") < high
    assert low < 1.5 < high and high - low < 0.3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": 0}, "Invalid block: 0; expected an integer >= 1 leaving at least 2 groups"),
        ({"block": 6}, r"Invalid block: 6; .*\(data has 10 rows\)"),
        ({"level": 1.0}, r"Invalid level: 1.0; expected a value in \(0, 1\)"),
        ({"resamples": 1}, "Invalid resamples: 1; expected an integer >= 2"),
        ({"method": "bca"}, "Invalid method: 'bca'; expected one of percentile, normal"),
    ],
)
def test_bootstrap_interval_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_interval(np.arange(10.0), np.mean, **kwargs)


# ------------------------------------------------------------------ alpha_stable_interval


def test_alpha_stable_interval_is_the_t_interval_of_the_group_contributions():
    """An independent computation: with K1 = 10 rows per block, group g contributes
    (mean_j log|Σ block| − mean log|X| over its rows) / log 10; the interval is the Student-t
    interval of their mean, mapped to α, and its centre is the estimator's 1/α."""
    rng = np.random.default_rng(3)
    x = stats.levy_stable(1.4, 0.0).rvs(size=(200, 30), random_state=rng)
    low, high = alpha_stable_interval(x, 10, level=0.8)
    groups = x.reshape(20, 10, 30)
    u = (np.log(np.abs(groups.sum(axis=1))).mean(axis=1)
         - np.log(np.abs(groups)).reshape(20, -1).mean(axis=1)) / np.log(10)  # fmt: skip
    half = stats.t.ppf(0.9, 19) * u.std(ddof=1) / np.sqrt(20)
    assert (low, high) == pytest.approx((1 / (u.mean() + half), 1 / (u.mean() - half)))
    estimate = alpha_stable_index(x, 10, mode="columns")
    assert 1 / estimate == pytest.approx((1 / low + 1 / high) / 2)
    assert low < estimate < high


def test_alpha_stable_interval_reaches_two_for_gaussian_noise_and_checks_its_input():
    rng = np.random.default_rng(4)
    low, high = alpha_stable_interval(rng.standard_normal((400, 20)))
    assert high == 2.0 and low > 1.7
    with pytest.raises(ValueError, match=r"expected a \(K, d\) array with K >= 4"):
        alpha_stable_interval(np.ones(10))
    with pytest.raises(ValueError, match=r"Invalid level: 1\.5"):
        alpha_stable_interval(rng.standard_normal((40, 3)), level=1.5)
    with pytest.raises(ValueError, match="Invalid k1: 30"):
        alpha_stable_interval(rng.standard_normal((40, 3)), 30)
