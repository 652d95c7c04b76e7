"""Regression tests of the defects found by torch's generic optimizer tests and by bad input.

Each test compares with torch's own optimizer in the same situation (or names the clear error
expected where torch has no counterpart); every one failed before its fix.
"""

from __future__ import annotations

import copy
import io
import pickle
import re
import warnings

import pytest
import torch

from clip_core import ClippedAdamW, ClippedSGD, ClippedSSTM

pytestmark = pytest.mark.usefixtures("single_thread")

PAIRS = [
    (
        lambda ps, **kw: ClippedSGD(ps, lr=0.1, momentum=0.9, **kw),
        torch.optim.SGD,
        {"momentum": 0.9},
    ),
    (lambda ps, **kw: ClippedAdamW(ps, lr=0.1, **kw), torch.optim.AdamW, {}),
]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


def backward(m: torch.nn.Module, t: int) -> None:
    g = torch.Generator().manual_seed(t)
    m(torch.randn(8, 4, generator=g)).square().mean().backward()


def run(m: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 4) -> list[torch.Tensor]:
    for t in range(steps):
        opt.zero_grad()
        backward(m, t)
        opt.step()
    return [p.detach().clone() for p in m.parameters()]


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)


# -- 1: a generator in a param group ---------------------------------------------------------
@pytest.mark.parametrize("cls", [ClippedSGD, ClippedAdamW, ClippedSSTM])
def test_generator_in_a_param_group_keeps_its_parameters(cls):
    m = model()
    opt = cls([{"params": m[0].parameters()}], lr=0.1)
    opt.add_param_group({"params": (p for p in m[2].parameters())})
    ref = torch.optim.SGD([{"params": m[0].parameters()}], lr=0.1)
    assert [len(g["params"]) for g in opt.param_groups] == [len(ref.param_groups[0]["params"]), 2]
    before = [p.detach().clone() for p in m.parameters()]
    after = run(m, opt, 1)
    assert all(not torch.equal(x, y) for x, y in zip(before, after))


# -- 2: deepcopy and pickle ------------------------------------------------------------------
def random_grads(params: list[torch.Tensor], t: int) -> None:
    g = torch.Generator().manual_seed(t)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


@pytest.mark.parametrize("copier", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
@pytest.mark.parametrize("make", [ClippedSGD, ClippedAdamW, ClippedSSTM])
def test_a_copy_steps_exactly_as_the_original(make, copier):
    """A copy (which holds copies of the parameters) goes on exactly as the original, and has
    the original's public attributes (torch's deepcopy test)."""
    torch.manual_seed(0)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = make(params, lr=0.05, clipping_type="linear_stoch_auto")
    for t in range(3):
        random_grads(params, t)
        opt.step()
    twin = copier(opt)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert {k for k in vars(opt) if not k.startswith("_")} == {
        k for k in vars(twin) if not k.startswith("_")
    }
    for t in range(3, 7):
        random_grads(params, t)
        random_grads(twin_params, t)
        opt.step()
        twin.step()
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q)


# -- 3: complex parameters -------------------------------------------------------------------
@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
@pytest.mark.parametrize("clipping", [{"clipping_type": "none"}, {"clipping_level": 0.5}])
def test_complex_parameters_step_as_torch_steps_their_real_view(make, ref, kw, clipping):
    torch.manual_seed(1)
    z = torch.randn(5, 5, dtype=torch.complex64, requires_grad=True)
    real = torch.view_as_real(z).detach().clone().requires_grad_()
    ours, theirs = make([z], **clipping), ref([real], lr=0.1, **kw)
    for _ in range(3):
        z.grad = torch.randn_like(z)
        real.grad = torch.view_as_real(z.grad).clone()
        if "clipping_level" in clipping:  # the reference: clip_grad_norm_ on the real view
            torch.nn.utils.clip_grad_norm_([real], 0.5)
        norm = torch.linalg.vector_norm(z.grad)  # torch's norm of a complex tensor
        ours.step()
        theirs.step()
        torch.testing.assert_close(ours.last_clip_stats.grad_norm, norm)
    torch.testing.assert_close(torch.view_as_real(z.detach()), real.detach())


def test_complex_parameters_in_sstm_step_as_their_real_view():
    torch.manual_seed(1)
    z = torch.randn(4, dtype=torch.complex128, requires_grad=True)
    real = torch.view_as_real(z).detach().clone().requires_grad_()
    ours, ref = (ClippedSSTM([p], lr=0.05, clipping_level=0.1) for p in (z, real))
    for _ in range(4):
        z.grad = torch.randn_like(z)
        real.grad = torch.view_as_real(z.grad).clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(torch.view_as_real(z.detach()), real.detach(), rtol=1e-12, atol=0)


# -- 4: meta-device parameters ---------------------------------------------------------------
@pytest.fixture
def swap_on_conversion():
    """``to_empty`` keeps the parameter objects (what FSDP2's DTensors do) only with swapping."""
    before = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    yield
    torch.__future__.set_swap_module_params_on_conversion(before)


@pytest.mark.usefixtures("swap_on_conversion")
@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
@pytest.mark.parametrize("fused", [None, True])
def test_meta_parameters_construct_and_step_after_to_empty(make, ref, kw, fused):
    def deferred(cls_make):
        with torch.device("meta"):
            m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        opt = cls_make(m.parameters())
        m.to_empty(device="cpu")
        with torch.no_grad():
            for p, q in zip(m.parameters(), model().parameters()):
                p.copy_(q)
        return m, opt

    m, opt = deferred(lambda ps: make(ps, clipping_type="none", fused=fused))
    m_ref, opt_ref = deferred(lambda ps: ref(ps, lr=0.1, fused=fused, **kw))
    assert_same(run(m, opt), run(m_ref, opt_ref))
    assert opt.fused is True and opt.clipper.device.type == "cpu"


# -- 5: state-dict round trips, float steps, a [1]-shaped grad_scale --------------------------
@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
def test_state_dict_round_trip_keeps_torchs_group_keys(make, ref, kw):
    m = model()
    opt = make(m.parameters())
    run(m, opt, 2)
    twin = make(model().parameters())
    twin.load_state_dict(opt.state_dict())
    groups = [g for o in (opt, twin) for g in o.state_dict()["param_groups"]]
    torch_keys = set(ref(model().parameters(), lr=0.1).state_dict()["param_groups"][0])
    torch_keys.discard("decoupled_weight_decay")  # AdamW's marker of its Adam base class
    for group in groups:
        assert torch_keys <= set(group)
    assert groups[0] == groups[1]


def test_a_float_step_in_a_loaded_adamw_state_steps_as_torch():
    results = []
    for make in (
        lambda ps: ClippedAdamW(ps, lr=0.1, clipping_type="none"),
        lambda ps: torch.optim.AdamW(ps, lr=0.1, fused=True),
    ):
        m = model()
        opt = make(m.parameters())
        run(m, opt, 2)
        state = opt.state_dict()
        for s in state["state"].values():
            s["step"] = float(s["step"])
        opt.load_state_dict(state)
        results.append(run(m, opt, 2))
    assert_same(*results)


@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
def test_grad_scale_of_shape_one_is_taken_as_torch_takes_it(make, ref, kw):
    results = []
    for shape, opt_make in (
        ((1,), lambda ps: make(ps, clipping_type="none")),
        ((), lambda ps: ref(ps, lr=0.1, fused=True, **kw)),  # GradScaler's own 0-d scale
    ):
        m = model()
        opt = opt_make(m.parameters())
        for t in range(3):
            opt.zero_grad()
            backward(m, t)
            for p in m.parameters():
                p.grad.mul_(8.0)
            opt.grad_scale = torch.full(shape, 8.0)
            opt.found_inf = torch.zeros(shape)
            opt.step()
        results.append([p.detach().clone() for p in m.parameters()])
    assert_same(*results)


# -- 6: state dicts from elsewhere -----------------------------------------------------------
def trained_state(make, m=None):
    params = list((model() if m is None else m).parameters())
    opt = make(params)
    for t in range(2):
        random_grads(params, t)
        opt.step()
    return opt.state_dict()


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            lambda ps: ClippedSGD(ps, lr=0.1, momentum=0.9),
            lambda ps: ClippedAdamW(ps),
            "param group 0 holds ['dampening', 'momentum', 'nesterov'], hyper-parameters "
            "ClippedAdamW does not have",
        ),
        (
            lambda ps: ClippedAdamW(ps),
            lambda ps: ClippedSSTM(ps),
            "['extra']: missing ['A', 'k', 'restarts', 'stage_len']",
        ),
        (
            lambda ps: ClippedAdamW(ps),
            lambda ps: ClippedSGD(ps, lr=0.1),
            "holds ['amsgrad', 'betas', 'capturable', 'eps']",
        ),
        (lambda ps: ClippedSSTM(ps), lambda ps: ClippedSGD(ps, lr=0.1), "holds ['L', 'nu']"),
    ],
)
def test_a_state_of_another_optimizer_is_refused_at_load(source, target, message):
    state = trained_state(source)
    opt = target(model().parameters())
    with pytest.raises(ValueError, match=re.escape(message)):
        opt.load_state_dict(state)


def test_a_per_parameter_state_of_another_rule_is_refused():
    """Even with the group keys made to match, the per-parameter state gives it away."""
    state = trained_state(lambda ps: ClippedSGD(ps, lr=0.1, momentum=0.9))
    for group in state["param_groups"]:
        for key in ("momentum", "dampening", "nesterov"):
            del group[key]
    with pytest.raises(
        ValueError, match=re.escape("holds ['momentum_buffer']; ClippedAdamW keeps")
    ):
        ClippedAdamW(model().parameters()).load_state_dict(state)


@pytest.mark.parametrize("missing", ["seed", "generator"])
def test_a_mangled_clip_state_is_refused_naming_the_key(missing):
    state = trained_state(lambda ps: ClippedSGD(ps, lr=0.1))
    del state["clip_state"]["clipper"][missing]
    with pytest.raises(ValueError, match=re.escape(f"['clipper']: missing ['{missing}']")):
        ClippedSGD(model().parameters(), lr=0.1).load_state_dict(state)


@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
def test_a_state_of_another_model_is_refused_as_torch_refuses_it(make, ref, kw):
    """torch's unfused AdamW raises a size error at the step; clip_core (fused by default, whose
    CPU kernel does not check) refuses the state at load, naming the shapes."""
    other = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    ref_opt = ref(model().parameters(), lr=0.1, foreach=False, **kw)
    ref_opt.load_state_dict(trained_state(lambda ps: ref(ps, lr=0.1, **kw), other))
    with pytest.raises(RuntimeError, match="size"):
        m = next(iter(ref_opt.param_groups))["params"]
        for p in m:
            p.grad = torch.ones_like(p)
        ref_opt.step()
    opt = make(model().parameters())
    with pytest.raises(ValueError, match=re.escape("has shape [3, 5], the parameter [3, 4]")):
        opt.load_state_dict(trained_state(make, other))


# -- 7: SSTM with lr = 0 ----------------------------------------------------------------------
def test_sstm_refuses_lr_zero_which_makes_its_first_step_nan():
    with pytest.raises(ValueError, match=re.escape("Invalid lr: 0; expected a value > 0")):
        ClippedSSTM(model().parameters(), lr=0, L=1)
    opt = ClippedSSTM(model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match=re.escape("Invalid lr: 0.0; expected a value > 0")):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": 0.0})


# -- 8: torch's wording where the condition is torch's ----------------------------------------
@pytest.mark.parametrize("make", [ClippedSGD, ClippedAdamW])
def test_a_tensor_lr_of_two_elements_says_so(make):
    with pytest.raises(ValueError, match=re.escape("Tensor lr must be 1-element")):
        make(model().parameters(), lr=torch.tensor([0.001, 0.001]))
    with pytest.raises(ValueError, match=re.escape("Tensor lr must be 1-element")):
        torch.optim.SGD(model().parameters(), lr=torch.tensor([0.001, 0.001]))


# -- 10: the same gradient at every step warns of nothing ------------------------------------
def test_a_repeated_gradient_raises_no_warning():
    m = model()
    opt = ClippedSGD(m.parameters(), lr=0.0, clipping_level=100.0)
    backward(m, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(12):
            opt.step()  # lr 0: the same gradient and the same norm every time


# -- 11: telemetry=False ---------------------------------------------------------------------
@pytest.mark.parametrize(("make", "ref", "kw"), PAIRS)
def test_telemetry_off_steps_as_torch_and_measures_nothing(make, ref, kw, monkeypatch):
    m, m_ref = model(), model()
    opt = make(m.parameters(), clipping_type="none", telemetry=False)
    measured = []
    monkeypatch.setattr(opt.clipper, "measure", lambda grads: measured.append(1))
    assert_same(run(m, opt), run(m_ref, ref(m_ref.parameters(), lr=0.1, fused=True, **kw)))
    assert opt.last_clip_stats is None and not measured and int(opt.attempted_steps) == 4


def test_telemetry_off_still_skips_what_grad_scaler_flags():
    m = model()
    opt = ClippedSGD(m.parameters(), lr=0.1, clipping_type="none", telemetry=False)
    backward(m, 0)
    before = [p.detach().clone() for p in m.parameters()]
    opt.step(found_inf=torch.ones(()))
    assert_same([p.detach() for p in m.parameters()], before)
    assert int(opt.skipped_steps) == 1


def test_telemetry_must_be_a_flag():
    with pytest.raises(
        ValueError, match=re.escape("Invalid telemetry: 'no'; expected True or False")
    ):
        ClippedSGD(model().parameters(), telemetry="no")


def test_saved_state_loads_with_weights_only():
    m = model()
    opt = ClippedAdamW(m.parameters())
    run(m, opt, 2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    twin = ClippedAdamW(model().parameters())
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    assert twin.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
