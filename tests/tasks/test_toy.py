"""Tests for the toy task's label-noise laws, its linear-regression variant and its validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tasks.toy import ToyRegressionTask

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
    x, y = next(iter(task.train_batches(0, seed=0)))
    loss, _ = task.loss((x, y))
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
    ],
)
def test_bad_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        ToyRegressionTask(**kwargs)
