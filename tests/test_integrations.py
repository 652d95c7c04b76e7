"""Trainer integrations: Hugging Face ``Trainer`` (tiny BERT) and Lightning, telemetry through
their wrappers, and the warning for gradients clipped before the optimizer.

References are the trainers' own clipping (``max_grad_norm`` / ``gradient_clip_val``, i.e.
``clip_grad_norm_``) with torch's optimizers, run on the same data in the same order.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from clip_core import ClippedAdamW, ClippedSGD
from clip_core.integrations import ClipTelemetry, hf_callback, unwrap

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


def test_hf_trainer_default_clipping_is_reported(tmp_path):
    """The trap: Trainer's max_grad_norm (default 1.0; 0.05 here, below this model's norms)
    clips first; the optimizer (λ = 2) then sees norms of exactly 0.05 and clips nothing. Both
    the callback and the optimizer say so."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, logs, _ = run_trainer(
            tmp_path,
            lambda m: ClippedAdamW(m.parameters(), lr=1e-2, clipping_level=2.0),
            max_grad_norm=0.05,
            steps=9,
            callbacks=[hf_callback()],
        )
    assert all(r["clip/grad_norm"] == pytest.approx(0.05, rel=1e-4) for r in logs)
    messages = [str(w.message) for w in caught]
    assert any("max_grad_norm=0.05) clips the gradients" in m for m in messages)
    assert any(
        "ClippedAdamW: the gradient norm was 0.05 at each of the first 8 steps" in m
        for m in messages
    )


def test_no_preclip_warning_without_trainer_clipping(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_trainer(
            tmp_path,
            lambda m: ClippedAdamW(m.parameters(), lr=1e-2, clipping_level=2.0),
            max_grad_norm=0.0,
            steps=9,
        )
    assert not [w for w in caught if "look clipped" in str(w.message)]


# -- Lightning -----------------------------------------------------------------------------------
def lightning_run(make_opt, gradient_clip_val=None, steps: int = 6):
    lightning = pytest.importorskip("lightning")

    class Tiny(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
            )
            self.telemetry = ClipTelemetry()
            self.logged: list[dict] = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return make_opt(self.net)

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.telemetry.record(self.optimizers())  # a LightningOptimizer
            self.logged.append(self.telemetry.summary())

    g = torch.Generator().manual_seed(1)
    x = torch.randn(steps * 8, 6, generator=g)
    y = x.sum(1, keepdim=True) * 3 + torch.randn(steps * 8, 1, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    module = Tiny()
    trainer = lightning.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=gradient_clip_val,
    )
    trainer.fit(module, data)
    return module, data


def test_lightning_recipe_equals_clip_grad_norm_then_sgd():
    lam = 1.0
    module, data = lightning_run(
        lambda net: ClippedSGD(net.parameters(), lr=0.01, clipping_level=lam)
    )
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    norms = []
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), lam)))
        opt.step()
    assert sum(n > lam for n in norms) >= 3
    for row, norm in zip(module.logged, norms):
        assert row["clip/grad_norm"] == pytest.approx(norm, rel=1e-5)
    for p, q in zip(module.net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_lightning_gradient_clip_val_is_reported():
    with pytest.warns(UserWarning, match="the gradients look clipped before the optimizer"):
        module, _ = lightning_run(
            lambda net: ClippedSGD(net.parameters(), lr=0.001, clipping_level=100.0),
            gradient_clip_val=0.1,
            steps=9,
        )
    assert all(math.isclose(r["clip/grad_norm"], 0.1, rel_tol=1e-4) for r in module.logged)
