"""Clipping rules against independent NumPy transcriptions of the specification.

Every expected value here is computed from the formulas in NumPy (float64) from the gradients
the test itself feeds in, never from the code under test. With ``ClippedSGD(lr=1, momentum=0)``
one step moves the parameters by exactly ``-α⊙g``, which exposes the clipping factor ``α``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import clip_core.history
import clip_core.norms
from clip_core import (
    CLIPPING_TYPES,
    Always,
    ClippedAdamW,
    ClippedSGD,
    ClippedSSTM,
    ClipRule,
    PercentileThreshold,
)
from clip_core.history import SortedHistory
from clip_core.norms import cache_sized_pieces

pytestmark = pytest.mark.usefixtures("single_thread")

# Two param groups, four tensors of very different scales; one tensor is all zero and another
# has zero coordinates, so per-tensor and per-coordinate rules meet zero statistics.
SHAPES = [[(3, 4), (5,)], [(2, 3, 2), (1,), (4,)]]
SCALES = [[0.2, 3.0], [1.0, 7.0, 0.0]]
DETERMINISTIC = ("none", "norm", "layer_wise", "coord_wise")
STOCHASTIC = (
    "linear_stoch_norm",
    "quadratic_stoch_norm",
    "linear_stoch_auto",
    "quadratic_stoch_auto",
)
AUTO = ("auto", "linear_stoch_auto", "quadratic_stoch_auto")


# -- independent reference ---------------------------------------------------------------------
def global_norm(grads: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))


def reference_alphas(clipping_type: str, grads: list[np.ndarray], lam: float) -> list[np.ndarray]:
    """α for each coordinate of each tensor, straight from the specification."""
    if clipping_type == "none":
        return [np.ones_like(g) for g in grads]
    if clipping_type == "norm":
        n = global_norm(grads)
        a = 1.0 if n == 0 else min(1.0, lam / n)
        return [np.full_like(g, a) for g in grads]
    if clipping_type == "layer_wise":
        out = []
        for g in grads:
            n = float(np.linalg.norm(g.ravel()))
            out.append(np.full_like(g, 1.0 if n == 0 else min(1.0, lam / n)))
        return out
    if clipping_type == "coord_wise":
        out = []
        for g in grads:
            mag = np.abs(g)
            ratio = np.divide(lam, mag, out=np.ones_like(mag), where=mag > 0)
            out.append(np.minimum(1.0, ratio))
        return out
    raise AssertionError(clipping_type)


def make_problem(dtype: torch.dtype, seed: int = 0):
    """Parameters in two groups and a gradient for each, as tensors and NumPy arrays."""
    rng = np.random.default_rng(seed)
    groups, params, grads = [], [], []
    for shapes, scales in zip(SHAPES, SCALES):
        group = []
        for shape, scale in zip(shapes, scales):
            p = torch.nn.Parameter(torch.tensor(rng.standard_normal(shape), dtype=dtype))
            g = scale * rng.standard_normal(shape)
            group.append(p)
            params.append(p)
            grads.append(g)
        groups.append({"params": group})
    grads[0].reshape(-1)[[1, 5, 7]] = 0.0  # zero coordinates
    # round the reference gradient to the parameter dtype, so both sides see the same numbers
    grads = [torch.tensor(g, dtype=dtype).double().numpy() for g in grads]
    return groups, params, grads


def set_grads(params: list[torch.Tensor], grads: list[np.ndarray]) -> None:
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)


def snapshot(params: list[torch.Tensor]) -> list[np.ndarray]:
    return [p.detach().double().numpy().copy() for p in params]


# -- deterministic rules -----------------------------------------------------------------------
@pytest.mark.parametrize("clipping_type", DETERMINISTIC)
@pytest.mark.parametrize("lam", [0.0, 0.5, 1.5, 1e4])
@pytest.mark.parametrize(
    ("dtype", "fused", "rtol"),
    [
        (torch.float64, True, 1e-12),
        (torch.float64, False, 1e-12),
        (torch.float32, True, 2e-6),
        (torch.float32, False, 2e-6),
    ],
)
def test_deterministic_rule_matches_formula(clipping_type, lam, dtype, fused, rtol):
    groups, params, grads = make_problem(dtype)
    before = snapshot(params)
    opt = ClippedSGD(groups, lr=1.0, clipping_type=clipping_type, clipping_level=lam, fused=fused)
    set_grads(params, grads)
    opt.step()
    alphas = reference_alphas(clipping_type, grads, lam)
    atol = 1e-14 if dtype == torch.float64 else 1e-6  # p - p0 carries the rounding of p
    for p, p0, g, a in zip(params, before, grads, alphas):
        expected = a * g
        moved = p.detach().double().numpy() - p0
        np.testing.assert_allclose(moved, -expected, rtol=rtol, atol=atol)
        # documented: after step() p.grad holds the clipped gradient (as after clip_grad_norm_)
        np.testing.assert_allclose(p.grad.double().numpy(), expected, rtol=rtol, atol=1e-300)


@pytest.mark.parametrize("clipping_type", ["layer_wise", "coord_wise"])
def test_half_precision_rules_match_formula(clipping_type):
    """bfloat16 gradients take the ``_foreach_norm`` path (no BLAS dot for them)."""
    groups, params, grads = make_problem(torch.bfloat16)
    before = snapshot(params)
    opt = ClippedSGD(groups, lr=1.0, clipping_type=clipping_type, clipping_level=1.5)
    set_grads(params, grads)
    opt.step()
    alphas = reference_alphas(clipping_type, grads, 1.5)
    for p, p0, g, a in zip(params, before, grads, alphas):
        # bfloat16 keeps 8 bits: the clipped gradient and the update agree to its precision
        np.testing.assert_allclose(p.grad.double().numpy(), a * g, rtol=2**-7, atol=1e-30)
        moved = p.detach().double().numpy() - p0
        np.testing.assert_allclose(moved, -a * g, rtol=2**-6, atol=2**-6 * np.abs(p0).max())
    assert float(opt.last_clip_stats.clip_fraction) > 0


def test_reference_rules_actually_clip_here():
    """Guard for the test above: with these gradients each rule changes some but not all units."""
    _, _, grads = make_problem(torch.float64)
    for ct in ("layer_wise", "coord_wise"):
        flat = np.concatenate([a.ravel() for a in reference_alphas(ct, grads, 1.5)])
        assert (flat < 1).any() and (flat == 1).any()
    assert reference_alphas("norm", grads, 0.5)[0].flat[0] < 1
    assert reference_alphas("norm", grads, 1e4)[0].flat[0] == 1


@pytest.mark.parametrize("nonfinite", ["skip", "raise"])  # raise measures before clipping
@pytest.mark.parametrize("clipping_type", [*DETERMINISTIC, "auto"])
def test_telemetry_matches_numpy(clipping_type, nonfinite):
    lam = 1.5
    groups, params, grads = make_problem(torch.float64, seed=3)
    opt = ClippedSGD(
        groups,
        lr=1.0,
        clipping_type=clipping_type,
        clipping_level=lam,
        p_autoclip=0.5,
        nonfinite=nonfinite,
    )
    # for auto, feed a smaller gradient first so the second step's threshold (median of the two
    # norms) lies below the current norm and clips
    norms = []
    if clipping_type == "auto":
        set_grads(params, [0.5 * g for g in grads])
        norms.append(0.5 * global_norm(grads))
        opt.step()
    set_grads(params, grads)
    opt.step()
    stats = opt.last_clip_stats
    n = global_norm(grads)
    norms.append(n)
    np.testing.assert_allclose(float(stats.grad_norm), n, rtol=1e-12)
    if clipping_type == "auto":
        lam = float(np.quantile(norms, 0.5))
        alphas = reference_alphas("norm", grads, lam)
    else:
        alphas = reference_alphas(clipping_type, grads, lam)
    kept = global_norm([a * g for a, g in zip(alphas, grads)])
    expected_fraction = 1.0 - kept / n
    assert (expected_fraction > 0) == (clipping_type != "none")
    np.testing.assert_allclose(
        float(stats.clip_fraction), expected_fraction, rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(float(stats.threshold), lam, rtol=1e-12)
    assert float(stats.skipped) == 0.0
    for s in stats:
        assert isinstance(s, torch.Tensor)


# -- measuring --------------------------------------------------------------------------------
def layouts(dtype: torch.dtype) -> list[torch.Tensor]:
    """Gradients in each memory layout the measurement has a path for."""
    gen = torch.Generator().manual_seed(5)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    return [
        rand(300, 70) * 3.0,  # contiguous
        rand(8, 6, 5, 5).to(memory_format=torch.channels_last),  # dense, not contiguous
        rand(40, 30).t(),  # transposed: no flat view
        rand(50, 9)[:, ::2],  # strided slice
        rand(0),  # empty
        torch.zeros(7, dtype=dtype),
    ]


@pytest.mark.parametrize(
    ("dtypes", "rtol"),
    [
        ((torch.float32,), 1e-6),
        ((torch.float64,), 1e-13),
        ((torch.float32, torch.float64), 1e-6),  # mixed: measured in float64
        ((torch.bfloat16,), 1e-5),  # the _foreach_norm path, upcast to float32
    ],
)
def test_measure_matches_numpy_in_every_layout(dtypes, rtol):
    grads = [g for dtype in dtypes for g in layouts(dtype)]
    clipper = ClippedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).clipper
    norms, total = clipper.measure(grads)
    expected = [float(np.linalg.norm(g.double().numpy().ravel())) for g in grads]
    np.testing.assert_allclose(norms.double().numpy(), expected, rtol=rtol)
    np.testing.assert_allclose(float(total), math.sqrt(sum(e**2 for e in expected)), rtol=rtol)
    want = torch.float64 if torch.float64 in dtypes else torch.float32
    assert norms.dtype == total.dtype == want


def test_cache_sized_pieces_cover_the_tensor():
    g = torch.arange(1000.0).reshape(10, 100)
    pieces = cache_sized_pieces(g, nbytes=256)  # 64 float32 values a piece
    assert [p.numel() for p in pieces] == [64] * 15 + [40]
    assert all(p.untyped_storage().data_ptr() == g.untyped_storage().data_ptr() for p in pieces)
    np.testing.assert_array_equal(torch.cat(pieces).numpy(), g.numpy().ravel())
    assert cache_sized_pieces(g.t(), nbytes=256)[0] is not None  # no flat view: whole tensor
    assert len(cache_sized_pieces(g.t(), nbytes=256)) == 1


@pytest.mark.parametrize("clipping_type", ["coord_wise", "none"])
def test_coord_wise_in_pieces_matches_numpy(clipping_type, monkeypatch):
    """Tensors larger than a cache piece are clipped and measured piece by piece."""
    monkeypatch.setattr(clip_core.norms, "CACHE_PIECE_BYTES", 96)  # 12 float64 values
    lam = 0.8
    gen = torch.Generator().manual_seed(3)
    grads = [g.double() for g in layouts(torch.float64)]
    grads[0] = torch.randn(30, 7, generator=gen, dtype=torch.float64) * 2.0
    # parameters and gradients in the same layout, as autograd makes them
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    ref = [g.numpy().copy() for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt = ClippedSGD(params, lr=1.0, clipping_type=clipping_type, clipping_level=lam)
    opt.step()
    alphas = reference_alphas(clipping_type, ref, lam)
    for p, g, a in zip(params, ref, alphas):
        np.testing.assert_allclose(p.grad.numpy(), a * g, rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(p.detach().numpy(), -a * g, rtol=1e-12, atol=1e-300)
    n = global_norm(ref)
    kept = global_norm([a * g for a, g in zip(alphas, ref)])
    stats = opt.last_clip_stats
    np.testing.assert_allclose(float(stats.grad_norm), n, rtol=1e-12)
    np.testing.assert_allclose(float(stats.clip_fraction), 1 - kept / n, rtol=1e-9, atol=1e-15)
    assert (float(stats.clip_fraction) > 0) == (clipping_type == "coord_wise")


def test_measure_flags_nonfinite():
    clipper = ClippedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1).clipper
    for bad in (float("nan"), float("inf")):
        grads = [torch.ones(5), torch.tensor([1.0, bad, 2.0]), torch.ones(2, 2).t()]
        norms, total = clipper.measure(grads)
        assert not torch.isfinite(total)
        assert torch.isfinite(norms[[0, 2]]).all() and not torch.isfinite(norms[1])


# -- zero gradients ----------------------------------------------------------------------------
OPTIMIZERS = {
    "sgd": lambda ps, **kw: ClippedSGD(ps, lr=0.5, momentum=0.9, **kw),
    "adamw": lambda ps, **kw: ClippedAdamW(ps, lr=0.5, weight_decay=0.0, **kw),
    "sstm": lambda ps, **kw: ClippedSSTM(ps, lr=0.5, L=2.0, **kw),
}


@pytest.mark.parametrize("clipping_type", CLIPPING_TYPES)
@pytest.mark.parametrize("rule", sorted(OPTIMIZERS))
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_zero_gradient_gives_alpha_one(clipping_type, rule, lam):
    groups, params, _ = make_problem(torch.float64)
    before = snapshot(params)
    opt = OPTIMIZERS[rule](groups, clipping_type=clipping_type, clipping_level=lam, seed=0)
    for _ in range(3):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        stats = opt.last_clip_stats
        assert float(stats.grad_norm) == 0.0
        assert float(stats.clip_fraction) == 0.0  # α = 1: nothing removed, and not NaN
        assert float(stats.skipped) == 0.0
    for p, p0 in zip(params, before):
        assert torch.isfinite(p).all()
        np.testing.assert_array_equal(p.detach().numpy(), p0)  # a zero step moves nothing
        assert torch.equal(p.grad, torch.zeros_like(p))  # α⊙0 = 0, never NaN
    assert int(opt.skipped_steps) == 0


# -- stochastic rules --------------------------------------------------------------------------
def run_stochastic(
    clipping_type: str,
    norms: np.ndarray,
    *,
    lam: float,
    beta: float,
    seed: int,
    p_autoclip: float = 0.5,
):
    """Feed gradients with the given global norms; return the α each step applied."""
    direction = np.random.default_rng(1).standard_normal(6)
    direction /= np.linalg.norm(direction)
    param = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    opt = ClippedSGD(
        [param],
        lr=1.0,
        clipping_type=clipping_type,
        clipping_level=lam,
        beta=beta,
        p_autoclip=p_autoclip,
        seed=seed,
    )
    grads = torch.tensor(norms[:, None] * direction[None, :])
    moves = torch.empty_like(grads)
    for t in range(len(norms)):
        before = param.detach().clone()
        param.grad = grads[t].clone()
        opt.step()
        moves[t] = before - param.detach()
    # each update is -α·g: check it is parallel to g, then read α off it
    alphas = ((moves * grads).sum(1) / (grads * grads).sum(1)).numpy()
    np.testing.assert_allclose(
        moves.numpy(), alphas[:, None] * grads.numpy(), rtol=1e-9, atol=1e-12
    )
    return alphas


def thresholds_for(clipping_type: str, norms: np.ndarray, lam: float, p: float) -> np.ndarray:
    if clipping_type.endswith("_auto"):
        # λ_t = numpy.quantile of the norms so far, current one included
        return np.array([np.quantile(norms[: t + 1], p) for t in range(len(norms))])
    return np.full(len(norms), lam)


@pytest.mark.parametrize("clipping_type", STOCHASTIC)
def test_stochastic_clip_frequency_matches_beta_power(clipping_type):
    beta, lam = 0.05, 1.0
    power = 2 if clipping_type.startswith("quadratic") else 1
    rng = np.random.default_rng(7)
    if clipping_type.endswith("_auto"):
        norms = np.exp(rng.normal(0.0, 1.0, size=800))
    else:
        # ratios λ/‖g‖ of 0.2, 0.5, 0.8 (clip candidates) and 1.25 (never clipped)
        norms = rng.permutation(np.repeat(lam / np.array([0.2, 0.5, 0.8, 1.25]), 300))
    thresholds = thresholds_for(clipping_type, norms, lam, 0.5)
    alphas = run_stochastic(clipping_type, norms, lam=lam, beta=beta, seed=123)
    ratio = thresholds / norms
    above = norms > thresholds * (1 + 1e-9)
    near = np.abs(norms / thresholds - 1) <= 1e-9  # equal up to rounding: too close to call
    # each decision is either α = λ/‖g‖ or α = 1, and never clips at or below the threshold
    clipped = alphas < 1 - 1e-9
    np.testing.assert_allclose(alphas[~clipped], 1.0, rtol=1e-12)
    np.testing.assert_allclose(alphas[clipped], ratio[clipped], rtol=1e-9)
    assert not np.any(clipped & ~above & ~near)
    candidates = above & ~near
    probability = beta ** (ratio[candidates] ** power)
    decisions = clipped[candidates]
    # binomial bound on the clip count, separately for the less and the more likely half
    likely = probability >= np.median(probability)
    for half in (likely, ~likely):
        q = probability[half]
        sd = math.sqrt(float((q * (1 - q)).sum()))
        assert abs(decisions[half].sum() - q.sum()) <= 4.5 * sd, (
            decisions[half].sum(),
            q.sum(),
            sd,
        )
        # the same bound rejects the complementary probability 1 - β^(...)
        assert abs(decisions[half].sum() - (1 - q).sum()) > 4.5 * sd
    # ... and the other exponent (linear vs quadratic)
    sd = math.sqrt(float((probability * (1 - probability)).sum()))
    other = beta ** (ratio[candidates] ** (3 - power))
    assert abs(decisions.sum() - other.sum()) > 4.5 * sd
    if not clipping_type.endswith("_auto"):
        for r in (0.2, 0.5, 0.8):  # per ratio as well
            sel = np.isclose(ratio, r)
            q = beta ** (r**power)
            assert abs(clipped[sel].mean() - q) <= 4.5 * math.sqrt(q * (1 - q) / sel.sum())
        assert not clipped[np.isclose(ratio, 1.25)].any()


@pytest.mark.parametrize("clipping_type", STOCHASTIC)
def test_stochastic_decisions_reproducible_from_seed(clipping_type):
    norms = np.exp(np.random.default_rng(3).normal(0.5, 1.0, size=100))
    a = run_stochastic(clipping_type, norms, lam=1.0, beta=0.5, seed=11)
    b = run_stochastic(clipping_type, norms, lam=1.0, beta=0.5, seed=11)
    c = run_stochastic(clipping_type, norms, lam=1.0, beta=0.5, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert 0 < np.sum(a < 1) < len(a)  # there were real decisions to make


def test_stochastic_uses_own_generator_not_global_rng():
    norms = np.full(100, 3.0)
    torch.manual_seed(0)
    a = run_stochastic("linear_stoch_norm", norms, lam=1.0, beta=0.5, seed=5)
    torch.manual_seed(1)
    b = run_stochastic("linear_stoch_norm", norms, lam=1.0, beta=0.5, seed=5)
    np.testing.assert_array_equal(a, b)


# -- auto --------------------------------------------------------------------------------------
def run_auto(
    norms: np.ndarray,
    p: float,
    window: int | None = None,
    clipping_type: str = "auto",
    dtype: torch.dtype = torch.float64,
    history_path: str = "auto",
) -> dict[str, np.ndarray]:
    """Feed gradients of the given norms; return thresholds, α and clip fraction per step, and
    the recorded history."""
    rng = np.random.default_rng(5)
    direction = [rng.standard_normal(3), rng.standard_normal((2, 2))]
    unit = global_norm(direction)
    direction = [d / unit for d in direction]
    params = [torch.nn.Parameter(torch.zeros(d.shape, dtype=dtype)) for d in direction]
    opt = ClippedSGD(
        [{"params": params[:1]}, {"params": params[1:]}],
        lr=1.0,
        clipping_type=clipping_type,
        p_autoclip=p,
        auto_window=window,
        history_path=history_path,
        seed=0,
    )
    out = {key: np.empty(len(norms)) for key in ("thresholds", "alphas", "fractions")}
    for t, n in enumerate(norms):
        set_grads(params, [n * d for d in direction])
        opt.step()
        out["thresholds"][t] = float(opt.last_clip_stats.threshold)
        out["fractions"][t] = float(opt.last_clip_stats.clip_fraction)
        # after step(), p.grad holds the clipped gradient α·g (checked elsewhere)
        out["alphas"][t] = float(params[0].grad.double().norm()) / (
            n * np.linalg.norm(direction[0])
        )
    out["history"] = opt.norm_history().double().numpy()
    return out


def varied_norms(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    norms = np.exp(rng.normal(0.0, 1.5, size=n))
    norms[::17] = norms[3]  # ties
    start = n // 6
    norms[start : start + 10] = np.linspace(100, 1000, 10)  # a burst of outliers
    return norms


@pytest.mark.parametrize(
    ("p", "dtype"),
    [(p, torch.float64) for p in (0.1, 0.5, 0.75, 0.9, 1.0)]
    + [(0.75, torch.float32), (1.0, torch.float32)],
)
def test_auto_threshold_is_numpy_quantile_of_history(p, dtype, history_path):
    norms = varied_norms(300, seed=int(p * 100))
    if dtype == torch.float32:
        norms = norms.astype(np.float32).astype(np.float64)
    run = run_auto(norms, p, dtype=dtype, history_path=history_path)
    thresholds, history = run["thresholds"], run["history"]
    # the recorded history is the sequence of global norms (in float64 for float64 gradients,
    # float32 otherwise)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    np.testing.assert_allclose(history, norms, rtol=rtol)
    for t in range(len(norms)):
        np.testing.assert_allclose(thresholds[t], np.quantile(norms[: t + 1], p), rtol=rtol)
        # bit-identical to numpy on the recorded values (rounded to the history's dtype)
        expected = np.quantile(history[: t + 1], p)
        assert float(torch.tensor(expected, dtype=dtype)) == thresholds[t], t
    expected_alpha = np.minimum(1.0, thresholds / norms)
    np.testing.assert_allclose(
        run["alphas"], expected_alpha, rtol=1e-9 if dtype == torch.float64 else 1e-5
    )
    clipped = (run["fractions"] > 0).sum()
    if p == 1.0:  # the maximum of a history that includes the current norm never clips
        assert clipped == 0
    else:
        assert clipped > 10


@pytest.mark.parametrize(("window", "p"), [(1, 0.5), (7, 0.3), (7, 1.0), (50, 0.75)])
def test_auto_window_uses_last_w_norms(window, p, history_path):
    rng = np.random.default_rng(window)
    # a small discrete set makes ties frequent, exercising the removal of duplicate values
    norms = rng.choice([0.5, 1.0, 2.0, 3.0, 8.0], size=200).astype(np.float64)
    norms[100:140] = np.exp(rng.normal(0.0, 2.0, size=40))
    run = run_auto(norms, p, window=window, history_path=history_path)
    thresholds = run["thresholds"]
    for t in range(len(norms)):
        last = norms[max(0, t + 1 - window) : t + 1]
        np.testing.assert_allclose(thresholds[t], np.quantile(last, p), rtol=1e-12, err_msg=str(t))
    np.testing.assert_allclose(run["alphas"], np.minimum(1.0, thresholds / norms), rtol=1e-9)
    clipped = (run["fractions"] > 0).sum()
    if window == 1 or p == 1.0:  # the threshold is then the current norm or a larger one
        assert clipped == 0
    else:
        assert clipped > 5
    np.testing.assert_allclose(run["history"], norms[-window:], rtol=1e-12)


@pytest.mark.parametrize(
    ("window", "dtype"), [(None, np.float32), (5, np.float32), (5, np.float64), (64, np.float64)]
)
def test_sorted_history_direct(window, dtype, history_path):
    """SortedHistory on several units at once, with invalid pushes in between."""
    rng = np.random.default_rng(0)
    h = SortedHistory(3, window, host_path=history_path == "host")
    kept: list[np.ndarray] = []
    for t in range(1500 if window is None else 200):
        values = (rng.integers(0, 6, size=3) * rng.choice([1.0, 0.37])).astype(dtype)
        valid = t % 11 != 4
        h.push(torch.tensor(values), torch.tensor(valid))
        if valid:
            kept.append(values)
        if window is None and t % 23 and not 1020 <= t <= 1030 and t < 1490:
            continue  # check a sample of steps, including those around the growth at 1024
        data = np.array(kept if window is None else kept[-window:], dtype=np.float64)
        for q in (0.25, 1.0):
            got = h.quantile(q).numpy()
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, np.quantile(data, q, axis=0).astype(dtype))
    np.testing.assert_array_equal(h.values().numpy().T, data)


@pytest.mark.parametrize("window", [None, 9])
def test_history_paths_share_one_state(window, monkeypatch):
    """The host and device paths keep the same buffers, and a state saved by one path goes on
    in the other exactly (as a checkpoint moves between a CPU and a CUDA machine)."""
    monkeypatch.setattr(clip_core.history, "_INITIAL_CAPACITY", 8)  # growth inside the run
    rng = np.random.default_rng(4)
    stream = [(rng.integers(0, 5, size=2) * 0.5, t % 7 != 3) for t in range(60)]

    def run(paths: list[str]) -> list[np.ndarray]:
        h, out, saved = None, [], None
        for t, (values, valid) in enumerate(stream):
            if t % 20 == 0:  # switch paths through a saved state
                h = SortedHistory(2, window, host_path=paths[t // 20] == "host")
                if saved is not None:
                    h.load_state_dict(saved, torch.device("cpu"))
            h.push(torch.tensor(values), torch.tensor(valid))
            out.append(h.quantile(0.3).numpy())
            saved = h.state_dict()
        return [*out, saved["sorted"].numpy(), saved["raw"].numpy(), saved["count"].numpy()]

    host, device = run(["host"] * 3), run(["device"] * 3)
    for a, b, c in zip(host, device, run(["host", "device", "host"])):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("clipping_type", AUTO)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_step_not_in_auto_history(clipping_type, bad, history_path):
    norms = varied_norms(40, seed=2)
    rng = np.random.default_rng(0)
    params = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))]
    opt = ClippedSGD(
        params,
        lr=1.0,
        clipping_type=clipping_type,
        p_autoclip=0.6,
        seed=0,
        history_path=history_path,
    )
    fed = []
    for t, n in enumerate(norms):
        g = rng.standard_normal(4)
        g *= n / np.linalg.norm(g)
        if t in (10, 25):
            g[1] = bad
        else:
            fed.append(n)
        params[0].grad = torch.tensor(g)
        opt.step()
        if t not in (10, 25):
            np.testing.assert_allclose(
                float(opt.last_clip_stats.threshold), np.quantile(fed, 0.6), rtol=1e-12
            )
    np.testing.assert_allclose(opt.norm_history().double().numpy(), fed, rtol=1e-12)
    assert int(opt.skipped_steps) == 2


@pytest.mark.parametrize("window", [None, 6])
def test_custom_per_tensor_auto_rule(window, history_path):
    """ClipRule(PercentileThreshold(p), Always(), "tensor"): one history per tensor, and a
    skipped (non-finite) step adds nothing to any of them, even where a tensor was finite."""
    p = 0.4
    rng = np.random.default_rng(12)
    shapes = [(3,), (2, 2), (5,)]
    params = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
    rule = ClipRule(PercentileThreshold(p, window), Always(), "tensor")
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    opt = ClippedSGD(groups, lr=1.0, rule=rule, history_path=history_path)
    histories: list[list[float]] = [[] for _ in shapes]
    clipped = 0
    for t in range(60):
        grads = [rng.standard_normal(s) * np.exp(rng.normal(0, 1)) for s in shapes]
        bad = t in (9, 30)
        if bad:
            grads[1][0, 1] = np.nan
        before = snapshot(params)
        set_grads(params, grads)
        opt.step()
        if bad:
            for q, b in zip(params, before):
                np.testing.assert_array_equal(q.detach().numpy(), b)
            continue
        for i, (q, b, g) in enumerate(zip(params, before, grads)):
            n = float(np.linalg.norm(g))
            histories[i].append(n)
            recent = histories[i] if window is None else histories[i][-window:]
            alpha = min(1.0, float(np.quantile(recent, p)) / n)
            clipped += alpha < 1
            np.testing.assert_allclose(q.detach().numpy() - b, -alpha * g, rtol=1e-9, atol=1e-12)
        thresholds = opt.last_clip_stats.threshold.numpy()
        assert thresholds.shape == (3,)
    assert clipped > 20
    assert int(opt.skipped_steps) == 2
