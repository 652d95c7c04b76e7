"""AMP's GradScaler protocol and torch.compile.

* ``scaler.step(opt)`` hands the loss scale and the overflow flag to ``step()``: the clipped run
  equals torch's optimizer + ``scaler.unscale_`` + ``clip_grad_norm_`` (or the per-tensor /
  per-coordinate clip) on the unscaled gradients, under float16 and bfloat16 autocast, with an
  injected inf that the scaler skips — and the skip shows in ``skipped_steps`` and
  ``last_clip_stats.skipped``.
* A ``torch.compile``d function calling ``opt.step()`` gives the parameters of the eager run, and
  the telemetry (``last_clip_stats``, ``skipped_steps``, ``attempted_steps``) is right after
  compiled steps, for every optimizer class and each family of clipping rules.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from clip_core import CLIPPING_TYPES, ClippedAdamW, ClippedSGD, ClippedSSTM

pytestmark = pytest.mark.usefixtures("single_thread")

INF_STEPS = (2, 5)
STEPS = 9


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(700 + t)
    return torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g) * 3


def per_tensor_clip(lam: float):
    def clip(params):
        for p in params:
            clip_grad_norm_([p], lam)

    return clip


# (our optimizer, torch's optimizer, the clip torch applies to the unscaled gradients)
CASES = {
    "sgd-norm": (
        lambda ps: ClippedSGD(ps, lr=0.05, momentum=0.9, clipping_level=1.0),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
        lambda ps: clip_grad_norm_(ps, 1.0),
    ),
    "adamw-norm": (
        lambda ps: ClippedAdamW(ps, lr=0.01, clipping_level=1.0),
        lambda ps: torch.optim.AdamW(ps, lr=0.01),
        lambda ps: clip_grad_norm_(ps, 1.0),
    ),
    "sgd-coord_wise": (
        lambda ps: ClippedSGD(ps, lr=0.05, clipping_type="coord_wise", clipping_level=0.05),
        lambda ps: torch.optim.SGD(ps, lr=0.05),
        lambda ps: clip_grad_value_(ps, 0.05),
    ),
    "adamw-layer_wise": (
        lambda ps: ClippedAdamW(ps, lr=0.01, clipping_type="layer_wise", clipping_level=0.3),
        lambda ps: torch.optim.AdamW(ps, lr=0.01),
        per_tensor_clip(0.3),
    ),
}


def amp_run(make_opt, dtype, *, clip=None, unscale_first=False):
    """``STEPS`` steps under autocast and a GradScaler, with an inf injected at ``INF_STEPS``.

    ``clip`` (the torch reference): ``scaler.unscale_`` then ``clip(params)`` before
    ``scaler.step``. Returns parameters and scale after each step, the optimizer and the
    norms of the unscaled gradients (reference only).
    """
    model = make_model()
    params = list(model.parameters())
    opt = make_opt(params)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    out, scales, norms, skipped_flags = [], [], [], []
    for t in range(STEPS):
        opt.zero_grad()
        x, y = batch(t)
        with torch.autocast("cpu", dtype=dtype):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        scaler.scale(loss).backward()
        if t in INF_STEPS:
            params[0].grad[0, 0] = float("inf")
        if clip is not None or unscale_first:
            scaler.unscale_(opt)
        if clip is not None:
            norms.append(
                float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])))
            )
            clip(params)
        scaler.step(opt)
        scaler.update()
        if clip is None:
            skipped_flags.append(float(opt.last_clip_stats.skipped))
        out.append([p.detach().clone() for p in params])
        scales.append(scaler.get_scale())
    return out, scales, opt, norms, skipped_flags


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_grad_scaler_equals_torch_unscale_then_clip(case, dtype):
    ours_make, torch_make, clip = CASES[case]
    ours, our_scales, opt, _, skipped = amp_run(ours_make, dtype)
    ref, ref_scales, _, norms, _ = amp_run(torch_make, dtype, clip=clip)
    assert our_scales == ref_scales and len(set(ref_scales)) > 2  # it grew and backed off
    assert not torch.equal(ours[0][0], ours[-1][0])
    for t, (a, b) in enumerate(zip(ours, ref)):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=f"step {t}")
    # the scaler's skips are counted and visible in the telemetry
    assert int(opt.skipped_steps) == len(INF_STEPS) and int(opt.attempted_steps) == STEPS
    assert skipped == [1.0 if t in INF_STEPS else 0.0 for t in range(STEPS)]
    # clipping saw the unscaled gradient: the last norm is that of the unscaled gradient
    np.testing.assert_allclose(float(opt.last_clip_stats.grad_norm), norms[-1], rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16])
def test_grad_scaler_after_explicit_unscale(dtype):
    """``scaler.unscale_(opt)`` first (to log or clip by hand): step() gets only ``found_inf``."""
    ours_make, torch_make, clip = CASES["sgd-norm"]
    ours, _, opt, _, _ = amp_run(ours_make, dtype, unscale_first=True)
    ref, _, _, _, _ = amp_run(torch_make, dtype, clip=clip)
    for a, b in zip(ours, ref):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert int(opt.skipped_steps) == len(INF_STEPS)


def test_grad_scaler_with_auto_against_numpy_quantile():
    """auto under the scaler: λ_t is the quantile of the unscaled norms of the steps taken."""
    history: list[float] = []

    def auto_clip(ps):
        norm = float(torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ps])))
        if not np.isfinite(norm):
            return  # the scaler skips this step; it is not in the history either
        history.append(norm)
        clip_grad_norm_(ps, float(np.quantile(history, 0.5)))

    ours, _, opt, _, _ = amp_run(
        lambda ps: ClippedSGD(ps, lr=0.05, clipping_type="auto", p_autoclip=0.5), torch.float16
    )
    ref, _, _, _, _ = amp_run(
        lambda ps: torch.optim.SGD(ps, lr=0.05), torch.float16, clip=auto_clip
    )
    for a, b in zip(ours, ref):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt.norm_history().numpy(), history, rtol=1e-5)


def test_sstm_under_grad_scaler_equals_sstm_on_unscaled_gradients():
    """No torch SSTM exists: the scaled run must equal the same optimizer fed the unscaled
    gradient (whose step is checked against NumPy in test_sstm.py) with the same skips."""

    def make(ps):
        return ClippedSSTM(ps, lr=0.02, L=5.0, clipping_level=0.01)

    ours, _, opt, _, _ = amp_run(make, torch.bfloat16)
    ref, _, _, _, _ = amp_run(make, torch.bfloat16, clip=lambda ps: None)
    for a, b in zip(ours, ref):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert int(opt.skipped_steps) == len(INF_STEPS)


# -- torch.compile ---------------------------------------------------------------------------------
CLASSES = {
    "sgd": lambda ps, t, **kw: ClippedSGD(ps, lr=0.05, momentum=0.9, **clip_args(t), **kw),
    "adamw": lambda ps, t, **kw: ClippedAdamW(ps, lr=0.01, **clip_args(t), **kw),
    "sstm": lambda ps, t, **kw: ClippedSSTM(
        ps, lr=0.02, L=5.0, restart_every=2, **clip_args(t, level=0.01), **kw
    ),
}


def clip_args(clipping_type: str, level: float = 1.0) -> dict:
    return {
        "clipping_type": clipping_type,
        "clipping_level": level if clipping_type != "coord_wise" else level / 10,
        "beta": 0.3,
        "p_autoclip": 0.5,
        "seed": 3,
    }


def compiled_run(make_opt, compile_backend: str | None, steps: int = 5):
    model = make_model()
    params = list(model.parameters())
    opt = make_opt(params)

    def step():
        opt.step()

    if compile_backend is not None:
        torch._dynamo.reset()
        step = torch.compile(step, backend=compile_backend)
    out, stats = [], []
    for t in range(steps):
        opt.zero_grad()
        x, y = batch(t)
        torch.nn.functional.mse_loss(model(x), y).backward()
        if t == 2:
            params[0].grad[0, 0] = float("nan")
        step()
        out.append([p.detach().clone() for p in params])
        stats.append([s.clone() for s in opt.last_clip_stats])
    return out, stats, opt


def assert_compiled_equals_eager(kind, clipping_type, backend, rtol):
    eager, eager_stats, eager_opt = compiled_run(lambda ps: CLASSES[kind](ps, clipping_type), None)
    comp, comp_stats, comp_opt = compiled_run(lambda ps: CLASSES[kind](ps, clipping_type), backend)
    assert not torch.equal(eager[0][0], eager[-1][0])
    for t, (a, b) in enumerate(zip(eager, comp)):
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=rtol, atol=rtol, msg=f"step {t}")
    for t, (a, b) in enumerate(zip(eager_stats, comp_stats)):
        for x, y in zip(a, b):
            torch.testing.assert_close(
                y, x, rtol=rtol, atol=rtol, equal_nan=True, msg=f"stats, step {t}"
            )
    assert int(comp_opt.attempted_steps) == 5 and int(comp_opt.skipped_steps) == 1
    if kind == "sstm":
        assert torch.equal(comp_opt._k, eager_opt._k) and torch.equal(
            comp_opt.restarts, eager_opt.restarts
        )
        assert int(comp_opt.restarts) >= 1


# Every class × every clipping type with dynamo's tracing ("eager" backend: the graph capture,
# side effects and guards that decide correctness, ~8 s per case here). Every class and every
# family are in the quick subset; the rest of the product is marked slow.
FAMILIES = ["norm", "linear_stoch_norm", "auto", "layer_wise", "coord_wise"]
#: the rest of the clipping types: same code paths as a family above, with other parameters
OTHER_TYPES = ["none", "quadratic_stoch_norm", "linear_stoch_auto", "quadratic_stoch_auto"]
QUICK = {
    ("sgd", "norm"),
    ("sgd", "auto"),
    ("adamw", "linear_stoch_norm"),
    ("adamw", "coord_wise"),
    ("sstm", "layer_wise"),
    ("sstm", "auto"),
}


@pytest.mark.parametrize(
    ("kind", "clipping_type"),
    [
        pytest.param(k, t, marks=() if (k, t) in QUICK else pytest.mark.slow)
        for k in sorted(CLASSES)
        for t in FAMILIES + OTHER_TYPES
    ],
)
def test_compiled_step_equals_eager(kind, clipping_type):
    assert_compiled_equals_eager(kind, clipping_type, "eager", rtol=0.0)


# The full inductor compile (tens of seconds each on CPU): one case per class.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "clipping_type"),
    [("sgd", "quadratic_stoch_auto"), ("adamw", "norm"), ("sstm", "layer_wise")],
)
def test_inductor_compiled_step_equals_eager(kind, clipping_type):
    assert clipping_type in CLIPPING_TYPES
    assert_compiled_equals_eager(kind, clipping_type, "inductor", rtol=1e-6)


# -- where the compiled step breaks its graph (the README's table) -------------------------------
def graph_breaks(kind: str, clipping_type: str, **kwargs) -> tuple[int, set[str]]:
    model = make_model()
    opt = CLASSES[kind](list(model.parameters()), clipping_type, **kwargs)
    x, y = batch(0)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(opt.step)()
    reasons = {str(r.reason).split("\n")[0] for r in explained.break_reasons}
    return explained.graph_count, reasons


@pytest.mark.parametrize(
    ("kind", "clipping_type", "graphs", "reason"),
    [
        ("sstm", "norm", 1, None),  # the whole step is one graph
        ("sstm", "coord_wise", 1, None),
        ("sgd", "norm", 3, "compiler.disable"),  # torch's fused kernel runs eagerly
        ("adamw", "layer_wise", 2, "compiler.disable"),
        ("sstm", "linear_stoch_norm", 6, "compiler.disable"),  # the generator draw
    ],
)
def test_graph_breaks_are_as_documented(kind, clipping_type, graphs, reason):
    count, reasons = graph_breaks(kind, clipping_type)
    assert count == graphs
    assert all(reason in r for r in reasons) if reason else not reasons


def test_sstm_step_compiles_as_one_graph():
    model = make_model()
    opt = CLASSES["sstm"](list(model.parameters()), "norm")
    torch._dynamo.reset()
    step = torch.compile(opt.step, fullgraph=True, backend="eager")
    for t in range(2):
        opt.zero_grad()
        x, y = batch(t)
        torch.nn.functional.mse_loss(model(x), y).backward()
        step()
    assert int(opt.attempted_steps) == 2 and int(opt.restarts) == 1  # restart_every=2


def test_device_path_auto_history_traces_without_breaks():
    """The history's device path (what CUDA runs) compiles into the SSTM step's one graph."""
    assert graph_breaks("sstm", "auto", history_path="device") == (1, set())
