r"""torch-clip: gradient-clipping optimizers for heavy-tailed stochastic gradients.

Imports only torch, numpy and the standard library.

Each optimizer replaces the stochastic gradient ``g`` by ``α ⊙ g`` and hands it to its step
rule. With ``λ`` = ``clipping_level``, ``g_i`` one parameter tensor, ``g_j`` one coordinate and
``h_t`` the history of ``‖g‖`` up to and including step ``t``, the names of
:data:`CLIPPING_TYPES` (:func:`preset`) are:

* ``none``: $\alpha = 1$.
* ``norm``: $\alpha = \min(1, \lambda/\|g\|)$.
* ``layer_wise``: per tensor, $\alpha_i = \min(1, \lambda/\|g_i\|)$.
* ``coord_wise``: per coordinate, $\alpha_j = \min(1, \lambda/|g_j|)$, i.e. ``clamp(g, -λ, λ)``.
* ``auto``: $\lambda_t = \mathrm{quantile}_p(h_t)$ with $p$ = ``p_autoclip`` (``numpy.quantile``,
  linear interpolation), then $\alpha = \min(1, \lambda_t/\|g\|)$.
* ``linear_stoch_norm``: if $\|g\| > \lambda$, clip ($\alpha = \lambda/\|g\|$) with probability
  $\beta^{\lambda/\|g\|}$, else $\alpha = 1$.
* ``quadratic_stoch_norm``: the same with probability $\beta^{(\lambda/\|g\|)^2}$.
* ``linear_stoch_auto``, ``quadratic_stoch_auto``: the two stochastic rules with $\lambda_t$
  of ``auto``.

A zero statistic never clips, so a zero gradient gives $\alpha = 1$, never NaN.
"""

from clip_core.adamw import ClippedAdamW
from clip_core.base import ClippedOptimizer
from clip_core.clipping import (
    CLIPPING_TYPES,
    PRESET_RULES,
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
    "PRESET_RULES",
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
