"""The ``optimizer`` × ``step_rule`` composition: one learning-rate key for every method.

Baselines are torch's own optimizers and the peers wrap them; both must read the step rule's keys,
and contradictory combinations must be one clear error.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra import compose, initialize_config_dir
from timm.utils.agc import adaptive_clip_grad

from clip_core import ClippedAdamW, ClippedSGD
from tests.suite_helpers import ROOT, run_train, summaries
from torch_clip.suite.optim import build_optimizer, build_scheduler, describe_optimizer
from torch_clip.suite.peers import PEERS, PeerClipped


def _cfg(*overrides: str):
    import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["task=toy", *overrides])


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(model, opt, steps=6, scale=30.0):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=gen)
        y = scale * torch.randn(16, 1, generator=gen)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize(
    ("overrides", "cls", "expected"),
    [
        (("optimizer=torch_sgd", "step_rule.lr=0.05"), torch.optim.SGD, {"lr": 0.05}),
        (("optimizer=norm", "step_rule.lr=0.05"), ClippedSGD, {"lr": 0.05}),
        (("optimizer=torch_adamw", "step_rule.lr=0.002"), torch.optim.AdamW, {"lr": 0.002}),
        (("optimizer=auto", "step_rule=adamw", "step_rule.lr=0.002"), ClippedAdamW, {"lr": 0.002}),
        (("optimizer=torch_sgd", "step_rule.momentum=0.5"), torch.optim.SGD, {"momentum": 0.5}),
    ],
)
def test_one_step_rule_key_sets_baselines_and_clipped_methods(overrides, cls, expected):
    opt = build_optimizer(_cfg(*overrides), _model().parameters(), seed=0)
    assert type(opt) is cls
    for key, value in expected.items():
        assert opt.param_groups[0][key] == value


@pytest.mark.parametrize("peer", [f"peer_{name}" for name in PEERS])
def test_peers_drive_the_step_rules_torch_optimizer(peer):
    opt = build_optimizer(_cfg(f"optimizer={peer}", "step_rule.lr=0.07"), _model().parameters(), 0)
    assert isinstance(opt, PeerClipped) and type(opt.optimizer) is torch.optim.SGD
    assert opt.param_groups is opt.optimizer.param_groups and opt.param_groups[0]["lr"] == 0.07
    cfg = _cfg(f"optimizer={peer}", "scheduler=cosine")
    sched = build_scheduler(cfg, build_optimizer(cfg, _model().parameters(), 0))
    assert sched is not None


def test_linear_warmup_schedule_ramps_up_then_decays_to_zero_at_the_budget():
    """scheduler=linear_warmup: lr * s / w for the first w steps, then lr * (T - s) / (T - w)."""
    lr, warm, total = 0.1, 4, 12
    cfg = _cfg(
        "scheduler=linear_warmup",
        f"scheduler.num_warmup_steps={warm}",
        f"trainer.max_steps={total}",
        f"step_rule.lr={lr}",
    )
    opt = build_optimizer(cfg, _model().parameters(), 0)
    sched = build_scheduler(cfg, opt)
    assert opt.param_groups[0]["lr"] == 0.0  # the warm-up's first step
    assert f"lr={lr:g}," in describe_optimizer(opt)  # the record names the configured lr
    seen = []
    for _ in range(total + 1):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [lr * s / warm if s < warm else lr * (total - s) / (total - warm) for s in range(13)]
    assert seen == pytest.approx(expected)


def test_torch_baseline_equals_the_unclipped_clip_core_step():
    """optimizer=torch_sgd and optimizer=none build different classes that take the same steps."""
    models = [_model(), _model()]
    for model, name in zip(models, ("torch_sgd", "none")):
        opt = build_optimizer(_cfg(f"optimizer={name}", "step_rule.lr=0.01"), model.parameters(), 0)
        _train(model, opt)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)


def test_peer_agc_equals_timm_clipping_then_torch_sgd():
    model, reference = _model(), _model()
    opt = build_optimizer(_cfg("optimizer=peer_agc", "step_rule.lr=0.01"), model.parameters(), 0)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9)
    clip_kwargs = {"clip_factor": 0.01, "eps": 1e-3}  # conf/optimizer/peer_agc.yaml
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x, y = torch.randn(16, 4, generator=gen), 30 * torch.randn(16, 1, generator=gen)
        for m, o in ((model, opt), (reference, ref_opt)):
            o.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(m(x), y).backward()
        before = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in reference.parameters()))
        adaptive_clip_grad(list(reference.parameters()), **clip_kwargs)
        after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in reference.parameters()))
        ref_opt.step()
        opt.step()
        stats = opt.last_clip_stats
        torch.testing.assert_close(stats.grad_norm.double(), before, rtol=1e-5, atol=0)
        torch.testing.assert_close(
            stats.clip_fraction.double(), 1 - after / before, rtol=1e-4, atol=1e-6
        )
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("peer", ["peer_autoclip", "peer_zclip"])
def test_peer_state_survives_a_state_dict_round_trip(peer):
    """A resumed peer run continues with the peer's history, as an uninterrupted one does."""
    cfg = _cfg(
        f"optimizer={peer}",
        "step_rule.lr=0.001",
        "optimizer.peer_args.warmup_steps=2"
        if peer == "peer_zclip"
        else "optimizer.peer_args.quantile=0.5",
    )
    straight, resumed = _model(), _model()
    opt = build_optimizer(cfg, straight.parameters(), 0)
    _train(straight, opt, steps=8)
    first = build_optimizer(cfg, resumed.parameters(), 0)
    _train(resumed, first, steps=4)
    saved = copy.deepcopy(first.state_dict())
    second = build_optimizer(cfg, resumed.parameters(), 0)
    second.load_state_dict(saved)
    gen_state = torch.Generator().manual_seed(1)
    # replay the data stream: _train reseeds its generator, so run the 8-step stream's tail
    for _ in range(4):
        torch.randn(16, 4, generator=gen_state), torch.randn(16, 1, generator=gen_state)
    for _ in range(4):
        x, y = torch.randn(16, 4, generator=gen_state), 30 * torch.randn(16, 1, generator=gen_state)
        second.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(resumed(x), y).backward()
        second.step()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b)


def test_descriptions_come_from_the_built_optimizer():
    text = describe_optimizer(
        build_optimizer(_cfg("optimizer=quadratic_stoch_auto"), _model().parameters(), 0)
    )
    assert (
        text.startswith("ClippedSGD [global: PercentileThreshold(p=0.75")
        and "Stochastic(beta=0.85, power=2)" in text
    )
    text = describe_optimizer(
        build_optimizer(_cfg("optimizer=peer_zclip"), _model().parameters(), 0)
    )
    assert text.startswith("SGD + zclip (lr=0.01")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("optimizer=torch_sgd", "step_rule=adamw"),
            "optimizer=torch_sgd is torch's sgd and needs step_rule=sgd, got step_rule=adamw",
        ),
        (("optimizer=torch_adamw", "step_rule=sgd"), "needs step_rule=adamw, got step_rule=sgd"),
        (
            ("optimizer=peer_zclip", "step_rule=sstm"),
            "step_rule=sstm has none; expected step_rule=sgd or step_rule=adamw",
        ),
        (
            ("optimizer=norm", "+step_rule.clipping_level=2"),
            "optimizer and step_rule both set ['clipping_level']",
        ),
    ],
)
def test_contradictory_combinations_are_one_clear_error(overrides, message):
    with pytest.raises(ValueError) as err:
        build_optimizer(_cfg(*overrides), _model().parameters(), 0)
    assert message in str(err.value)


@pytest.mark.slow
def test_one_multirun_sweeps_baseline_and_clipped_method_on_one_lr_grid(tmp_path):
    proc = run_train(
        tmp_path,
        "-m",
        "task=toy",
        "optimizer=torch_sgd,norm",
        "step_rule.lr=0.03,0.1",
        "trainer.max_steps=10",
        "trainer.eval_every=10",
    )
    assert proc.returncode == 0, proc.stderr
    runs = summaries(tmp_path / "default" / "toy")
    seen = {
        (s["optimizer"], s["optimizer_description"].split("lr=")[1].split(",")[0])
        for s in runs.values()
    }
    assert seen == {("torch_sgd", "0.03"), ("torch_sgd", "0.1"), ("norm", "0.03"), ("norm", "0.1")}


def test_default_run_is_the_cola_recipe():
    """``python train.py``: MiniLM on CoLA with AdamW 5e-5 and the norm clipped at 1 (README)."""
    import torch_clip.suite.naming  # noqa: F401

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    assert cfg.task._target_ == "torch_clip.tasks.cola.ColaTask" and cfg.trainer.max_steps == 150
    opt = build_optimizer(cfg, _model().parameters(), 0)
    assert type(opt) is ClippedAdamW and opt.param_groups[0]["lr"] == 5e-5
    assert opt.clipper.rule.threshold.level == 1.0 and cfg.optimizer.clipping_type == "norm"
    # a user's step rule still wins over the task's recipe
    cfg = _cfg("step_rule=sgd")
    assert cfg.step_rule.name == "sgd"


@pytest.mark.parametrize(
    ("preset", "expected"),
    [("torch_sgd", False), ("none", False), ("norm", True), ("auto", True), ("peer_agc", True)],
)
def test_clips_tells_the_baselines_apart(preset, expected):
    from torch_clip.suite.optim import clips

    assert clips(build_optimizer(_cfg(f"optimizer={preset}"), _model().parameters(), 0)) is expected


def test_a_peer_refuses_an_argument_it_does_not_take():
    with pytest.raises(ValueError, match=r"Invalid peer_args for agc: \['clip_facter'\]; expected"):
        build_optimizer(_cfg("optimizer=peer_agc", "+optimizer.peer_args.clip_facter=0.1"),
                        _model().parameters(), 0)  # fmt: skip
    with pytest.raises(ValueError, match=r"Invalid peer: 'agcc'; expected one of autoclip"):
        build_optimizer(_cfg("optimizer=peer_agc", "optimizer.peer=agcc"), _model().parameters(), 0)
