"""torch's generic optimizer checks, run over ClippedSGD and ClippedAdamW through torch's OptimizerInfo.

The entries are built from torch's own ``optim_db`` entries for SGD and AdamW
(``torch.testing._internal.common_optimizers``, shipped in the wheel): the same optimizer inputs,
error inputs and schedulers, with only the class swapped, for ``clipping_type="none"`` and for
``norm`` at a level that never clips (λ = 1e9). The checks are this module's own harness around
those entries: what pytorch's ``TestOptimRenewed`` checks on CPU (its file is not in the wheel).
torch's own SGD and AdamW entries run through every check as well: the harness's control.

Not run, each for its reason:

* ``differentiable=True``: refused at construction (a clipping decision has no gradient), so
  ``differentiable`` is dropped from the entries' ``supported_impls``.
* sparse gradients (SGD's ``supports_sparse``, torch's ``test_rosenbrock_sparse``): refused
  (there is no fused clipped sparse step), so ``supports_sparse`` is off.
* ``capturable`` (AdamW's CUDA-only inputs) and everything needing CUDA or several devices
  (multi-GPU direction, CUDA state-dict moves, peak memory, fused CPU vs CUDA): none on CPU.

Every check here passes for torch's own entries on CPU, so none is excused as one torch fails.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn import Parameter
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

from clip_core import ClippedAdamW, ClippedSGD

pytest.importorskip("expecttest")  # torch's test helpers import it
common = pytest.importorskip("torch.testing._internal.common_optimizers")

pytestmark = pytest.mark.usefixtures("single_thread")

NEVER_CLIPS = 1e9


# Module-level classes (not closures), so that the optimizers pickle and copy like torch's.
class SGDNone(ClippedSGD):
    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, clipping_type="none", **kwargs)


class SGDNormNeverClips(ClippedSGD):
    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, clipping_level=NEVER_CLIPS, **kwargs)


class AdamWNone(ClippedAdamW):
    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, clipping_type="none", **kwargs)


class AdamWNormNeverClips(ClippedAdamW):
    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(params, *args, clipping_level=NEVER_CLIPS, **kwargs)


def _torch_info(name: str) -> Any:
    return next(info for info in common.optim_db if info.optim_cls.__name__ == name)


def _entry(cls: type, torch_name: str) -> Any:
    """torch's entry for ``torch_name`` with the class swapped and the refusals taken out."""
    base = _torch_info(torch_name)
    return common.OptimizerInfo(
        cls,
        optim_inputs_func=base.optim_inputs_func,
        optim_error_inputs_func=base.optim_error_inputs_func,
        scheduler_inputs=base.scheduler_inputs,
        supported_impls=tuple(i for i in base.supported_impls if i != "differentiable"),
        not_og_supported_flags=base.not_og_supported_flags,
        supports_sparse=False,
        has_capturable_arg=base.has_capturable_arg,
        supports_complex=base.supports_complex,
        supports_fused_on=base.supports_fused_on,
    )


ENTRIES = [
    _torch_info("SGD"),
    _torch_info("AdamW"),
    _entry(SGDNone, "SGD"),
    _entry(SGDNormNeverClips, "SGD"),
    _entry(AdamWNone, "AdamW"),
    _entry(AdamWNormNeverClips, "AdamW"),
]
entries = pytest.mark.parametrize("info", ENTRIES, ids=lambda info: info.name)


def all_inputs(info: Any, dtype: torch.dtype = torch.float32, skip: tuple = ()) -> list[Any]:
    """torch's inputs with each implementation flag (foreach, fused) switched on in turn."""
    skip = tuple(sorted({"differentiable", *skip}))
    return common._get_optim_inputs_including_global_cliquey_kwargs("cpu", dtype, info, skip=skip)


def fresh_inputs(info: Any) -> list[Any]:
    return info.optim_inputs_func(device="cpu")


def linear_problem(dtype: torch.dtype = torch.float32, contiguous: bool = True):
    """torch's test problem: ``‖W x + b‖²`` with a 10×5 weight."""
    if contiguous:
        weight, bias = torch.randn(10, 5, dtype=dtype), torch.randn(10, dtype=dtype)
    else:
        weight, bias = (
            torch.randn(10, 5, 2, dtype=dtype)[..., 0],
            torch.randn(10, 2, dtype=dtype)[..., 0],
        )
    return Parameter(weight), Parameter(bias), torch.randn(5, dtype=dtype)


def closure_for(opt: torch.optim.Optimizer, weight, bias, x) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    return closure


def step_schedulers(schedulers: list[Any], loss: torch.Tensor) -> None:
    for scheduler in schedulers:
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(loss.detach())
        else:
            scheduler.step()


def assert_goes_right_direction(opt, closure, maximize: bool, schedulers=(), steps: int = 20):
    initial = closure().item()
    for _ in range(steps):
        loss = opt.step(closure)
        step_schedulers(list(schedulers), loss)
    final = closure().item()
    assert (final > initial) if maximize else (final < initial), (initial, final)


# -- construction errors ---------------------------------------------------------------------
@entries
def test_errors(info):
    for error_input in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
        given = error_input.optimizer_error_input
        if error_input.error_on == common.OptimizerErrorEnum.CONSTRUCTION_ERROR:
            act = functools.partial(info.optim_cls, given.params, **given.kwargs)
        else:
            act = info.optim_cls(given.params, **given.kwargs).step
        if issubclass(error_input.error_type, Warning):
            with pytest.warns(error_input.error_type, match=error_input.error_regex):
                act()
        else:
            with pytest.raises(error_input.error_type, match=error_input.error_regex):
                act()


# -- the update goes the right way -----------------------------------------------------------
@entries
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("with_lrsched", [True, False])
def test_forloop_goes_right_direction(info, contiguous, with_lrsched):
    for schedulers in info.scheduler_inputs if with_lrsched else [()]:
        for given in fresh_inputs(info):  # fresh: a scheduler mutates a tensor lr
            kwargs = {**given.kwargs, "foreach": False}
            weight, bias, x = linear_problem(contiguous=contiguous)
            opt = info.optim_cls([weight, bias], **kwargs)
            made = [make(opt) for make in schedulers]
            closure = closure_for(opt, weight, bias, x)
            assert_goes_right_direction(opt, closure, kwargs.get("maximize", False), made)


@entries
def test_param_group_with_lrscheduler_goes_right_direction(info):
    for schedulers in info.scheduler_inputs:
        weight, bias, x = linear_problem()
        opt = info.optim_cls([{"params": [weight]}, {"params": [bias], "lr": 0.01}])
        made = [make(opt) for make in schedulers]
        assert_goes_right_direction(opt, closure_for(opt, weight, bias, x), False, made)


@entries
def test_tensor_lr(info):
    for given in all_inputs(info):
        kwargs = {k: v for k, v in given.kwargs.items() if k != "lr"}
        weight, bias, x = linear_problem()
        twin = [p.detach().clone().requires_grad_() for p in (weight, bias)]
        ref = info.optim_cls([weight, bias], lr=1e-3, **kwargs)
        try:
            opt = info.optim_cls(twin, lr=torch.tensor(1e-3), **kwargs)
        except ValueError as error:  # torch refuses a tensor lr with foreach, and says so
            assert "lr as a Tensor is not supported" in str(error)
            continue
        for _ in range(5):
            ref.step(closure_for(ref, weight, bias, x))
            opt.step(closure_for(opt, *twin, x))
            torch.testing.assert_close([weight, bias], twin)


# -- implementations agree -------------------------------------------------------------------
def _params_of_many_shapes(dtype: torch.dtype) -> list[Parameter]:
    torch.manual_seed(2)
    shapes = [(2, 3), (3,), (4, 1, 5), (1,), (7, 2)]
    params = [Parameter(torch.randn(s, dtype=dtype)) for s in shapes]
    params.append(Parameter(torch.randn(6, 4, dtype=dtype).t()))  # non-contiguous
    return params


def _run_with_grads(opt, params, steps: int, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:  # laid out like the parameter, as autograd lays out a gradient
            values = torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.grad = torch.empty_like(p).copy_(values)
        opt.step()


@entries
@pytest.mark.parametrize("impl", ["foreach", "fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_impl_matches_forloop(info, impl, dtype):
    """torch's foreach/fused-vs-forloop comparison: parameters and state after 5 steps."""
    if impl not in info.supported_impls:
        pytest.skip(f"{info.name} has no {impl} implementation")
    check_impl_matches_forloop(info, impl, dtype)


def check_impl_matches_forloop(info: Any, impl: str, dtype: torch.dtype) -> None:
    for given in fresh_inputs(info):
        runs = []
        for flags in ({"foreach": False}, {impl: True}):
            params = _params_of_many_shapes(dtype)
            opt = info.optim_cls(params, **{**given.kwargs, **flags})
            _run_with_grads(opt, params, 5)
            runs.append((params, [opt.state[p] for p in params]))
        (params, states), (params_i, states_i) = runs
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
        torch.testing.assert_close(params, params_i, **tol)
        torch.testing.assert_close(states, states_i, **tol)


@entries
def test_mixed_dtypes_match_forloop(info):
    """float32 and float64 parameters in one optimizer (the CPU part of torch's mixed test)."""
    for given in fresh_inputs(info):
        runs = []
        for flags in ({"foreach": False}, {}):
            params = (
                _params_of_many_shapes(torch.float32)[:3]
                + _params_of_many_shapes(torch.float64)[3:]
            )
            opt = info.optim_cls(params, **{**given.kwargs, **flags})
            _run_with_grads(opt, params, 4)
            runs.append(params)
        torch.testing.assert_close(*runs, rtol=1e-5, atol=1e-6)


@entries
def test_fused_does_not_step_if_foundinf(info):
    if "fused" not in info.supported_impls:
        pytest.skip(f"{info.name} has no fused implementation")
    for given in fresh_inputs(info):
        params = _params_of_many_shapes(torch.float32)
        before = [p.detach().clone() for p in params]
        opt = info.optim_cls(params, **{**given.kwargs, "fused": True})
        opt.grad_scale = torch.ones((1,))  # torch's own test hands a [1]-shaped scale
        opt.found_inf = torch.ones(())
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        torch.testing.assert_close(params, before, rtol=0, atol=0)
        for p in params:
            if "step" in opt.state[p]:
                assert float(opt.state[p]["step"]) == 0


@entries
@pytest.mark.parametrize("shape_kind", ["5x5", "2d"])
def test_complex(info, shape_kind):
    """Complex parameters step as torch's optimizers step their real view."""
    for given in all_inputs(info, skip=("fused",)):  # fused kernels take no complex tensors
        torch.manual_seed(4)
        if shape_kind == "5x5":
            z = [torch.randn(5, 5, dtype=torch.complex64, requires_grad=True)]
            real = [torch.view_as_real(z[0]).detach().clone().requires_grad_()]
        else:  # torch's complex_2d: (re, im) as two real parameters
            z = [torch.randn(2, dtype=torch.complex64, requires_grad=True)]
            real = [
                z[0].real.detach().clone().requires_grad_(),
                z[0].imag.detach().clone().requires_grad_(),
            ]
        opt, ref = info.optim_cls(z, **given.kwargs), info.optim_cls(real, **given.kwargs)
        for _ in range(4):
            opt.zero_grad()
            ref.zero_grad()
            as_complex = torch.view_as_complex(real[0]) if len(real) == 1 else torch.complex(*real)
            for t in (z[0], as_complex):
                (t.abs().pow(3).sum() + (t.real * t.imag).sum()).backward()
            opt.step()
            ref.step()
        got = torch.view_as_real(z[0]) if len(real) == 1 else torch.stack([z[0].real, z[0].imag])
        torch.testing.assert_close(got, real[0] if len(real) == 1 else torch.stack(real))


# -- steps that change nothing, and the state they leave ---------------------------------------
@entries
def test_step_is_noop_when_params_have_no_grad(info):
    for given in all_inputs(info):
        params = _params_of_many_shapes(torch.float32)
        before = [p.detach().clone() for p in params]
        opt = info.optim_cls(params, **given.kwargs)
        opt.step()
        torch.testing.assert_close(params, before, rtol=0, atol=0)


@entries
def test_step_is_noop_for_zero_grads(info):
    for given in all_inputs(info):
        if given.kwargs.get("weight_decay", 0) != 0:
            continue  # decay moves a parameter whatever its gradient
        params = _params_of_many_shapes(torch.float32)
        before = [p.detach().clone() for p in params]
        opt = info.optim_cls(params, **{**given.kwargs, "weight_decay": 0.0})
        for _ in range(3):
            for p in params:
                p.grad = torch.zeros_like(p)
            opt.step()
        torch.testing.assert_close(params, before, rtol=0, atol=0)


@entries
def test_non_empty_state(info):
    for given in all_inputs(info):
        params = _params_of_many_shapes(torch.float32)
        opt = info.optim_cls(params, **given.kwargs)
        _run_with_grads(opt, params, 2)
        keeps_state = not (info.name.startswith("SGD") and given.kwargs.get("momentum", 0) == 0)
        assert all(len(opt.state[p]) > 0 for p in params) == keeps_state


# -- param groups ----------------------------------------------------------------------------
@entries
def test_param_groups_lr(info):
    """A group with lr 0 stays put while the other moves (torch's check, per group)."""
    for given in fresh_inputs(info):
        weight, bias, x = linear_problem()
        kwargs = {k: v for k, v in given.kwargs.items() if k != "lr"}
        opt = info.optim_cls(
            [{"params": [weight]}, {"params": [bias], "lr": 0.0}], lr=0.01, **kwargs
        )
        frozen = bias.detach().clone()
        start = weight.detach().clone()
        for _ in range(3):
            opt.step(closure_for(opt, weight, bias, x))
        assert torch.equal(bias.detach(), frozen) and not torch.equal(weight.detach(), start)


@entries
def test_param_groups_weight_decay(info):
    """Two groups with their own weight decay step as two optimizers with one group each
    (for the clipped entries: the level never clips, so the shared global norm changes nothing)."""
    for given in fresh_inputs(info):
        kwargs = {k: v for k, v in given.kwargs.items() if k != "weight_decay"}
        weight, bias, x = linear_problem()
        twin = [p.detach().clone().requires_grad_() for p in (weight, bias)]
        one = info.optim_cls(
            [{"params": [weight], "weight_decay": 0.0}, {"params": [bias], "weight_decay": 0.3}],
            **kwargs,
        )
        two = [
            info.optim_cls([twin[0]], weight_decay=0.0, **copy.deepcopy(kwargs)),
            info.optim_cls([twin[1]], weight_decay=0.3, **copy.deepcopy(kwargs)),
        ]
        for _ in range(4):
            one.step(closure_for(one, weight, bias, x))
            for o in two:
                o.zero_grad()
            (twin[0].mv(x) + twin[1]).pow(2).sum().backward()
            for o in two:
                o.step()
        torch.testing.assert_close([weight, bias], twin)


@entries
def test_optimizer_can_be_printed(info):
    weight, bias, _ = linear_problem()
    text = repr(info.optim_cls([weight, bias]))
    assert text.startswith(info.name) and "Parameter Group 0" in text


# -- state dicts -----------------------------------------------------------------------------
def assert_same_state(a: Any, b: Any, path: str = "state_dict") -> None:
    """Equal nested state: tensors by ``assert_close``, anything else (a rule's name) by ``==``."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, a, b)
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, msg=lambda m: f"{path}: {m}")
    else:
        assert a == b, (path, a, b)


def _primed(info, kwargs, steps: int = 5):
    weight, bias, x = linear_problem()
    opt = info.optim_cls([weight, bias], **copy.deepcopy(kwargs))
    for _ in range(steps):
        opt.step(closure_for(opt, weight, bias, x))
    return opt, weight, bias, x


def _twin(info, kwargs, weight, bias):
    params = [p.detach().clone().requires_grad_() for p in (weight, bias)]
    return info.optim_cls(params, **copy.deepcopy(kwargs)), params


@entries
def test_state_dict_deterministic(info):
    for given in all_inputs(info):
        opt, weight, bias, x = _primed(info, given.kwargs)
        twin, (weight_c, bias_c) = _twin(info, given.kwargs, weight, bias)
        saved = copy.deepcopy(opt.state_dict())
        loaded = copy.deepcopy(opt.state_dict())
        twin.load_state_dict(loaded)
        # checked at once: a loaded state shares its tensors (torch's own load does not copy)
        assert_same_state(loaded, saved)
        for _ in range(5):
            opt.step(closure_for(opt, weight, bias, x))
            twin.step(closure_for(twin, weight_c, bias_c, x))
            torch.testing.assert_close([weight, bias], [weight_c, bias_c])
        assert_same_state(opt.state_dict(), twin.state_dict())
        # a repeated group has the same representation
        twin.param_groups.extend(twin.param_groups)
        assert opt.state_dict()["param_groups"][-1] == twin.state_dict()["param_groups"][-1]


@entries
def test_can_load_older_state_dict(info):
    """States saved before a flag existed (torch's ``not_og_supported_flags``) still load: a
    flag left at its default is dropped, as an older version would not have written it."""
    for given in all_inputs(info):
        opt, weight, bias, x = _primed(info, given.kwargs)
        older = copy.deepcopy(opt.state_dict())
        for group in older["param_groups"]:
            for flag in info.not_og_supported_flags:
                if group.get(flag) in (None, False):
                    group.pop(flag, None)
        twin, (weight_c, bias_c) = _twin(info, given.kwargs, weight, bias)
        twin.load_state_dict(older)
        for _ in range(3):
            opt.step(closure_for(opt, weight, bias, x))
            twin.step(closure_for(twin, weight_c, bias_c, x))
        torch.testing.assert_close([weight, bias], [weight_c, bias_c])


@entries
def test_can_load_from_to_named_state_dict(info):
    """A state saved with named parameters loads into an optimizer without names, and back."""
    for given in fresh_inputs(info):
        weight, bias, x = linear_problem()
        named = info.optim_cls([("weight", weight), ("bias", bias)], **copy.deepcopy(given.kwargs))
        for _ in range(3):
            named.step(closure_for(named, weight, bias, x))
        state = named.state_dict()
        assert state["param_groups"][0]["param_names"] == ["weight", "bias"]
        plain, (weight_c, bias_c) = _twin(info, given.kwargs, weight, bias)
        plain.load_state_dict(copy.deepcopy(state))
        named.load_state_dict(copy.deepcopy(plain.state_dict()))
        named.step(closure_for(named, weight, bias, x))
        plain.step(closure_for(plain, weight_c, bias_c, x))
        torch.testing.assert_close([weight, bias], [weight_c, bias_c])


@entries
def test_save_load_equality_with_weights_only(info):
    for given in all_inputs(info):
        opt, weight, bias, x = _primed(info, given.kwargs)
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        assert_same_state(loaded, opt.state_dict())
        twin, (weight_c, bias_c) = _twin(info, given.kwargs, weight, bias)
        twin.load_state_dict(loaded)
        opt.step(closure_for(opt, weight, bias, x))
        twin.step(closure_for(twin, weight_c, bias_c, x))
        torch.testing.assert_close([weight, bias], [weight_c, bias_c])


@entries
def test_load_nontensor_step(info):
    for given in all_inputs(info):
        opt, weight, bias, x = _primed(info, given.kwargs)
        state = copy.deepcopy(opt.state_dict())
        for param_state in state["state"].values():
            if "step" in param_state:
                param_state["step"] = float(param_state["step"])
        twin, (weight_c, bias_c) = _twin(info, given.kwargs, weight, bias)
        twin.load_state_dict(state)
        for _ in range(2):
            opt.step(closure_for(opt, weight, bias, x))
            twin.step(closure_for(twin, weight_c, bias_c, x))
        torch.testing.assert_close([weight, bias], [weight_c, bias_c])


@entries
def test_deepcopy_copies_all_public_attrs(info):
    for given in all_inputs(info):
        opt, *_ = _primed(info, given.kwargs, steps=2)
        public = {k for k in vars(opt) if not k.startswith("_")}
        assert public == {k for k in vars(copy.deepcopy(opt)) if not k.startswith("_")}


# -- hooks -----------------------------------------------------------------------------------
@entries
def test_step_all_hooks(info):
    """Global and per-optimizer pre/post step hooks run in torch's order, once per step."""
    weight, bias, x = linear_problem()
    opt = info.optim_cls([weight, bias])
    calls: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
    ]
    try:
        for _ in range(2):
            opt.step(closure_for(opt, weight, bias, x))
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre", "post", "global post"] * 2


@entries
def test_state_dict_and_load_hooks(info):
    """state_dict pre/post hooks and load_state_dict pre/post hooks see what torch's do."""
    opt, weight, bias, _ = _primed(info, {}, steps=2)
    seen: list[str] = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "marker": 1})
    state = opt.state_dict()
    assert seen == ["pre"] and state["marker"] == 1

    def halve_lr(o, sd):  # a load pre hook may edit the state it is given
        sd = copy.deepcopy(sd)
        for group in sd["param_groups"]:
            group["lr"] = group["lr"] / 2
        return sd

    twin, _ = _twin(info, {}, weight, bias)
    twin.register_load_state_dict_pre_hook(halve_lr)
    twin.register_load_state_dict_post_hook(lambda o: seen.append("load post"))
    state.pop("marker")
    twin.load_state_dict(state)
    assert seen == ["pre", "load post"]
    assert twin.param_groups[0]["lr"] == opt.param_groups[0]["lr"] / 2


# -- the control: these checks see failures ----------------------------------------------------
class _TwiceWithForeach(ClippedSGD):
    """A deliberately wrong optimizer: its foreach path takes every step twice."""

    def step(self, closure=None, **kwargs):
        loss = super().step(closure, **kwargs)
        if self.foreach:
            super().step(**kwargs)
        return loss


def test_the_harness_catches_a_wrong_update():
    with pytest.raises(AssertionError):
        check_impl_matches_forloop(_entry(_TwiceWithForeach, "SGD"), "foreach", torch.float64)


# -- what torch itself fails on CPU ------------------------------------------------------------
@entries
@pytest.mark.xfail(
    strict=True,
    reason="torch's fused CPU kernels read a gradient whose strides differ from its parameter's "
    "(a contiguous gradient of a transposed parameter) in the parameter's order; autograd never "
    "makes such a gradient, and the clipped optimizers hand the same kernels what they get",
)
def test_fused_matches_forloop_with_gradient_strides_unlike_the_parameter(info):
    runs = []
    for flags in ({"foreach": False}, {"fused": True}):
        torch.manual_seed(0)
        param = Parameter(torch.randn(6, 4).t())
        opt = info.optim_cls([param], lr=0.1, **flags)
        for _ in range(2):
            param.grad = torch.randn(4, 6)  # contiguous, unlike the parameter
            opt.step()
        runs.append(param.detach().clone())
    torch.testing.assert_close(*runs)
