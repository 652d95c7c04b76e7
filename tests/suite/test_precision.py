"""``trainer.precision=bf16-mixed``: the task's forward passes and losses run under bfloat16
autocast, the backward pass and the optimizer on float32 parameters and gradients.

The run is checked against a step computed here with ``torch.autocast`` and torch's own SGD
from the same composed configuration, and against the float32 run, which it must not equal.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import torch_clip.suite.naming  # noqa: F401  registers the run_dir resolver
from tests.suite_helpers import ROOT, composed_run_dir, final_params, find_run_dir, run_train
from torch_clip.suite import registry  # every task of conf/task/
from torch_clip.suite.experiments import sweeps  # the --quick budgets of every task
from torch_clip.suite.trainer import seed_everything, warn_if_emulated_bf16

ONE_STEP = (
    "task=toy",
    "optimizer=torch_sgd",
    "step_rule.lr=0.1",
    "trainer.max_steps=1",
    "trainer.log_every=1",
    "trainer.eval_every=1",
    "trainer.checkpoint_every=1",  # the final parameters, to compare
    "trainer.device=cpu",
)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _step_by_hand(autocast: bool):
    """The run's first step, recomputed: same seed, task and first batch; torch.optim.SGD."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(ONE_STEP))
    torch.set_num_threads(1)
    seed_everything(cfg.seed)
    task = instantiate(cfg.task, _convert_="all")
    task.setup(torch.device("cpu"), cfg.seed)
    batch = next(iter(task.train_batches(0, 0, seed=cfg.seed)))
    task.model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, _ = task.loss(batch)
    loss.backward()
    grads = [p.grad for p in task.model.parameters()]
    assert all(g.dtype == torch.float32 for g in grads)  # float32 master weights and gradients
    opt = torch.optim.SGD(task.model.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        val = task.evaluate()
    params = {k: v.detach().numpy().copy() for k, v in task.model.state_dict().items()}
    return float(loss.detach()), val["mse"], params


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    results = tmp_path_factory.mktemp("precision")
    made = {}
    for precision in ("32", "bf16-mixed"):
        proc = run_train(results, *ONE_STEP, f"trainer.precision={precision}", f"label={precision}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        made[precision] = find_run_dir(results, precision)
        made[f"{precision} stderr"] = proc.stderr
    return made


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_a_step_equals_torch_sgd_on_the_loss_computed_at_that_precision(runs, precision):
    run_dir = runs[precision]
    loss, val_mse, params = _step_by_hand(autocast=precision == "bf16-mixed")
    (train,) = [r for r in _rows(run_dir) if r["split"] == "train"]
    (val,) = [r for r in _rows(run_dir) if r["split"] == "val"]
    assert train["train_loss"] == pytest.approx(loss, rel=1e-6)
    assert val["val_mse"] == pytest.approx(val_mse, rel=1e-6)
    ran = final_params(run_dir)
    assert ran.keys() == params.keys()
    for key in params:
        assert ran[key].dtype == np.float32, key
        np.testing.assert_allclose(ran[key], params[key], rtol=1e-6, atol=1e-7, err_msg=key)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"] == precision


def test_bf16_mixed_computes_something_else_than_float32(runs):
    """The autocast is real: bfloat16 matmuls move the loss and the step off float32's."""
    full, mixed = _rows(runs["32"]), _rows(runs["bf16-mixed"])
    assert full[0]["train_loss"] != mixed[0]["train_loss"]
    assert mixed[0]["train_loss"] == pytest.approx(full[0]["train_loss"], rel=2e-2)
    a, b = final_params(runs["32"]), final_params(runs["bf16-mixed"])
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) > 1e-6


def test_precision_is_part_of_a_runs_identity_only_when_not_float32(tmp_path):
    default = composed_run_dir(tmp_path, "task=toy")
    assert composed_run_dir(tmp_path, "task=toy", "trainer.precision=32") == default
    assert composed_run_dir(tmp_path, "task=toy", "trainer.precision=bf16-mixed") != default
    # any other trainer key says how a run runs, not what it computes
    assert composed_run_dir(tmp_path, "task=toy", "trainer.log_every=1") == default


@pytest.mark.slow
@pytest.mark.parametrize("task", registry.tasks())
def test_every_task_trains_and_evaluates_under_bf16_mixed(tmp_path, task):
    """Each task's forward, loss and evaluation run under autocast (the Reddit evaluation's
    sparse products among them), and the record says at which precision the run computed."""
    quick = sweeps.quick_task_overrides(task, True)
    proc = run_train(
        tmp_path, f"task={task}", *quick, "trainer.precision=bf16-mixed", "label=mixed"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "precision bf16-mixed" in proc.stdout
    run_dir = find_run_dir(tmp_path, "mixed", task=task)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["precision"] == "bf16-mixed"
    val = [r for r in _rows(run_dir) if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    # every validation metric of the task (the toy task reports val_mse and val_r2, no val_loss)
    metrics = [{k: v for k, v in r.items() if k.startswith("val_")} for r in val]
    assert all(m and all(math.isfinite(v) for v in m.values()) for m in metrics)


@pytest.mark.parametrize("avx512_bf16, amx", [(False, False), (True, False), (False, True)])
def test_bf16_mixed_on_a_cpu_that_emulates_bfloat16_warns_with_the_remedy(
    monkeypatch, avx512_bf16, amx
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    emulated = not (avx512_bf16 or amx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_emulated_bf16("bf16-mixed", torch.device("cpu"))
        warn_if_emulated_bf16("32", torch.device("cpu"))  # float32 never warns
        warn_if_emulated_bf16("bf16-mixed", torch.device("cuda"))  # nor does a GPU
    assert len(caught) == emulated
    if emulated:
        assert "trainer.precision=32" in str(caught[0].message)


def test_a_run_warns_about_emulated_bfloat16_exactly_when_this_cpu_emulates_it(runs):
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert ("bfloat16 is emulated" in runs["bf16-mixed stderr"]) == (not native)
    assert "bfloat16 is emulated" not in runs["32 stderr"]
