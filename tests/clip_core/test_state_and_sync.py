"""Persistence, non-finite gradients and the no-host-sync guarantee of step().

* state_dict round trips through torch.save/torch.load continue bit-identically, for every
  clipping type and step rule (stochastic decisions and auto history included);
* a NaN/inf gradient is skipped on the device (nothing changes but ``skipped_steps``), or raises
  ``FloatingPointError`` naming the step with ``nonfinite="raise"``;
* ``step()`` makes no host-device synchronisation, checked with a TorchFunctionMode that records
  every call that forces one (and shown to catch deliberate ones).
"""

from __future__ import annotations

import contextlib
import copy
import io
import re

import pytest
import torch

import clip_core.history
from clip_core import CLIPPING_TYPES, ClippedAdamW, ClippedSGD, ClippedSSTM
from clip_core.clipping import ClipResult
from tests.sync_helpers import SyncRecorder

pytestmark = pytest.mark.usefixtures("single_thread")

STOCHASTIC = {t for t in CLIPPING_TYPES if "stoch" in t}
AUTO = {t for t in CLIPPING_TYPES if t.endswith("auto")}
# λ around the typical gradient norm of the model below, so clipping bites in some steps only
# (SSTM clips at λ/α_{k+1} with α_{k+1} = (k+1)·lr/(2L) ≈ 0.002·(k+1): a smaller λ there)
CLIP_ARGS = {"clipping_level": 1.0, "beta": 0.3, "p_autoclip": 0.3}
SSTM_CLIP_ARGS = {**CLIP_ARGS, "clipping_level": 0.005}
RULES = {
    "sgd": lambda groups, **kw: ClippedSGD(
        groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01, **CLIP_ARGS, **kw
    ),
    "sgd_unfused": lambda groups, **kw: ClippedSGD(
        groups, lr=0.05, momentum=0.9, fused=False, **CLIP_ARGS, **kw
    ),
    "adamw": lambda groups, **kw: ClippedAdamW(
        groups, lr=0.01, weight_decay=0.1, amsgrad=True, **CLIP_ARGS, **kw
    ),
    "sstm": lambda groups, **kw: ClippedSSTM(
        groups, lr=0.02, L=5.0, a_k_ratio_upper_bound=0.9, restart_every=3, **SSTM_CLIP_ARGS, **kw
    ),
}


def make_model(init_seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(init_seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))


def groups_of(model: torch.nn.Module) -> list[dict]:
    return [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters())}]


def compute_grads(model: torch.nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(500 + step)
    x = torch.randn(8, 4, generator=g)
    y = torch.randn(8, 2, generator=g) * (1 + 3 * (step % 3))  # varied gradient norms
    model.zero_grad()
    ((model(x) - y) ** 2).mean().backward()


def run(model, opt, steps: range, fractions: list | None = None) -> list[list[torch.Tensor]]:
    out = []
    for t in steps:
        compute_grads(model, t)
        opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
        if fractions is not None:
            fractions.append(float(opt.last_clip_stats.clip_fraction))
    return out


def runs_equal(a, b) -> bool:
    return all(torch.equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


# -- state_dict round trip --------------------------------------------------------------------
def resume(rule: str, clipping_type: str, k: int, m: int, corrupt=None, paths=("auto", "auto")):
    """Uninterrupted run vs. a run rebuilt from a checkpoint taken after k steps.

    ``paths``: the ``history_path`` of the saving and of the loading optimizer.
    """
    model = make_model()
    opt = RULES[rule](groups_of(model), clipping_type=clipping_type, seed=1, history_path=paths[0])
    run(model, opt, range(k))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    opt.fractions = []
    straight = run(model, opt, range(k, k + m), opt.fractions)

    buffer.seek(0)
    saved = torch.load(buffer)
    model2 = make_model(init_seed=123)  # different initial weights, overwritten by the checkpoint
    opt2 = RULES[rule](
        groups_of(model2), clipping_type=clipping_type, seed=2, history_path=paths[1]
    )
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    if corrupt is not None:
        corrupt(opt2)
    resumed = run(model2, opt2, range(k, k + m))
    return straight, resumed, opt, opt2


@pytest.mark.parametrize("clipping_type", CLIPPING_TYPES)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_state_dict_round_trip_is_bit_identical(rule, clipping_type):
    straight, resumed, opt, opt2 = resume(rule, clipping_type, k=5, m=8)
    assert runs_equal(straight, resumed)
    # clipping bit in some of the resumed steps but not all, so its state mattered
    clipped = sum(f > 0 for f in opt.fractions)
    assert clipped == 0 if clipping_type == "none" else 0 < clipped < len(opt.fractions)
    assert int(opt2.skipped_steps) == int(opt.skipped_steps) == 0
    assert opt2.attempted_steps == opt.attempted_steps == 13
    if clipping_type != "none":
        assert opt.last_clip_stats is not None
        assert torch.equal(opt.last_clip_stats.threshold, opt2.last_clip_stats.threshold)
    if clipping_type in AUTO:
        assert torch.equal(opt.norm_history(), opt2.norm_history())


@pytest.mark.parametrize("paths", [("host", "device"), ("device", "host")])
@pytest.mark.parametrize("clipping_type", ["auto", "linear_stoch_auto"])
def test_state_dict_moves_between_history_paths(clipping_type, paths):
    """A state saved on one history path goes on bit-identically on the other (a checkpoint
    moving between a CPU and a CUDA machine): the path is the loading optimizer's choice."""
    straight, resumed, opt, opt2 = resume("sgd", clipping_type, k=5, m=8, paths=paths)
    assert runs_equal(straight, resumed)
    assert (opt.clipper.history._host, opt2.clipper.history._host) == (
        paths[0] == "host",
        paths[1] == "host",
    )
    assert torch.equal(opt.norm_history(), opt2.norm_history())
    assert 0 < sum(f > 0 for f in opt.fractions) < len(opt.fractions)


@pytest.mark.parametrize("rule", ["sgd", "sstm"])
def test_round_trip_depends_on_saved_generator_and_history(rule):
    """Negative controls: the round trip above would fail if the generator state or the
    auto history were not restored (so it really checks them)."""

    def reseed(opt):
        opt.clipper.generator.manual_seed(999)

    def forget(opt):
        opt.clipper.history = None

    straight, resumed, *_ = resume(rule, "linear_stoch_norm", k=5, m=20, corrupt=reseed)
    assert not runs_equal(straight, resumed)
    straight, resumed, *_ = resume(rule, "auto", k=5, m=8, corrupt=forget)
    assert not runs_equal(straight, resumed)
    # the saved state holds both
    model = make_model()
    opt = RULES[rule](groups_of(model), clipping_type="linear_stoch_auto", seed=4)
    run(model, opt, range(3))
    clip_state = opt.state_dict()["clip_state"]["clipper"]
    assert torch.equal(clip_state["generator"], opt.clipper.generator.get_state())
    assert clip_state["history"]["count"] == 3


def test_load_state_dict_rejects_other_rule_and_foreign_state():
    model = make_model()
    opt = ClippedSGD(model.parameters(), clipping_type="auto")
    other = ClippedSGD(make_model().parameters(), clipping_type="norm")
    with pytest.raises(ValueError, match="saved with clipping rule"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="no 'clip_state'"):
        other.load_state_dict(torch.optim.SGD(make_model().parameters(), lr=0.1).state_dict())


# -- non-finite gradients ------------------------------------------------------------------------
def full_state(opt) -> dict:
    """Everything a skipped step must leave untouched (deep copies of the tensors)."""
    state = {
        "per_param": copy.deepcopy({i: dict(s) for i, s in enumerate(opt.state.values())}),
        "skipped": opt.skipped_steps.clone(),
    }
    history = opt.clipper.history
    if history is not None:
        state["history"] = (history.sorted.clone(), history.raw.clone(), history.count.clone())
    if isinstance(opt, ClippedSSTM):
        state["sstm"] = (
            opt._k.clone(),
            opt._A.clone(),
            opt._stage_len.clone(),
            opt._restarts.clone(),
        )
    return state


def states_equal(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        if isinstance(a[key], dict):
            if not states_equal(a[key], b[key]):
                return False
        elif isinstance(a[key], tuple | list):
            if not all(torch.equal(x, y) for x, y in zip(a[key], b[key])):
                return False
        elif not torch.equal(a[key], b[key]):
            return False
    return True


@pytest.mark.parametrize("clipping_type", CLIPPING_TYPES)
@pytest.mark.parametrize("rule", sorted(RULES))
def test_nonfinite_gradient_is_skipped(rule, clipping_type):
    # NaN for the stochastic and auto rules (the comparisons with a NaN norm are all False),
    # +inf for the others (an infinite norm compares above any threshold and gives α = 0)
    bad = float("nan") if clipping_type in STOCHASTIC | AUTO else float("inf")
    model = make_model()
    opt = RULES[rule](groups_of(model), clipping_type=clipping_type, seed=3)
    run(model, opt, range(4))
    params = [p.detach().clone() for p in model.parameters()]
    before = full_state(opt)
    assert int(opt.skipped_steps) == 0

    compute_grads(model, 4)
    model[2].weight.grad[0, 1] = bad
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    after = full_state(opt)
    assert int(after.pop("skipped")) == 1
    before.pop("skipped")
    assert states_equal(before, after)
    assert float(opt.last_clip_stats.skipped) == 1.0
    assert float(opt.last_clip_stats.clip_fraction) == 0.0

    # the next finite steps proceed normally: as if the bad step had never been offered
    # (stochastic rules drew their random number on the skipped step, so only finiteness there)
    cont = run(model, opt, range(5, 8))
    assert int(opt.skipped_steps) == 1
    assert all(torch.isfinite(p).all() for p in cont[-1])
    if clipping_type not in STOCHASTIC:
        model_ref = make_model()
        opt_ref = RULES[rule](groups_of(model_ref), clipping_type=clipping_type, seed=3)
        run(model_ref, opt_ref, range(4))
        assert runs_equal(cont, run(model_ref, opt_ref, range(5, 8)))


@pytest.mark.parametrize("clipping_type", ["norm", "layer_wise", "coord_wise"])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_nonfinite_raise_names_the_step(rule, clipping_type):
    model = make_model()
    opt = RULES[rule](groups_of(model), clipping_type=clipping_type, nonfinite="raise")
    run(model, opt, range(3))
    params = [p.detach().clone() for p in model.parameters()]
    before = full_state(opt)
    compute_grads(model, 3)
    model[0].bias.grad[2] = float("nan")
    model[0].weight.grad[0, 0] = float("inf")
    grads = [p.grad.clone() for p in model.parameters()]
    name = type(opt).__name__
    with pytest.raises(FloatingPointError, match=re.escape(f"at step 3 of {name}")):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    # raised before any clipping: p.grad still shows the raw gradient (the inf was not clamped)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)
    assert states_equal(before, full_state(opt))
    run(model, opt, range(4, 6))  # finite steps still work afterwards
    assert opt.attempted_steps == 5


# -- no host-device synchronisation in step() --------------------------------------------------
SYNC_RULES = {
    "sgd": RULES["sgd"],
    "sgd_plain": lambda groups, **kw: ClippedSGD(groups, lr=0.05, **CLIP_ARGS, **kw),
    "adamw": RULES["adamw"],
    "adamw_plain": lambda groups, **kw: ClippedAdamW(groups, lr=0.01, **CLIP_ARGS, **kw),
    "sstm": RULES["sstm"],
}


def recorded_syncs(opt, model, steps=range(8), bad_steps=(3,)) -> list[str]:
    recorder = SyncRecorder()
    for t in steps:
        compute_grads(model, t)
        if t in bad_steps:
            model[0].weight.grad[1, 1] = float("nan")
        with recorder:
            opt.step()
    return recorder.syncs


@pytest.mark.parametrize(
    ("clipping_type", "window"),
    [(t, None) for t in CLIPPING_TYPES] + [(t, 3) for t in sorted(AUTO)],
)
@pytest.mark.parametrize("rule", sorted(SYNC_RULES))
def test_step_makes_no_host_sync(rule, clipping_type, window, monkeypatch):
    # a tiny initial history buffer, so the growth path runs inside the recorded steps too
    monkeypatch.setattr(clip_core.history, "_INITIAL_CAPACITY", 4)
    model = make_model()
    # the auto history's device path, which CUDA runs (CPU tensors default to the host path,
    # which reads values by design: on CPU there is no device to wait for)
    opt = SYNC_RULES[rule](
        groups_of(model), clipping_type=clipping_type, auto_window=window, history_path="device"
    )
    assert opt.nonfinite == "skip" and (opt.fused or rule == "sstm")
    per_step = [recorded_syncs(opt, model, steps=[t]) for t in range(8)]
    assert per_step == [[]] * 8
    assert int(opt.skipped_steps) == 1  # the recorded steps included a skipped one
    if clipping_type in AUTO and window is None:
        assert opt.clipper.history.capacity > 4


class ItemInStep(ClippedSGD):
    def _update(self, groups, result: ClipResult) -> None:
        result.stats.grad_norm.item()
        super()._update(groups, result)


class BoolInStep(ClippedAdamW):
    def _update(self, groups, result: ClipResult) -> None:
        if result.found_inf:
            pass
        super()._update(groups, result)


class MaskInStep(ClippedSSTM):
    def _update(self, groups, result: ClipResult) -> None:
        g = groups[0][2][0]
        _ = g[g > 0]
        super()._update(groups, result)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda ps: ItemInStep(ps, clipping_type="auto"), "item"),
        (lambda ps: BoolInStep(ps, clipping_type="norm"), "__bool__"),
        (lambda ps: MaskInStep(ps, clipping_type="layer_wise"), "__getitem__[bool mask]"),
        # the documented syncing modes of the real optimizers are caught as well
        (lambda ps: ClippedSGD(ps, clipping_type="norm", nonfinite="raise"), "__bool__"),
        (lambda ps: ClippedSGD(ps, clipping_type="norm", fused=False), "__bool__"),
        (lambda ps: ClippedAdamW(ps, clipping_type="linear_stoch_auto", fused=False), "__bool__"),
    ],
)
def test_sync_recorder_catches_deliberate_syncs(make, expected):
    model = make_model()
    opt = make(groups_of(model))
    syncs = recorded_syncs(opt, model, steps=range(2), bad_steps=())
    assert expected in syncs


def test_sync_recorder_catches_device_to_host_copies():
    recorder = SyncRecorder()
    on_device = torch.empty(3, device="meta")  # stands in for an accelerator tensor
    with recorder:
        for attempt in (
            lambda: on_device.to("cpu"),
            lambda: on_device.to(device=torch.device("cpu")),
            lambda: torch.zeros(3).copy_(on_device),
            lambda: on_device.cpu(),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                attempt()
        torch.tensor(1.5, device="meta")  # host data copied to a device
        torch.zeros(3).to("cpu")  # a no-op on the host is not a sync
        torch.full((), 1.5, device="meta")  # filled on the device: no copy
    assert recorder.syncs == [
        "to(cpu) from meta",
        "to(cpu) from meta",
        "copy_ to cpu from meta",
        "cpu",
        "tensor(host data, device=meta)",
    ]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
@pytest.mark.parametrize("clipping_type", CLIPPING_TYPES)
@pytest.mark.parametrize("rule", sorted(SYNC_RULES))
def test_step_makes_no_cuda_sync(rule, clipping_type):  # pragma: no cover - CPU-only CI
    model = make_model().cuda()
    opt = SYNC_RULES[rule](groups_of(model), clipping_type=clipping_type)
    x = torch.randn(8, 4, device="cuda")
    for t in range(6):
        model.zero_grad()
        model(x).square().mean().backward()
        if t == 3:
            model[0].weight.grad[0, 0] = float("nan")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
