"""Tests for the toy task's noise laws (on the labels and in the gradient), its linear-regression
variant, its Huber loss and its validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from torch_clip.tasks.toy import ToyRegressionTask

CPU = torch.device("cpu")


def injected_noise(seed: int = 0, num_train: int = 20_000, **kwargs) -> np.ndarray:
    """The unit-scale label noise a task adds: targets at scale 1 minus targets at scale 0."""
    ys = []
    for scale in (0.0, 1.0):
        task = ToyRegressionTask(num_train=num_train, num_val=8, noise_scale=scale, **kwargs)
        task.setup(CPU, seed)
        ys.append(task.y_train.double().numpy())
    return ys[1] - ys[0]


def cms_sas(alpha: float, n: int, seed: int) -> np.ndarray:
    """Chambers–Mallows–Stuck, written out here as a reference independent of scipy: symmetric
    α-stable with characteristic function exp(−|t|^α) (α = 2: N(0, 2))."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-math.pi / 2, math.pi / 2, n)
    w = rng.exponential(1.0, n)
    return (
        np.sin(alpha * u)
        / np.cos(u) ** (1 / alpha)
        * (np.cos((1 - alpha) * u) / w) ** ((1 - alpha) / alpha)
    )


@pytest.mark.parametrize("alpha", [1.1, 1.5, 1.9])
def test_stable_noise_matches_the_sas_law(alpha):
    noise = injected_noise(noise="stable", noise_alpha=alpha, seed=3)
    # The documented convention: scipy's SαS with scale 1/√2, i.e. CMS draws divided by √2.
    reference = cms_sas(alpha, 20_000, seed=7) / math.sqrt(2)
    assert stats.ks_2samp(noise, reference).pvalue > 0.01
    assert stats.ks_2samp(noise, reference * 1.2).pvalue < 1e-3  # the test sees a scale error
    assert stats.ks_2samp(noise, cms_sas(alpha - 0.3, 20_000, 7) / 2**0.5).pvalue < 1e-3


def test_stable_noise_against_the_scipy_cdf():
    noise = injected_noise(noise="stable", noise_alpha=1.3, seed=1, num_train=2000)
    cdf = stats.levy_stable(1.3, 0.0, scale=2**-0.5).cdf
    assert stats.kstest(noise, cdf).pvalue > 0.01


def test_stable_at_alpha_two_is_the_gaussian_law():
    stable = injected_noise(noise="stable", noise_alpha=2.0, seed=2)
    gauss = injected_noise(noise="gaussian", seed=2)
    for sample in (stable, gauss):
        assert stats.kstest(sample, stats.norm.cdf).pvalue > 0.01
        assert np.std(sample) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("df", [1.2, 3.0])
def test_student_t_noise_matches_scipy(df):
    noise = injected_noise(noise="student_t", noise_df=df, seed=4)
    assert stats.kstest(noise, stats.t(df).cdf).pvalue > 0.01
    assert stats.kstest(noise, stats.t(df + 1.5).cdf).pvalue < 1e-3


def test_noise_is_seeded_by_the_run_seed_only():
    kwargs = {"noise": "stable", "noise_alpha": 1.4, "num_train": 500}
    torch.manual_seed(123)  # the global generator must not matter
    a = injected_noise(seed=5, **kwargs)
    torch.manual_seed(456)
    b = injected_noise(seed=5, **kwargs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, injected_noise(seed=6, **kwargs))


def test_the_default_is_student_t_with_df_one_and_a_half():
    default = ToyRegressionTask(num_train=500, num_val=8)
    info = default.setup(CPU, 0)
    assert "Student-t(df=1.5)" in info.data_source and info.model_source == "MLP 16-32-1"
    explicit = ToyRegressionTask(num_train=500, num_val=8, noise="student_t", noise_df=1.5)
    explicit.setup(CPU, 0)
    torch.testing.assert_close(default.y_train, explicit.y_train, rtol=0, atol=0)


def test_linear_model_gradient_is_the_least_squares_gradient():
    task = ToyRegressionTask(model="linear", noise="stable", noise_alpha=1.5, num_train=256)
    info = task.setup(CPU, 0)
    assert info.model_source == "linear regression 16-1" and "1.5-stable" in info.data_source
    assert sum(p.numel() for p in task.model.parameters()) == 16 + 1
    x, y, noise = next(iter(task.train_batches(0, seed=0)))
    assert noise is None  # label noise: nothing is added to the gradient
    loss, _ = task.loss((x, y, noise))
    loss.backward()
    w = task.model.weight.detach().double().numpy().ravel()
    b = float(task.model.bias.detach())
    xn, yn = x.double().numpy(), y.double().numpy()
    residual = xn @ w + b - yn  # d/dw mean((x·w + b − y)²) = 2/B Xᵀ r
    np.testing.assert_allclose(
        task.model.weight.grad.numpy().ravel(), 2 * xn.T @ residual / len(yn), rtol=1e-4
    )
    assert float(task.model.bias.grad) == pytest.approx(2 * residual.mean(), rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"noise": "cauchy"},
            "Invalid task.noise: 'cauchy'; expected one of gaussian, student_t, stable",
        ),
        ({"model": "cnn"}, "Invalid task.model: 'cnn'; expected one of mlp, linear"),
        ({"noise_alpha": 0.0}, r"Invalid task.noise_alpha: 0.0; expected a value in \(0, 2\]"),
        ({"noise_alpha": 2.5}, r"Invalid task.noise_alpha: 2.5; expected a value in \(0, 2\]"),
        ({"noise_df": -1.0}, "Invalid task.noise_df: -1.0; expected a value > 0"),
        ({"noise_scale": -0.1}, "Invalid task.noise_scale: -0.1; expected a value >= 0"),
        ({"batch_size": 0}, "Invalid task.batch_size: 0; expected an integer >= 1"),
        (
            {"noise_on": "inputs"},
            "Invalid task.noise_on: 'inputs'; expected one of labels, gradient",
        ),
        ({"loss": "l1"}, "Invalid task.loss: 'l1'; expected one of mse, huber"),
        ({"huber_delta": 0.0}, "Invalid task.huber_delta: 0.0; expected a value > 0"),
    ],
)
def test_bad_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        ToyRegressionTask(**kwargs)


# ------------------------------------------------------------------ noise in the gradient


def gradient_task(**kwargs) -> ToyRegressionTask:
    task = ToyRegressionTask(noise_on="gradient", num_train=256, num_val=8, **kwargs)
    task.setup(CPU, 0)
    return task


def gradients(task: ToyRegressionTask, batch) -> np.ndarray:
    task.model.zero_grad(set_to_none=True)
    loss, _ = task.loss(batch)
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in task.model.parameters()]).double().numpy()


def pooled_gradient_noise(law: str, draws: int = 40, **kwargs) -> np.ndarray:
    """Unit-scale noise the task adds to the gradient, pooled over ``draws`` batches."""
    task = gradient_task(noise=law, noise_scale=1.0, **kwargs)
    return np.concatenate(
        [task.gradient_noise(0, b).double().numpy() for b in range(draws)]
    )  # 40 x 577 MLP parameters


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_gradient_stable_noise_has_the_scipy_law(alpha):
    sample = pooled_gradient_noise("stable", noise_alpha=alpha)[:6000]
    scale = 2**-0.5
    assert stats.kstest(sample, stats.levy_stable(alpha, 0.0, scale=scale).cdf).pvalue > 0.01
    # the test sees an error of the index or of the scale
    for wrong in (stats.levy_stable(alpha - 0.35, 0.0, scale=scale),
                  stats.levy_stable(alpha, 0.0, scale=1.25 * scale)):  # fmt: skip
        assert stats.kstest(sample, wrong.cdf).pvalue < 1e-3


def test_gradient_noise_of_the_other_laws():
    gauss = pooled_gradient_noise("gaussian")
    assert stats.kstest(gauss, stats.norm.cdf).pvalue > 0.01
    stable_two = pooled_gradient_noise("stable", noise_alpha=2.0)
    assert stats.kstest(stable_two, stats.norm.cdf).pvalue > 0.01
    for df in (1.2, 3.0):
        t = pooled_gradient_noise("student_t", noise_df=df)
        assert stats.kstest(t, stats.t(df).cdf).pvalue > 0.01
        assert stats.kstest(t, stats.t(df + 1.5).cdf).pvalue < 1e-3


@pytest.mark.parametrize("model", ["linear", "mlp"])
def test_the_gradient_is_the_clean_gradient_plus_the_noise(model):
    task = gradient_task(model=model, noise="stable", noise_alpha=1.5)
    assert "1.5-stable gradient noise" in task.setup(CPU, 0).data_source
    x, y, noise = next(iter(task.train_batches(0, seed=0)))
    noisy = gradients(task, (x, y, noise))
    loss, _ = task.loss((x, y, noise))
    clean = gradients(task, (x, y, None))
    np.testing.assert_allclose(noisy - clean, noise.double().numpy(), rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(float(task.loss((x, y, None))[0]))  # clean loss value
    # clean labels: the targets are the noise-free function of the inputs
    clean_task = ToyRegressionTask(num_train=256, num_val=8, noise_scale=0.0, model=model)
    clean_task.setup(CPU, 0)
    torch.testing.assert_close(task.y_train, clean_task.y_train, rtol=0, atol=0)


def test_gradient_noise_is_a_pure_function_of_seed_epoch_and_batch():
    task = gradient_task(noise="stable", noise_alpha=1.3)
    torch.manual_seed(1)  # the global generator must not matter
    epoch = [b[2] for b in task.train_batches(2, 0, seed=0)]
    torch.manual_seed(2)
    resumed = [b[2] for b in task.train_batches(2, 3, seed=0)]  # from batch 3, as on resume
    for a, b in zip(epoch[3:], resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(epoch[0], epoch[1])
    other_epoch = next(iter(task.train_batches(3, 0, seed=0)))[2]
    assert not torch.equal(epoch[0], other_epoch)
    other_seed = ToyRegressionTask(noise_on="gradient", num_train=256, num_val=8)
    other_seed.setup(CPU, 1)
    assert not torch.equal(epoch[0], other_seed.gradient_noise(2, 0))
    # data-parallel ranks add the same draw, so the all-reduced mean keeps it whole
    halves = [next(iter(task.train_batches(2, 0, seed=0, rank=r, world_size=2))) for r in (0, 1)]
    torch.testing.assert_close(halves[0][2], halves[1][2], rtol=0, atol=0)
    torch.testing.assert_close(halves[0][2], epoch[0], rtol=0, atol=0)


def test_huber_loss_against_numpy():
    task = ToyRegressionTask(num_train=256, num_val=8, loss="huber", huber_delta=0.3,
                             noise="stable", noise_alpha=1.2)  # fmt: skip
    assert task.setup(CPU, 0).model_source == "MLP 16-32-1, Huber loss δ=0.3"
    x, y, noise = next(iter(task.train_batches(0, seed=0)))
    loss, _ = task.loss((x, y, noise))
    r = np.abs(task.model(x).squeeze(-1).detach().double().numpy() - y.double().numpy())
    expected = np.where(r < 0.3, 0.5 * r**2, 0.3 * (r - 0.15)).mean()
    assert 0 < (r >= 0.3).mean() < 1  # both branches are exercised
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_scipy_is_imported_only_for_stable_label_noise():
    import subprocess
    import sys

    code = (
        "import sys, torch; from torch_clip.tasks.toy import ToyRegressionTask as T; "
        "T(noise='stable', noise_on='gradient', num_train=64).setup(torch.device('cpu'), 0); "
        "print('scipy.stats' in sys.modules); "
        "T(noise='stable', num_train=64).setup(torch.device('cpu'), 0); "
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
