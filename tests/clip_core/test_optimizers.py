"""Step rules of ClippedSGD and ClippedAdamW against torch's own optimizers and NumPy.

``clipping_type="none"`` must be torch.optim.SGD / AdamW step for step; clipped runs must equal
torch's optimizers fed with a gradient clipped independently (``clip_grad_norm_``,
``clip_grad_value_`` or NumPy). Also: weight decay after clipping, LR schedulers,
``add_param_group``, closures, and the argument checks.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from clip_core import CLIPPING_TYPES, ClippedAdamW, ClippedSGD, ClippedSSTM

pytestmark = pytest.mark.usefixtures("single_thread")


# -- a small model and a fixed stream of batches -----------------------------------------------
def make_model(dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(
        dtype
    )


def two_groups(model: torch.nn.Module, lr2: float | None = None) -> list[dict]:
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return [{"params": first}, {"params": second} if lr2 is None else {"params": second, "lr": lr2}]


def batch(step: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 5, generator=g, dtype=dtype)
    y = torch.randn(16, 3, generator=g, dtype=dtype) * 3
    return x, y


def loss_fn(model: torch.nn.Module, step: int, dtype: torch.dtype) -> torch.Tensor:
    x, y = batch(step, dtype)
    return ((model(x) - y) ** 2).mean()


def train(make_opt, steps: int = 12, dtype=torch.float64, before_step=None, scheduler=None):
    """Run ``steps`` steps; ``before_step(model, step)`` may edit the gradients (e.g. clip them)."""
    model = make_model(dtype)
    opt = make_opt(model)
    sched = scheduler(opt) if scheduler is not None else None
    trajectory = []
    for t in range(steps):
        opt.zero_grad()
        loss_fn(model, t, dtype).backward()
        if before_step is not None:
            before_step(model, t)
        opt.step()
        if sched is not None:
            sched.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory, opt


def assert_equal_runs(a, b):
    for t, (pa, pb) in enumerate(zip(a, b)):
        for x, y in zip(pa, pb):
            assert torch.equal(x, y), f"step {t}: max diff {(x - y).abs().max()}"


def assert_close_runs(a, b, rtol, atol=0.0):
    for t, (pa, pb) in enumerate(zip(a, b)):
        for x, y in zip(pa, pb):
            torch.testing.assert_close(x, y, rtol=rtol, atol=atol, msg=f"step {t}")


def assert_moved(run):
    assert not torch.equal(run[0][0], run[-1][0])


SGD_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01},
    {"lr": 0.1, "momentum": 0.5, "weight_decay": 0.1},
]


# -- clipping_type="none" equals torch -----------------------------------------------------------
@pytest.mark.parametrize("config", SGD_CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_none_equals_torch_sgd(config, dtype):
    ours, opt = train(
        lambda m: ClippedSGD(two_groups(m, 0.03), clipping_type="none", **config), dtype=dtype
    )
    fused, ref = train(
        lambda m: torch.optim.SGD(two_groups(m, 0.03), fused=True, **config), dtype=dtype
    )
    default, _ = train(lambda m: torch.optim.SGD(two_groups(m, 0.03), **config), dtype=dtype)
    assert_moved(ours)
    assert_equal_runs(ours, fused)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_close_runs(ours, default, rtol=tol, atol=tol)
    if config.get("momentum"):
        for p_ours, p_ref in zip(opt.state.values(), ref.state.values()):
            assert torch.equal(p_ours["momentum_buffer"], p_ref["momentum_buffer"])


ADAMW_CONFIGS = [
    {"lr": 0.01},
    {"lr": 0.02, "weight_decay": 0.1, "amsgrad": True},
    {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0},
]


@pytest.mark.parametrize("config", ADAMW_CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_none_equals_torch_adamw(config, dtype):
    ours, opt = train(
        lambda m: ClippedAdamW(two_groups(m, 0.005), clipping_type="none", **config), dtype=dtype
    )
    fused, ref = train(
        lambda m: torch.optim.AdamW(two_groups(m, 0.005), fused=True, **config), dtype=dtype
    )
    default, _ = train(lambda m: torch.optim.AdamW(two_groups(m, 0.005), **config), dtype=dtype)
    assert_moved(ours)
    assert_equal_runs(ours, fused)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert_close_runs(ours, default, rtol=tol, atol=tol)
    for s_ours, s_ref in zip(opt.state.values(), ref.state.values()):
        for key in s_ref:
            assert torch.equal(s_ours[key].to(s_ref[key].device), s_ref[key]), key


# -- clipped runs equal torch fed with an independently clipped gradient ----------------------
def clip_norm_hook(lam: float, norms: list[float]):
    """clip_grad_norm_ before the step, recording the pre-clipping norms."""

    def hook(model, t):
        norms.append(float(clip_grad_norm_(model.parameters(), lam)))

    return hook


@pytest.mark.parametrize("config", SGD_CONFIGS)
def test_norm_equals_clip_grad_norm_then_sgd(config):
    lam = 0.5
    norms: list[float] = []
    ref, _ = train(
        lambda m: torch.optim.SGD(two_groups(m), **config), before_step=clip_norm_hook(lam, norms)
    )
    assert sum(n > lam for n in norms) >= 6  # clipping bit in most steps
    ours, _ = train(
        lambda m: ClippedSGD(two_groups(m), clipping_type="norm", clipping_level=lam, **config)
    )
    # clip_grad_norm_ divides by ‖g‖ + 1e-6, hence allclose and not equal
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)
    unclipped, _ = train(lambda m: torch.optim.SGD(two_groups(m), **config))
    with pytest.raises(AssertionError):
        assert_close_runs(ours, unclipped, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("config", ADAMW_CONFIGS)
def test_norm_equals_clip_grad_norm_then_adamw(config):
    lam = 0.5
    norms: list[float] = []
    ref, _ = train(
        lambda m: torch.optim.AdamW(two_groups(m), fused=True, **config),
        before_step=clip_norm_hook(lam, norms),
    )
    assert sum(n > lam for n in norms) >= 6
    ours, _ = train(
        lambda m: ClippedAdamW(two_groups(m), clipping_type="norm", clipping_level=lam, **config)
    )
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_coord_wise_equals_clip_grad_value_then_sgd(dtype):
    lam = 0.05
    config = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}

    def clip_value(model, t):
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        assert (grads.abs() > lam).any() and (grads.abs() < lam).any()
        clip_grad_value_(model.parameters(), lam)

    ref, _ = train(
        lambda m: torch.optim.SGD(two_groups(m), fused=True, **config),
        dtype=dtype,
        before_step=clip_value,
    )
    ours, _ = train(
        lambda m: ClippedSGD(
            two_groups(m), clipping_type="coord_wise", clipping_level=lam, **config
        ),
        dtype=dtype,
    )
    assert_equal_runs(ours, ref)


def test_layer_wise_equals_per_tensor_clipping_then_sgd():
    lam = 0.3
    config = {"lr": 0.1, "momentum": 0.9}
    clipped = []

    def clip_each(model, t):  # g_i ← min(1, λ/‖g_i‖)·g_i, without clip_grad_norm_'s +1e-6
        for p in model.parameters():
            n = float(p.grad.norm())
            clipped.append(n > lam)
            p.grad.mul_(min(1.0, lam / n))

    ref, _ = train(lambda m: torch.optim.SGD(two_groups(m), **config), before_step=clip_each)
    assert 0 < sum(clipped) < len(clipped)
    ours, _ = train(
        lambda m: ClippedSGD(
            two_groups(m), clipping_type="layer_wise", clipping_level=lam, **config
        )
    )
    assert_close_runs(ours, ref, rtol=1e-12, atol=1e-14)


# -- NumPy transcription of the SGD step rule ---------------------------------------------------
def numpy_clip(kind: str, grads: list[np.ndarray], lam: float) -> list[np.ndarray]:
    if kind == "none":
        return [g.copy() for g in grads]
    if kind == "norm":
        n = math.sqrt(sum(float((g**2).sum()) for g in grads))
        return [g * (1.0 if n == 0 else min(1.0, lam / n)) for g in grads]
    if kind == "layer_wise":
        return [g * min(1.0, lam / max(np.linalg.norm(g.ravel()), 1e-300)) for g in grads]
    if kind == "coord_wise":
        return [np.clip(g, -lam, lam) for g in grads]
    raise AssertionError(kind)


def random_grad_stream(shapes, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        [rng.standard_normal(s) * rng.choice([0.1, 1.0, 10.0]) for s in shapes]
        for _ in range(steps)
    ]


@pytest.mark.parametrize("kind", ["none", "norm", "layer_wise", "coord_wise"])
@pytest.mark.parametrize(
    "config",
    [
        {"momentum": 0.0, "nesterov": False, "weight_decay": 0.1},
        {"momentum": 0.9, "nesterov": False, "weight_decay": 0.05},
        {"momentum": 0.7, "nesterov": True, "weight_decay": 0.2},
    ],
)
def test_sgd_matches_numpy_transcription(kind, config):
    """d = clip(g) + wd·p (decay after clipping); buf = μ·buf + d; p -= lr·buf (or Nesterov)."""
    lr, lam, steps = 0.1, 1.0, 10
    shapes = [(3, 4), (4,), (2, 2)]
    grads = random_grad_stream(shapes, steps)
    rng = np.random.default_rng(1)
    x = [rng.standard_normal(s) for s in shapes]
    params = [torch.nn.Parameter(torch.tensor(v)) for v in x]
    opt = ClippedSGD(
        [{"params": params[:2]}, {"params": params[2:]}],
        lr=lr,
        clipping_type=kind,
        clipping_level=lam,
        **config,
    )
    mu, wd = config["momentum"], config["weight_decay"]
    buf = [np.zeros(s) for s in shapes]
    for t in range(steps):
        for p, g in zip(params, grads[t]):
            p.grad = torch.tensor(g)
        opt.step()
        d = [c + wd * xi for c, xi in zip(numpy_clip(kind, grads[t], lam), x)]
        buf = [mu * b + di for b, di in zip(buf, d)]
        step = [di + mu * b for di, b in zip(d, buf)] if config["nesterov"] else buf
        x = [xi - lr * s for xi, s in zip(x, step)]
        for p, xi in zip(params, x):
            np.testing.assert_allclose(
                p.detach().numpy(), xi, rtol=1e-12, atol=1e-12, err_msg=f"step {t}"
            )


def test_weight_decay_is_added_after_clipping():
    """One step, lr=1, momentum=0: Δp = -(α·g + wd·p), and not -α·(g + wd·p)."""
    lam, wd = 0.5, 0.3
    rng = np.random.default_rng(4)
    x0 = [rng.standard_normal((4, 3)) * 5, rng.standard_normal(6) * 5]
    g = [rng.standard_normal((4, 3)), rng.standard_normal(6)]
    params = [torch.nn.Parameter(torch.tensor(v)) for v in x0]
    for fused in (True, False):
        for p, v, gi in zip(params, x0, g):
            p.data.copy_(torch.tensor(v))
            p.grad = torch.tensor(gi)
        opt = ClippedSGD(
            params, lr=1.0, weight_decay=wd, clipping_type="norm", clipping_level=lam, fused=fused
        )
        opt.step()
        norm = math.sqrt(sum(float((gi**2).sum()) for gi in g))
        alpha = min(1.0, lam / norm)
        assert alpha < 0.5
        for p, v, gi in zip(params, x0, g):
            np.testing.assert_allclose(p.detach().numpy(), v - (alpha * gi + wd * v), rtol=1e-12)
            assert not np.allclose(p.detach().numpy(), v - alpha * (gi + wd * v), rtol=1e-3)


@pytest.mark.parametrize("kind", ["norm", "layer_wise", "coord_wise"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_clipped_adamw_equals_torch_adamw_on_clipped_gradient(kind, amsgrad):
    lam, steps = 1.0, 10
    shapes = [(3, 4), (4,), (2, 2)]
    grads = random_grad_stream(shapes, steps, seed=3)
    rng = np.random.default_rng(2)
    x = [rng.standard_normal(s) for s in shapes]
    ours = [torch.nn.Parameter(torch.tensor(v)) for v in x]
    ref = [torch.nn.Parameter(torch.tensor(v)) for v in x]
    config = {"lr": 0.05, "weight_decay": 0.1, "amsgrad": amsgrad}
    opt = ClippedAdamW(
        [{"params": ours[:2]}, {"params": ours[2:]}],
        clipping_type=kind,
        clipping_level=lam,
        **config,
    )
    ref_opt = torch.optim.AdamW([{"params": ref[:2]}, {"params": ref[2:]}], fused=True, **config)
    clipped_any = False
    for t in range(steps):
        clipped = numpy_clip(kind, grads[t], lam)
        clipped_any |= any(not np.allclose(c, g) for c, g in zip(clipped, grads[t]))
        for p, q, g, c in zip(ours, ref, grads[t], clipped):
            p.grad = torch.tensor(g)
            q.grad = torch.tensor(c)
        opt.step()
        ref_opt.step()
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=f"step {t}")
    assert clipped_any


# -- schedulers, param groups, closures ---------------------------------------------------------
def test_step_lr_scheduler_as_with_torch_sgd():
    config = {"lr": 0.2, "momentum": 0.9}
    sched = lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)  # noqa: E731
    ours, opt = train(
        lambda m: ClippedSGD(two_groups(m, 0.1), clipping_type="none", **config), scheduler=sched
    )
    ref, _ = train(
        lambda m: torch.optim.SGD(two_groups(m, 0.1), fused=True, **config), scheduler=sched
    )
    assert_equal_runs(ours, ref)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 0.5**4)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * 0.5**4)
    constant, _ = train(lambda m: ClippedSGD(two_groups(m, 0.1), clipping_type="none", **config))
    with pytest.raises(AssertionError):
        assert_equal_runs(ours, constant)


def test_lambda_lr_scheduler_as_with_torch_adamw_and_clipping():
    lam = 0.5
    sched = lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t))  # noqa: E731
    norms: list[float] = []
    ref, _ = train(
        lambda m: torch.optim.AdamW(two_groups(m), lr=0.02, fused=True),
        scheduler=sched,
        before_step=clip_norm_hook(lam, norms),
    )
    assert sum(n > lam for n in norms) >= 3
    ours, _ = train(
        lambda m: ClippedAdamW(two_groups(m), lr=0.02, clipping_level=lam), scheduler=sched
    )
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)


def test_scheduler_changes_clipped_sgd_step_size_against_numpy():
    """StepLR on a norm-clipped SGD: the step uses the scheduled lr (NumPy transcription)."""
    lam, steps = 0.5, 8
    grads = random_grad_stream([(5,), (2, 3)], steps, seed=8)
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((5,)), rng.standard_normal((2, 3))]
    params = [torch.nn.Parameter(torch.tensor(v)) for v in x]
    opt = ClippedSGD(params, lr=0.4, clipping_type="norm", clipping_level=lam)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for t in range(steps):
        for p, g in zip(params, grads[t]):
            p.grad = torch.tensor(g)
        opt.step()
        sched.step()
        lr = 0.4 * 0.1 ** (t // 2)
        x = [xi - lr * c for xi, c in zip(x, numpy_clip("norm", grads[t], lam))]
        for p, xi in zip(params, x):
            np.testing.assert_allclose(p.detach().numpy(), xi, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("which", ["sgd", "adamw"])
def test_add_param_group_as_with_torch(which):
    def make(cls_ours, cls_ref, **config):
        def run(ours: bool):
            model = make_model()
            first, second = list(model[0].parameters()), list(model[2].parameters())
            opt = (
                cls_ours(first, clipping_type="none", **config)
                if ours
                else cls_ref(first, fused=True, **config)
            )
            out = []
            for t in range(8):
                if t == 3:
                    opt.add_param_group({"params": second, "lr": config["lr"] / 3})
                opt.zero_grad()
                loss_fn(model, t, torch.float64).backward()
                opt.step()
                out.append([p.detach().clone() for p in model.parameters()])
            return out, opt

        return run

    if which == "sgd":
        run = make(ClippedSGD, torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.01)
    else:
        run = make(ClippedAdamW, torch.optim.AdamW, lr=0.01)
    ours, opt = run(True)
    ref, _ = run(False)
    assert_equal_runs(ours, ref)
    assert len(opt.param_groups) == 2 and opt.param_groups[1]["lr"] == pytest.approx(
        opt.param_groups[0]["lr"] / 3
    )
    assert not torch.equal(ours[3][-1], ours[-1][-1])  # the added group trains


def test_add_param_group_joins_the_global_norm():
    lam = 1.0
    rng = np.random.default_rng(0)
    g1, g2 = rng.standard_normal(4), rng.standard_normal(3) * 4
    a = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = ClippedSGD([a], lr=1.0, clipping_type="norm", clipping_level=lam)
    opt.add_param_group({"params": [b]})
    a.grad, b.grad = torch.tensor(g1), torch.tensor(g2)
    opt.step()
    alpha = lam / math.sqrt((g1**2).sum() + (g2**2).sum())
    np.testing.assert_allclose(a.detach().numpy(), -alpha * g1, rtol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(), -alpha * g2, rtol=1e-12)


def test_add_param_group_rejects_negative_lr():
    opt = ClippedSGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(
        ValueError, match=re.escape("Invalid lr: -1.0 in a param group; expected a value >= 0")
    ):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1.0})


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: ClippedSGD(ps, lr=0.1, momentum=0.9, clipping_level=0.5),
        lambda ps: ClippedAdamW(ps, lr=0.01, clipping_level=0.5),
        lambda ps: ClippedSSTM(ps, lr=0.1, L=2.0, clipping_level=0.5),
    ],
)
def test_closure_loss_is_returned_and_its_gradient_used(make):
    model = make_model()
    opt = make(list(model.parameters()))
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = loss_fn(model, 0, torch.float64)
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    expected = loss_fn(model, 0, torch.float64)
    loss = opt.step(closure)
    assert len(calls) == 1
    assert isinstance(loss, torch.Tensor) and torch.equal(loss.detach(), expected.detach())
    assert loss.requires_grad  # evaluated with grad enabled, although step() runs under no_grad
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    # the same step without a closure, from the same point and gradient, lands on the same point
    after = [p.detach().clone() for p in model.parameters()]
    model2 = make_model()
    opt2 = make(list(model2.parameters()))
    loss_fn(model2, 0, torch.float64).backward()
    assert opt2.step() is None
    for p, q in zip(model2.parameters(), after):
        assert torch.equal(p.detach(), q)


# -- argument checks -------------------------------------------------------------------------------
def _p():
    return [torch.nn.Parameter(torch.zeros(2))]


CHOICES = ", ".join(CLIPPING_TYPES)
BAD_ARGS = [
    (
        ClippedSGD,
        {"clipping_type": "bogus"},
        f"Invalid clipping_type: 'bogus'; expected one of {CHOICES}",
    ),
    (
        ClippedAdamW,
        {"clipping_type": "Norm"},
        f"Invalid clipping_type: 'Norm'; expected one of {CHOICES}",
    ),
    (
        ClippedSSTM,
        {"clipping_type": None},
        f"Invalid clipping_type: None; expected one of {CHOICES}",
    ),
    (ClippedSGD, {"lr": -0.1}, "Invalid lr: -0.1; expected a value >= 0"),
    (ClippedAdamW, {"lr": -1e-3}, "Invalid lr: -0.001; expected a value >= 0"),
    (ClippedSSTM, {"lr": -1.0}, "Invalid lr: -1.0; expected a value > 0"),
    (ClippedSGD, {"lr": float("nan")}, "Invalid lr: nan; expected a value >= 0"),
    (ClippedSGD, {"clipping_level": -1.0}, "Invalid clipping_level: -1.0; expected a value >= 0"),
    (ClippedSSTM, {"clipping_level": -2}, "Invalid clipping_level: -2; expected a value >= 0"),
    (ClippedSGD, {"clipping_level": "1"}, "Invalid clipping_level: '1'; expected a value >= 0"),
    (ClippedSGD, {"beta": 0.0}, "Invalid beta: 0.0; expected a value in (0.0, 1.0)"),
    (ClippedSGD, {"beta": 1.0}, "Invalid beta: 1.0; expected a value in (0.0, 1.0)"),
    (ClippedAdamW, {"beta": 1.5}, "Invalid beta: 1.5; expected a value in (0.0, 1.0)"),
    (ClippedSSTM, {"beta": float("nan")}, "Invalid beta: nan; expected a value in (0.0, 1.0)"),
    (ClippedSGD, {"p_autoclip": 0.0}, "Invalid p_autoclip: 0.0; expected a value in (0.0, 1.0]"),
    (ClippedSGD, {"p_autoclip": 1.01}, "Invalid p_autoclip: 1.01; expected a value in (0.0, 1.0]"),
    (ClippedSSTM, {"p_autoclip": -0.5}, "Invalid p_autoclip: -0.5; expected a value in (0.0, 1.0]"),
    (ClippedSSTM, {"L": 0.0}, "Invalid L: 0.0; expected a value > 0"),
    (ClippedSSTM, {"L": -3.0}, "Invalid L: -3.0; expected a value > 0"),
    (ClippedSSTM, {"nu": -0.1}, "Invalid nu: -0.1; expected a value in [0.0, 1.0]"),
    (ClippedSSTM, {"nu": 1.5}, "Invalid nu: 1.5; expected a value in [0.0, 1.0]"),
    (
        ClippedSSTM,
        {"a_k_ratio_upper_bound": 0.0},
        "Invalid a_k_ratio_upper_bound: 0.0; expected a value in (0.0, 1.0]",
    ),
    (
        ClippedSSTM,
        {"a_k_ratio_upper_bound": 1.2},
        "Invalid a_k_ratio_upper_bound: 1.2; expected a value in (0.0, 1.0]",
    ),
    (
        ClippedSSTM,
        {"restart_every": 0},
        "Invalid restart_every: 0; expected None or an integer >= 1",
    ),
    (
        ClippedSSTM,
        {"restart_coeff": 0.5},
        "Invalid restart_coeff: 0.5; expected a value >= 1.0",
    ),
    (ClippedSGD, {"momentum": -0.9}, "Invalid momentum value: -0.9; expected a value >= 0"),
    (
        ClippedSGD,
        {"weight_decay": -1e-4},
        "Invalid weight_decay value: -0.0001; expected a value >= 0",
    ),
    (
        ClippedSGD,
        {"nesterov": True},
        "Invalid nesterov=True with momentum=0.0, dampening=0.0; needs momentum > 0 and "
        "dampening 0 (ClippedSGD)",
    ),
    (
        ClippedSGD,
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        "Invalid nesterov=True with momentum=0.9, dampening=0.1",
    ),
    (
        ClippedSGD,
        {"dampening": -0.1},
        "Invalid dampening value: -0.1; expected a value >= 0 (ClippedSGD)",
    ),
    (
        ClippedSGD,
        {"differentiable": True},
        "Invalid differentiable: True; expected False (ClippedSGD is not differentiable) (ClippedSGD)",
    ),
    (
        ClippedSSTM,
        {"differentiable": True},
        "Invalid differentiable: True; expected False (ClippedSSTM is not differentiable)",
    ),
    (
        ClippedAdamW,
        {"capturable": True},
        "Invalid capturable: True; expected False (CUDA-graph capture is not supported) "
        "(ClippedAdamW)",
    ),
    (
        ClippedAdamW,
        {"fused": True, "foreach": True},
        "Invalid fused=True with foreach=True; expected at most one (ClippedAdamW)",
    ),
    (ClippedAdamW, {"foreach": 1}, "Invalid foreach: 1; expected None, True or False"),
    (ClippedSGD, {"lr": torch.tensor(-0.1)}, "Invalid lr: tensor(-0.1000); expected a value >= 0"),
    (
        ClippedAdamW,
        {"betas": (1.0, 0.999)},
        "Invalid beta parameter at index 0: 1.0; expected a value in [0.0, 1.0)",
    ),
    (
        ClippedAdamW,
        {"betas": (0.9, -0.1)},
        "Invalid beta parameter at index 1: -0.1; expected a value in [0.0, 1.0)",
    ),
    (
        ClippedAdamW,
        {"eps": -1e-8},
        "Invalid epsilon value: -1e-08; expected a value >= 0 (ClippedAdamW)",
    ),
    (
        ClippedSGD,
        {"nonfinite": "ignore"},
        "Invalid nonfinite: 'ignore'; expected one of skip, raise",
    ),
    (ClippedSGD, {"auto_window": 0}, "Invalid auto_window: 0; expected None or an integer >= 1"),
    (ClippedSGD, {"seed": -1}, "Invalid seed: -1; expected None or an integer >= 0"),
    (ClippedSGD, {"fused": "yes"}, "Invalid fused: 'yes'; expected None, True or False"),
    (
        ClippedAdamW,
        {"history_path": "numpy"},
        "Invalid history_path: 'numpy'; expected one of auto, host, device (ClippedAdamW)",
    ),
    (
        ClippedSSTM,
        {"history_path": None},
        "Invalid history_path: None; expected one of auto, host, device",
    ),
    (
        ClippedSGD,
        {"auto_window": True},
        "Invalid auto_window: True; expected None or an integer >= 1",
    ),
    (
        ClippedSSTM,
        {"restart_every": 2.0},
        "Invalid restart_every: 2.0; expected None or an integer >= 1",
    ),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD_ARGS)
def test_bad_arguments_name_argument_and_range(cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(_p(), **kwargs)


def test_host_history_path_needs_cpu_parameters():
    """The host path updates the history through NumPy views: refused for accelerator
    parameters ("meta" stands in for one, as in the sync tests), accepted on CPU."""
    on_meta = [torch.nn.Parameter(torch.zeros(2, device="meta"))]
    expected = (
        "Invalid history_path: 'host'; expected 'auto' or 'device' for parameters on meta "
        "(the host path updates CPU tensors through NumPy) (ClippedSGD)"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        ClippedSGD(on_meta, clipping_type="auto", history_path="host")
    assert ClippedSGD(_p(), clipping_type="auto", history_path="host").history_path == "host"


@pytest.mark.parametrize("cls", [ClippedSGD, ClippedAdamW, ClippedSSTM])
@pytest.mark.parametrize("clipping_type", CLIPPING_TYPES)
def test_valid_arguments_accepted(cls, clipping_type):
    """The boundaries the ranges include are accepted (so the checks above are not too strict)."""
    extra = (
        {"L": 1e-9, "nu": 0.0, "a_k_ratio_upper_bound": 1.0, "restart_coeff": 1.0}
        if cls is ClippedSSTM
        else {}
    )
    opt = cls(
        _p(),
        lr=1e-9 if cls is ClippedSSTM else 0.0,  # SSTM divides by A_1, which lr = 0 makes 0
        clipping_type=clipping_type,
        clipping_level=0.0,
        beta=1e-9,
        p_autoclip=1.0,
        **extra,
    )
    assert opt.clipping_type == clipping_type
