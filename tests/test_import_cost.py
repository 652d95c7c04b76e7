"""A toy run of ``train.py`` imports none of the heavy packages it does not use.

Each costs from a second to several per process start, and a sweep pays it once per run:
TorchDynamo and DTensor (pulled by ``torch.compiler.disable`` and torch's optimizer methods,
or by importing FSDP), SciPy's statistics (only the α-stable noise law samples with it), PyG
(only the Reddit task), transformers (only the text tasks), wandb (only ``logger=wandb``) and
matplotlib (only the reports).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.suite_helpers import ROOT, train_command, train_env

pytestmark = pytest.mark.slow

# TorchDynamo (and the sympy, DTensor and FSDP it imports) is not listed: clip_core's eager-only
# helpers are torch.compiler.disable, which imports it (clip_core/_eager.py says why)
HEAVY = (
    "scipy.stats",
    "torch_geometric",
    "transformers",
    "wandb",
    "matplotlib",
)

# runs train.py in this interpreter, then prints which of HEAVY it imported
PROBE = """
import json, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path({train!r}, run_name="__main__")
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_imports(tmp_path, *overrides: str) -> list[str]:
    argv = train_command(tmp_path, "task=toy", "trainer.max_steps=2", *overrides)[1:]
    probe = PROBE.format(argv=argv, train=str(ROOT / "train.py"), heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "overrides",
    [
        ("optimizer=norm", "task.noise=gaussian"),
        # the host history (a compiler-disabled push and quantile) and a stochastic decision
        ("optimizer=quadratic_stoch_auto", "task.noise=student_t"),
        ("step_rule=adamw", "task.noise=gaussian", "task.noise_on=gradient"),
    ],
)
def test_a_toy_run_imports_no_heavy_package(tmp_path, overrides):
    assert heavy_imports(tmp_path, *overrides) == []


def test_the_stable_noise_law_imports_scipy_stats(tmp_path):
    """The probe sees an import when one happens (scipy.stats samples the α-stable law)."""
    assert heavy_imports(tmp_path, "task.noise=stable") == ["scipy.stats"]
