"""Trainer integrations: Hugging Face ``Trainer`` (tiny BERT) and Lightning, telemetry through
their wrappers, and the warning for gradients clipped before the optimizer.

References are the trainers' own clipping (``max_grad_norm`` / ``gradient_clip_val``, i.e.
``clip_grad_norm_``) with torch's optimizers, run on the same data in the same order.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from clip_core import ClippedAdamW, ClippedSGD
from clip_core.integrations import (
    ClipTelemetry,
    check_trainer_clipping,
    hf_callback,
    lightning_callback,
    unwrap,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# -- unwrap and the telemetry window -------------------------------------------------------------
def test_telemetry_window_against_the_steps_it_saw():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = ClippedSGD(model.parameters(), lr=0.1, clipping_level=0.5)
    telemetry = ClipTelemetry()
    norms = []
    for t in range(4):
        opt.zero_grad()
        (model(torch.randn(8, 4)) ** 2).sum().backward()
        if t == 2:
            model.weight.grad[0, 0] = float("inf")
        else:
            norms.append(
                torch.linalg.vector_norm(
                    torch.cat([p.grad.flatten() for p in model.parameters()])
                ).item()
            )
        opt.step()
        telemetry.record(opt)
    summary = telemetry.summary()
    assert summary["clip/grad_norm"] == pytest.approx(sum(norms) / 3, rel=1e-5)
    assert summary["clip/grad_norm_max"] == pytest.approx(max(norms), rel=1e-5)
    assert summary["clip/threshold"] == 0.5
    assert summary["clip/clip_fraction"] == pytest.approx(
        sum(max(0.0, 1 - 0.5 / n) for n in norms) / 4, rel=1e-5
    )
    assert summary["clip/skipped"] == 1.0 and summary["clip/skipped_total"] == 1.0
    assert telemetry.summary() == {}  # a new window
    with pytest.raises(ValueError, match="Invalid optimizer: SGD; expected a clip_core optimizer"):
        telemetry.record(torch.optim.SGD(model.parameters(), lr=0.1))


# -- Hugging Face Trainer ------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


class TinyTexts(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 30, (n, 12), generator=g)
        self.labels = (self.ids[:, 0] > 15).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def tiny_bert() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def run_trainer(tmp_path, make_opt, max_grad_norm: float, steps: int = 6, callbacks=()):
    model = tiny_bert()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=steps,
        per_device_train_batch_size=8,
        logging_steps=1,
        max_grad_norm=max_grad_norm,
        lr_scheduler_type="constant",
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=TinyTexts(),
        optimizers=(make_opt(model), None),
        callbacks=list(callbacks),
    )
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    return model, logs, trainer


def test_hf_trainer_recipe_equals_trainer_clipping_and_logs_telemetry(tmp_path):
    lam = 0.2
    callback = hf_callback()
    ours, logs, trainer = run_trainer(
        tmp_path / "ours",
        lambda m: ClippedAdamW(m.parameters(), lr=1e-2, clipping_level=lam),
        max_grad_norm=0.0,
        callbacks=[callback],
    )
    ref, ref_logs, _ = run_trainer(
        tmp_path / "ref", lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2), max_grad_norm=lam
    )
    # the wrapper hides the optimizer; unwrap finds it
    assert type(trainer.optimizer).__name__ == "AcceleratedOptimizer"
    assert isinstance(unwrap(trainer.optimizer), ClippedAdamW)
    # HF logs the norm its own clip_grad_norm_ measured: the telemetry saw the same norms
    assert len(logs) == len(ref_logs) == 6
    assert sum(r["grad_norm"] > lam for r in ref_logs) >= 3
    for row, ref_row in zip(logs, ref_logs):
        assert row["clip/grad_norm"] == pytest.approx(ref_row["grad_norm"], rel=1e-4)
        assert row["clip/threshold"] == pytest.approx(lam)
        expected_fraction = max(0.0, 1 - lam / ref_row["grad_norm"])
        assert row["clip/clip_fraction"] == pytest.approx(expected_fraction, rel=1e-4, abs=1e-6)
    for p, q in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_hf_trainer_max_grad_norm_with_a_clip_core_optimizer_is_refused(tmp_path):
    """The trap: Trainer's max_grad_norm (default 1.0) clips before the optimizer, whose rule then
    clips nothing. The callback refuses it before the first step, naming the fix."""
    built = []

    def make(m):
        built.append((m, [p.detach().clone() for p in m.parameters()]))
        return ClippedAdamW(m.parameters(), lr=1e-2, clipping_level=2.0)

    with pytest.raises(
        ValueError,
        match=re.escape(
            "Invalid TrainingArguments(max_grad_norm=1.0): the trainer clips the gradients before "
            "ClippedAdamW sees them, so its clipping rule (norm) would clip nothing; set "
            "max_grad_norm=0"
        ),
    ):
        run_trainer(tmp_path, make, max_grad_norm=1.0, callbacks=[hf_callback()])
    model, start = built[0]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), start))  # no step taken


def test_hf_trainer_without_trainer_clipping_warns_of_nothing(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", module="transformers|accelerate|torch")
        run_trainer(
            tmp_path,
            lambda m: ClippedAdamW(m.parameters(), lr=1e-2, clipping_level=2.0),
            max_grad_norm=0.0,
            steps=9,
            callbacks=[hf_callback()],
        )


# -- Lightning -----------------------------------------------------------------------------------
def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def tiny_data(steps: int):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps * 8, 6, generator=g)
    y = x.sum(1, keepdim=True) * 3 + torch.randn(steps * 8, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def lightning_run(make_opt, steps: int = 6, **trainer_kwargs):
    lightning = pytest.importorskip("lightning")

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net()
            self.telemetry = ClipTelemetry()
            self.logged: list[dict] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x).float(), y)

        def configure_optimizers(self):
            return make_opt(self.net)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.telemetry.record(self.optimizers())  # a LightningOptimizer
            self.logged.append(self.telemetry.summary())

    data = tiny_data(steps)
    module = Tiny()
    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, data)
    return module, data


def reference_run(data, lam: float, autocast_dtype=None, scaler=None):
    """torch's recipe by hand: autocast (if any), GradScaler (if any), clip_grad_norm_, SGD."""
    net = tiny_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    norms = []
    for x, y in data:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = torch.nn.functional.mse_loss(net(x).float(), y)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(opt)
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), lam)))
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
    return net, norms


@pytest.mark.parametrize("precision", ["32", "16-mixed", "bf16-mixed"])
def test_lightning_recipe_equals_clip_grad_norm_then_sgd(precision):
    """Every precision Lightning takes on CPU (mixed precision there autocasts, no GradScaler)."""
    lam = 1.0
    module, data = lightning_run(
        lambda net: ClippedSGD(net.parameters(), lr=0.01, clipping_level=lam),
        precision=precision,
        callbacks=[lightning_callback()],
    )
    # Lightning runs 16-mixed on CPU as bf16-mixed (it warns: no fp16 AMP on CPU); the fp16
    # GradScaler path is the next test's
    dtype = {"32": None, "16-mixed": torch.bfloat16, "bf16-mixed": torch.bfloat16}[precision]
    net, norms = reference_run(data, lam, dtype)
    assert sum(n > lam for n in norms) >= 3
    for row, norm in zip(module.logged, norms):
        assert row["clip/grad_norm"] == pytest.approx(norm, rel=1e-5)
    for p, q in zip(module.net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_lightning_16_mixed_with_a_grad_scaler_leaves_the_unscaling_to_the_optimizer():
    """Lightning's 16-mixed with a GradScaler (what it builds on CUDA; given explicitly on CPU)
    does not call ``unscale_`` for an optimizer that unscales itself: ``scaler.step`` hands it
    the loss scale. The result equals torch's unscale_ + clip_grad_norm_ + SGD recipe."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    lam, init_scale = 1.0, 2.0**10
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale))
    unscaled = []
    plugin.scaler.unscale_ = lambda opt: unscaled.append(opt)  # Lightning must not call it
    module, data = lightning_run(
        lambda net: ClippedSGD(net.parameters(), lr=0.01, clipping_level=lam),
        plugins=[plugin],
        callbacks=[lightning_callback()],
    )
    net, norms = reference_run(data, lam, torch.float16, torch.amp.GradScaler("cpu", init_scale))
    assert not unscaled and sum(n > lam for n in norms) >= 3
    for row, norm in zip(module.logged, norms):
        assert row["clip/grad_norm"] == pytest.approx(norm, rel=1e-4)
    for p, q in zip(module.net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["32", "16-mixed", "bf16-mixed"])
@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_lightning_gradient_clip_val_is_refused_at_the_start(precision, algorithm):
    built = []

    def make(net):
        built.append((net, [p.detach().clone() for p in net.parameters()]))
        return ClippedSGD(net.parameters(), lr=0.01, clipping_level=100.0)

    expected = (
        f"Invalid Trainer(gradient_clip_val=0.1, gradient_clip_algorithm='{algorithm}'): the "
        "trainer clips the gradients before ClippedSGD sees them"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        lightning_run(
            make,
            precision=precision,
            gradient_clip_val=0.1,
            gradient_clip_algorithm=algorithm,
            callbacks=[lightning_callback()],
        )
    net, start = built[0]
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), start))  # no step taken


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_lightning_mixed_precision_itself_refuses_gradient_clip_val(precision):
    """Without the callback, Lightning's mixed precision refuses to clip for an optimizer that
    unscales itself (``_step_supports_amp_scaling``) at the first step: what the docs say."""
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        lightning_run(
            lambda net: ClippedSGD(net.parameters(), lr=0.01),
            precision=precision,
            gradient_clip_val=0.1,
        )


def test_trainer_clipping_check_refuses_only_clip_core_optimizers():
    """torch's optimizers behind a trainer's clipping are the usual recipe: left alone; a
    clip_core optimizer inside a wrapper (or a list of them) is found."""
    net = tiny_net()
    check_trainer_clipping([torch.optim.SGD(net.parameters(), lr=0.1)], "x=1", "x=0")

    class Wrapper:  # what accelerate and Lightning do: hold the real optimizer
        def __init__(self, optimizer):
            self.optimizer = optimizer

    wrapped = Wrapper(ClippedSGD(net.parameters(), lr=0.1, clipping_type="layer_wise"))
    with pytest.raises(ValueError, match=re.escape("its clipping rule (layer_wise)")):
        check_trainer_clipping([wrapped], "x=1", "x=0")
