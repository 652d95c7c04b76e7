"""torch.optim conformance: signatures, flags, tensor lr, hyper-parameters in param groups.

Every behaviour is checked against torch's own optimizers (``SGD``, ``AdamW``,
``clip_grad_norm_``, ``clip_grad_value_``) or a NumPy transcription, never against clip_core.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.nn.utils import clip_grad_norm_

from clip_core import ClippedAdamW, ClippedSGD, ClippedSSTM
from tests.clip_core.test_optimizers import (
    assert_close_runs,
    assert_equal_runs,
    assert_moved,
    clip_norm_hook,
    loss_fn,
    make_model,
    train,
    two_groups,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# -- signatures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fused", [True, False])
def test_sgd_positional_order_and_dampening_match_torch(fused):
    # torch's order: (params, lr, momentum, dampening, weight_decay, nesterov)
    ours, opt = train(
        lambda m: ClippedSGD(m.parameters(), 0.1, 0.9, 0.3, 0.01, False, clipping_type="none"),
        dtype=torch.float32 if fused else torch.float64,
    )
    ref, torch_opt = train(
        lambda m: torch.optim.SGD(m.parameters(), 0.1, 0.9, 0.3, 0.01, False, fused=fused),
        dtype=torch.float32 if fused else torch.float64,
    )
    group = opt.param_groups[0]
    assert (group["dampening"], group["weight_decay"], group["nesterov"]) == (0.3, 0.01, False)
    assert_moved(ours)
    assert_close_runs(ours, ref, rtol=1e-6, atol=1e-7)
    for p_ours, p_ref in zip(opt.state.values(), torch_opt.state.values()):
        torch.testing.assert_close(p_ours["momentum_buffer"], p_ref["momentum_buffer"])


@pytest.mark.parametrize("fused", [True, False])
def test_dampened_momentum_starts_at_the_first_step_taken(fused):
    """torch's dampened buffer starts undampened at the first step; a step skipped for a
    non-finite gradient (ours) is one torch never took (a GradScaler skip)."""

    def poison_first(model, t):
        if t == 0:
            model[0].weight.grad[0, 0] = float("nan")

    ours, opt = train(
        lambda m: ClippedSGD(m.parameters(), 0.1, 0.9, 0.5, clipping_type="none", fused=fused),
        before_step=poison_first,
    )
    assert int(opt.skipped_steps) == 1
    # torch: the same run without step 0
    model = make_model()
    ref_opt = torch.optim.SGD(model.parameters(), 0.1, 0.9, 0.5)
    ref = [[p.detach().clone() for p in model.parameters()]]
    for t in range(1, 12):
        ref_opt.zero_grad()
        loss_fn(model, t, torch.float64).backward()
        ref_opt.step()
        ref.append([p.detach().clone() for p in model.parameters()])
    assert_close_runs(ours, ref, rtol=1e-12, atol=1e-14)


def test_dampening_with_norm_clipping_equals_clip_grad_norm_then_sgd():
    norms: list[float] = []
    config = {"lr": 0.1, "momentum": 0.8, "dampening": 0.2, "weight_decay": 0.01}
    ref, _ = train(
        lambda m: torch.optim.SGD(two_groups(m), **config), before_step=clip_norm_hook(0.5, norms)
    )
    assert sum(n > 0.5 for n in norms) >= 6
    ours, _ = train(lambda m: ClippedSGD(two_groups(m), clipping_level=0.5, **config))
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", [ClippedSGD, ClippedAdamW, ClippedSSTM])
def test_unknown_arguments_name_the_class_called(cls):
    with pytest.raises(TypeError, match=re.escape(f"{cls.__name__}.__init__() got an unexpected")):
        cls(make_model().parameters(), bogus=1)


def test_sgd_takes_no_extra_positional_arguments():
    # ClippedSGD(p, lr, momentum, dampening, weight_decay, nesterov, <clipping_type>) is refused
    with pytest.raises(TypeError, match="ClippedSGD"):
        ClippedSGD(make_model().parameters(), 0.1, 0.9, 0.0, 0.0, False, "norm")


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (
            lambda ps, **kw: ClippedSGD(ps, lr=0.1, momentum=0.9, clipping_type="none", **kw),
            lambda ps, **kw: torch.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
        ),
        (
            lambda ps, **kw: ClippedAdamW(ps, lr=0.01, clipping_type="none", **kw),
            lambda ps, **kw: torch.optim.AdamW(ps, lr=0.01, **kw),
        ),
    ],
)
@pytest.mark.parametrize("path", [{}, {"foreach": True}, {"foreach": False}])
def test_maximize_and_foreach_paths_match_torch(ours, ref, path):
    run, opt = train(lambda m: ours(m.parameters(), maximize=True, **path))
    expected, _ = train(lambda m: ref(m.parameters(), maximize=True, **path))
    assert opt.fused == (path == {}) and opt.foreach == path.get("foreach")
    assert_moved(run)
    assert_close_runs(run, expected, rtol=1e-12, atol=1e-14)


def test_sstm_maximize_equals_minimising_the_negated_loss():
    def run(maximize: bool):
        model = make_model()
        opt = ClippedSSTM(
            model.parameters(), lr=0.05, L=2.0, clipping_level=0.05, maximize=maximize
        )
        out = []
        for t in range(8):
            opt.zero_grad()
            sign = -1.0 if maximize else 1.0
            (sign * loss_fn(model, t, torch.float64)).backward()
            opt.step()
            out.append([p.detach().clone() for p in model.parameters()])
        return out

    assert_moved(run(True))
    assert_equal_runs(run(True), run(False))


# -- tensor lr and eps=0 ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "ref"),
    [
        (
            lambda ps, lr, **kw: ClippedSGD(ps, lr=lr, momentum=0.9, clipping_level=0.5, **kw),
            lambda ps, lr, **kw: torch.optim.SGD(ps, lr=lr, momentum=0.9, **kw),
        ),
        (
            lambda ps, lr, **kw: ClippedAdamW(ps, lr=lr, clipping_level=0.5, **kw),
            lambda ps, lr, **kw: torch.optim.AdamW(ps, lr=lr, **kw),
        ),
    ],
)
@pytest.mark.parametrize("fused", [True, False])
def test_tensor_lr_with_a_scheduler_equals_torch(make, ref, fused):
    def scheduler(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    ours, opt = train(
        lambda m: make(m.parameters(), torch.tensor(0.05), fused=fused),
        dtype=torch.float32,
        scheduler=scheduler,
    )
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    norms: list[float] = []
    expected, _ = train(
        lambda m: ref(m.parameters(), torch.tensor(0.05), fused=True),
        dtype=torch.float32,
        scheduler=scheduler,
        before_step=clip_norm_hook(0.5, norms),
    )
    assert sum(n > 0.5 for n in norms) >= 6
    assert_close_runs(ours, expected, rtol=1e-5, atol=1e-6)


def test_sstm_tensor_lr_equals_float_lr():
    def run(lr):
        model = make_model()
        opt = ClippedSSTM(model.parameters(), lr=lr, L=2.0, clipping_level=0.05)
        out = []
        for t in range(6):
            opt.zero_grad()
            loss_fn(model, t, torch.float64).backward()
            opt.step()
            out.append([p.detach().clone() for p in model.parameters()])
        return out

    assert_close_runs(run(torch.tensor(0.05, dtype=torch.float64)), run(0.05), rtol=1e-14)


def test_adamw_accepts_eps_zero_as_torch_does():
    ours, _ = train(lambda m: ClippedAdamW(m.parameters(), lr=0.01, eps=0.0, clipping_type="none"))
    ref, _ = train(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, eps=0.0, fused=True))
    assert_moved(ours)
    assert_equal_runs(ours, ref)


def test_adamw_defaults_are_clip_grad_norm_one_then_adamw():
    """The documented default: ClippedAdamW(params) = clip_grad_norm_(·, 1.0) + AdamW(params)."""
    norms: list[float] = []
    ref, _ = train(
        lambda m: torch.optim.AdamW(m.parameters(), fused=True),
        before_step=clip_norm_hook(1.0, norms),
    )
    assert sum(n > 1.0 for n in norms) >= 6
    ours, opt = train(lambda m: ClippedAdamW(m.parameters()))
    assert opt.clipping_type == "norm" and opt.param_groups[0]["clipping_level"] == 1.0
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)


# -- sparse ----------------------------------------------------------------------------------------
def test_sparse_parameters_refused_at_construction():
    sparse = torch.sparse_coo_tensor([[0]], [1.0], (3,)).requires_grad_()
    with pytest.raises(
        ValueError, match=r"Invalid parameter: a torch.sparse_coo tensor.*ClippedSGD"
    ):
        ClippedSGD([sparse], lr=0.1)


def test_sparse_gradient_of_embedding_refused_at_first_step():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = ClippedAdamW(emb.parameters())  # the dense weight cannot tell (see README)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"Invalid gradient: sparse.*ClippedAdamW.*sparse=False"):
        opt.step()


# -- hyper-parameters in the param groups ----------------------------------------------------------
def _grads(rng: np.random.Generator, shapes, scales):
    return [rng.standard_normal(s) * c for s, c in zip(shapes, scales)]


def test_clipping_level_change_in_param_group_takes_effect():
    """A schedule on λ through param_groups, against clip_grad_norm_ + torch SGD."""
    levels = [0.5, 0.5, 0.2, 0.2, 2.0, 2.0]

    def set_level(opt, t):
        for group in opt.param_groups:
            group["clipping_level"] = levels[t]

    norms: list[float] = []
    model = make_model()
    ref_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = []
    for t in range(6):
        ref_opt.zero_grad()
        loss_fn(model, t, torch.float64).backward()
        norms.append(float(clip_grad_norm_(model.parameters(), levels[t])))
        ref_opt.step()
        ref.append([p.detach().clone() for p in model.parameters()])
    assert sum(n > lv for n, lv in zip(norms, levels)) >= 3
    model = make_model()
    opt = ClippedSGD(model.parameters(), lr=0.1, clipping_level=9.0)
    ours = []
    for t in range(6):
        set_level(opt, t)
        opt.zero_grad()
        loss_fn(model, t, torch.float64).backward()
        opt.step()
        ours.append([p.detach().clone() for p in model.parameters()])
        assert float(opt.last_clip_stats.threshold) == levels[t]
    assert_close_runs(ours, ref, rtol=1e-5, atol=1e-7)


def test_per_group_levels_for_per_tensor_and_per_coordinate_rules():
    rng = np.random.default_rng(0)
    shapes, levels = [(4, 3), (3,), (5,)], [0.5, 0.5, 2.0]
    g = _grads(rng, shapes, [1.0, 3.0, 4.0])
    for clipping_type in ("layer_wise", "coord_wise"):
        params = [torch.nn.Parameter(torch.zeros(s, dtype=torch.float64)) for s in shapes]
        opt = ClippedSGD(
            [{"params": params[:2]}, {"params": params[2:], "clipping_level": 2.0}],
            lr=1.0,
            clipping_type=clipping_type,
            clipping_level=0.5,
        )
        for p, gi in zip(params, g):
            p.grad = torch.tensor(gi)
        opt.step()
        for p, gi, lam in zip(params, g, levels):
            if clipping_type == "layer_wise":
                expected = gi * min(1.0, lam / np.linalg.norm(gi))
            else:
                expected = np.clip(gi, -lam, lam)
            np.testing.assert_allclose(-p.detach().numpy(), expected, rtol=1e-12)
        assert opt.last_clip_stats.threshold.tolist() == levels


def test_global_rule_refuses_differing_levels_across_groups():
    model = make_model()
    groups = two_groups(model)
    groups[1]["clipping_level"] = 2.0
    opt = ClippedAdamW(groups, clipping_level=1.0)
    loss_fn(model, 0, torch.float64).backward()
    with pytest.raises(ValueError, match=r"Invalid clipping_level: \[1.0, 2.0\] across param"):
        opt.step()
    opt.param_groups[1]["clipping_level"] = 1.0
    opt.step()  # agreeing again: accepted


def test_param_group_clipping_values_are_checked():
    opt = ClippedSGD(make_model().parameters(), lr=0.1, clipping_type="quadratic_stoch_auto")
    assert {"beta", "p_autoclip"} <= set(opt.param_groups[0]) and "clipping_level" not in (
        opt.param_groups[0]
    )
    with pytest.raises(ValueError, match=re.escape("Invalid beta: 1.5; expected a value in")):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "beta": 1.5})


def test_state_dict_loads_into_an_optimizer_with_another_level_as_torch_does():
    """Like lr in torch: the saved values come back with the state; set a new one after."""
    model = make_model()
    opt = ClippedSGD(model.parameters(), lr=0.1, momentum=0.9, clipping_level=0.5)
    ref_model = make_model()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    for t in range(3):
        for m, o, lam in ((model, opt, None), (ref_model, ref_opt, 0.5)):
            o.zero_grad()
            loss_fn(m, t, torch.float64).backward()
            if lam is not None:
                clip_grad_norm_(m.parameters(), lam)
            o.step()
    resumed = ClippedSGD(model.parameters(), lr=0.1, momentum=0.9, clipping_level=3.0)
    resumed.load_state_dict(opt.state_dict())
    assert resumed.param_groups[0]["clipping_level"] == 0.5  # the saved value, as lr
    resumed.param_groups[0]["clipping_level"] = 0.2  # resume with a new λ
    for t in range(3, 6):
        resumed.zero_grad()
        ref_opt.zero_grad()
        loss_fn(model, t, torch.float64).backward()
        loss_fn(ref_model, t, torch.float64).backward()
        assert float(clip_grad_norm_(ref_model.parameters(), 0.2)) > 0.2
        resumed.step()
        ref_opt.step()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_state_dict_refuses_another_kind_of_rule():
    opt = ClippedSGD(make_model().parameters(), clipping_type="norm")
    for other in ("layer_wise", "linear_stoch_norm", "auto"):
        target = ClippedSGD(make_model().parameters(), clipping_type=other)
        with pytest.raises(ValueError, match="only clipping_level, beta and p_autoclip may differ"):
            target.load_state_dict(opt.state_dict())
    auto = ClippedSGD(make_model().parameters(), clipping_type="auto", auto_window=10)
    with pytest.raises(ValueError, match="window=10"):
        auto.load_state_dict(
            ClippedSGD(make_model().parameters(), clipping_type="auto").state_dict()
        )


# -- SSTM param groups -----------------------------------------------------------------------------
def test_sstm_added_group_takes_the_current_lr_and_rounding_is_tolerated():
    model = make_model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = ClippedSSTM(first, lr=0.1, L=2.0, clipping_level=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    for t in range(2):
        opt.zero_grad()
        loss_fn(model, t, torch.float64).backward()
        opt.step()
        sched.step()
    opt.add_param_group({"params": second})  # no lr: takes the scheduled one, not 0.1
    assert opt.param_groups[1]["lr"] == opt.param_groups[0]["lr"] != 0.1
    opt.param_groups[1]["lr"] = 0.010000000000000002  # what StepLR makes of 0.01
    opt.param_groups[0]["lr"] = 0.01
    opt.zero_grad()
    loss_fn(model, 2, torch.float64).backward()
    opt.step()
    assert not math.isnan(float(opt.last_clip_stats.grad_norm))
    opt.param_groups[1]["lr"] = 0.02
    with pytest.raises(ValueError, match="same lr, L and nu in every param group"):
        opt.step()
