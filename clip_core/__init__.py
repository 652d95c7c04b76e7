"""torch-clip: gradient-clipping optimizers for heavy-tailed stochastic gradients.

Imports only torch, numpy and the standard library.
"""

from clip_core.adamw import ClippedAdamW
from clip_core.base import ClippedOptimizer
from clip_core.clipping import (
    CLIPPING_TYPES,
    Always,
    ClipRule,
    ClipStats,
    FixedThreshold,
    Never,
    PercentileThreshold,
    Stochastic,
    preset,
)
from clip_core.lipschitz import estimate_lipschitz
from clip_core.sgd import ClippedSGD
from clip_core.sstm import ClippedSSTM

__version__ = "0.1.0"

__all__ = [
    "CLIPPING_TYPES",
    "Always",
    "ClipRule",
    "ClipStats",
    "ClippedAdamW",
    "ClippedOptimizer",
    "ClippedSGD",
    "ClippedSSTM",
    "FixedThreshold",
    "Never",
    "PercentileThreshold",
    "Stochastic",
    "estimate_lipschitz",
    "preset",
]
