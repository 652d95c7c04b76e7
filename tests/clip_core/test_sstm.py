"""ClippedSSTM against a direct NumPy transcription of its equations, and estimate_lipschitz.

The problem is the quadratic f(x) = ½xᵀHx − bᵀx with the exact (deterministic) gradient
Hx − b; x is split over two parameter tensors in two param groups. After every step the
parameters (the next gradient point x), y and z are compared with the transcription.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from clip_core import ClippedSSTM, estimate_lipschitz

pytestmark = pytest.mark.usefixtures("single_thread")

DIM = 7
SPLIT = 3  # x[:3] is the first parameter tensor (group 1), x[3:] reshaped (2, 2) the second
EIGS = np.array([8.0, 4.0, 2.5, 1.0, 0.5, 0.2, 0.05])


def quadratic(seed: int = 0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    h = q @ np.diag(EIGS) @ q.T
    h = (h + h.T) / 2
    b = rng.standard_normal(DIM) * 3
    x0 = rng.standard_normal(DIM) * 2
    return h, b, x0


# -- the transcription -------------------------------------------------------------------------
def clip_reference(kind: str, g: np.ndarray, threshold: float) -> tuple[np.ndarray, bool]:
    if kind == "none":
        return g, False
    if kind in ("norm", "auto"):
        n = np.linalg.norm(g)
        return (g * threshold / n, True) if n > threshold else (g, False)
    if kind == "layer_wise":
        parts, bit = [], False
        for part in (g[:SPLIT], g[SPLIT:]):
            n = np.linalg.norm(part)
            parts.append(part * threshold / n if n > threshold else part)
            bit |= bool(n > threshold)
        return np.concatenate(parts), bit
    if kind == "coord_wise":
        return np.clip(g, -threshold, threshold), bool((np.abs(g) > threshold).any())
    raise AssertionError(kind)


def sstm_reference(
    h,
    b,
    x0,
    steps,
    *,
    lr,
    L,
    nu=1.0,
    r=1.0,
    restart_every=None,
    restart_coeff=1.5,
    kind="none",
    lam=1.0,
    p_auto=0.5,
):
    """Direct transcription. Returns xs (gradient points, steps + 1), ys, zs, and event counts."""
    a = 1.0 / lr

    def coefficients(k, big_a):
        alpha = (k + 1) ** (2 * nu / (1 + nu)) / (2 * a * L)
        big_a_next = big_a + alpha
        bounded = r < 1 and big_a / big_a_next > r
        if bounded:
            big_a, big_a_next = r * alpha / (1 - r), alpha / (1 - r)
        return big_a, alpha, big_a_next, bounded

    k, big_a = 0, 0.0
    y, z = x0.copy(), x0.copy()
    stage = restart_every
    xs, ys, zs = [], [], []
    history: list[float] = []
    events = {"clipped": 0, "bounded": 0, "restarts": 0}
    for _ in range(steps):
        big_a, alpha, big_a_next, bounded = coefficients(k, big_a)
        events["bounded"] += bounded
        x = (big_a * y + alpha * z) / big_a_next
        xs.append(x)
        g = h @ x - b
        if kind == "auto":
            history.append(float(np.linalg.norm(g)))
            threshold = float(np.quantile(history, p_auto))  # in gradient units, not scaled
        else:
            threshold = lam / alpha
        g, bit = clip_reference(kind, g, threshold)
        events["clipped"] += bit
        z = z - alpha * g
        y = (big_a * y + alpha * z) / big_a_next
        big_a = big_a_next
        k += 1
        if restart_every is not None and k >= stage:
            k, big_a = 0, 0.0
            z = y.copy()
            stage = math.ceil(restart_coeff * stage)
            events["restarts"] += 1
        ys.append(y)
        zs.append(z)
    big_a, alpha, big_a_next, _ = coefficients(k, big_a)
    xs.append((big_a * y + alpha * z) / big_a_next)
    return xs, ys, zs, events


def flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().reshape(-1).numpy() for t in tensors])


def run_sstm(h, b, x0, steps, **kwargs):
    """The optimizer on the same problem; yields (x before the step, x after, y, z) per step."""
    params = [
        torch.nn.Parameter(torch.tensor(x0[:SPLIT])),
        torch.nn.Parameter(torch.tensor(x0[SPLIT:]).reshape(2, 2)),
    ]
    opt = ClippedSSTM([{"params": params[:1]}, {"params": params[1:]}], **kwargs)
    ht, bt = torch.tensor(h), torch.tensor(b)
    out = []
    for _ in range(steps):
        x = flat(params)
        g = ht @ torch.tensor(x) - bt
        params[0].grad = g[:SPLIT].clone()
        params[1].grad = g[SPLIT:].reshape(2, 2).clone()
        opt.step()
        out.append(
            (
                x,
                flat(params),
                flat(opt.state[p]["y"] for p in params),
                flat(opt.state[p]["z"] for p in params),
            )
        )
    return out, opt, params


CASES = {
    "plain": {"lr": 0.1, "L": 8.0},
    "nu_half": {"lr": 0.2, "L": 8.0, "nu": 0.5},
    "nu_zero": {"lr": 0.5, "L": 8.0, "nu": 0.0},
    "norm_clip": {"lr": 0.1, "L": 8.0, "clipping_type": "norm", "clipping_level": 0.4},
    "layer_clip": {"lr": 0.1, "L": 8.0, "clipping_type": "layer_wise", "clipping_level": 0.3},
    "coord_clip": {"lr": 0.1, "L": 8.0, "clipping_type": "coord_wise", "clipping_level": 0.2},
    # L below the true smoothness makes the gradient norm oscillate, so the median threshold bites
    "auto_clip": {"lr": 0.3, "L": 1.0, "clipping_type": "auto", "p_autoclip": 0.5},
    "ratio_bound": {"lr": 0.1, "L": 8.0, "a_k_ratio_upper_bound": 0.8},
    "restarts": {"lr": 0.1, "L": 8.0, "restart_every": 4, "restart_coeff": 1.5},
    "everything": {
        "lr": 0.3,
        "L": 8.0,
        "nu": 0.5,
        "a_k_ratio_upper_bound": 0.7,
        "restart_every": 5,
        "restart_coeff": 1.3,
        "clipping_type": "norm",
        "clipping_level": 0.5,
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sstm_matches_numpy_transcription(case):
    kwargs = {"clipping_type": "none", **CASES[case]}
    steps = 40
    h, b, x0 = quadratic()
    ref_kwargs = {
        "lr": kwargs["lr"],
        "L": kwargs["L"],
        "nu": kwargs.get("nu", 1.0),
        "r": kwargs.get("a_k_ratio_upper_bound", 1.0),
        "restart_every": kwargs.get("restart_every"),
        "restart_coeff": kwargs.get("restart_coeff", 1.5),
        "kind": kwargs["clipping_type"],
        "lam": kwargs.get("clipping_level", 1.0),
        "p_auto": kwargs.get("p_autoclip", 0.75),
    }
    xs, ys, zs, events = sstm_reference(h, b, x0, steps, **ref_kwargs)
    out, opt, _ = run_sstm(h, b, x0, steps, **kwargs)
    for t, (x_before, x_after, y, z) in enumerate(out):
        np.testing.assert_allclose(x_before, xs[t], rtol=1e-10, atol=1e-12, err_msg=f"x, step {t}")
        np.testing.assert_allclose(y, ys[t], rtol=1e-10, atol=1e-12, err_msg=f"y, step {t}")
        np.testing.assert_allclose(z, zs[t], rtol=1e-10, atol=1e-12, err_msg=f"z, step {t}")
        np.testing.assert_allclose(
            x_after, xs[t + 1], rtol=1e-10, atol=1e-12, err_msg=f"x, step {t}"
        )
    # the features under test really were exercised
    if kwargs["clipping_type"] != "none":
        assert 0 < events["clipped"] < steps, events
    if ref_kwargs["r"] < 1:
        assert events["bounded"] > 5, events
    if ref_kwargs["restart_every"] is not None:
        assert events["restarts"] >= 3, events
    assert int(opt.restarts) == events["restarts"]
    np.testing.assert_allclose(flat(opt.averaged_params()), ys[-1], rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(h @ ys[-1] - b) < np.linalg.norm(h @ x0 - b)  # and it optimises


def test_sstm_first_step_uses_gradient_at_x0_and_restart_points():
    """x¹ = x⁰, and right after a restart the gradient point is the stage's last y."""
    h, b, x0 = quadratic(1)
    out, _, _ = run_sstm(h, b, x0, 6, lr=0.1, L=8.0, restart_every=3)
    np.testing.assert_array_equal(out[0][0], x0)
    np.testing.assert_array_equal(out[0][1], out[1][0])  # params hold the next gradient point
    _, x_after, y, z = out[2]  # the third step ends the first stage
    np.testing.assert_array_equal(z, y)  # z = y after the restart
    np.testing.assert_array_equal(x_after, y)  # and the next gradient point is that y
    assert not np.array_equal(y, out[1][2])


def test_sstm_needs_shared_hyperparameters():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = ClippedSSTM([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1, L=1.0)
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="same lr, L and nu in every param group"):
        opt.step()


# -- estimate_lipschitz -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_estimate_lipschitz_on_quadratic(seed):
    h, b, x0 = quadratic(seed)
    ht, bt = torch.tensor(h), torch.tensor(b)
    params = [
        torch.nn.Parameter(torch.tensor(x0[:SPLIT])),
        torch.nn.Parameter(torch.tensor(x0[SPLIT:]).reshape(2, 2)),
    ]
    before = [p.detach().clone() for p in params]

    def closure():
        for p in params:
            p.grad = None
        x = torch.cat([p.reshape(-1) for p in params])
        loss = 0.5 * x @ ht @ x - bt @ x
        loss.backward()
        return loss

    estimate = estimate_lipschitz(params, closure, iterations=20)
    top = float(np.linalg.eigvalsh(h).max())
    assert top == pytest.approx(EIGS.max())
    assert 0.97 * top <= estimate <= top * (1 + 1e-6)
    for p, q in zip(params, before):
        assert torch.equal(p.detach(), q)


def test_estimate_lipschitz_rejects_bad_arguments():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=re.escape("Invalid radius: 0.0; expected a value > 0")):
        estimate_lipschitz([p], lambda: None, radius=0.0)
    with pytest.raises(
        ValueError, match=re.escape("Invalid iterations: 0; expected an integer >= 1")
    ):
        estimate_lipschitz([p], lambda: None, iterations=0)
