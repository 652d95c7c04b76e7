"""Where the repository checkout is: the experiments read ``conf/``, start ``train.py`` and write
``results/`` there, so they run from a checkout installed editable (``pip install -e .``)."""

from __future__ import annotations

from pathlib import Path

#: what marks the repository root: the training entry point and the Hydra configs
MARKERS = ("train.py", "conf")


def repo_root(candidate: Path | None = None) -> Path:
    """The checkout holding this package's source folder (``suite/``'s parent), checked for
    :data:`MARKERS`; an installed copy without the checkout is told what to do."""
    root = Path(__file__).resolve().parents[1] if candidate is None else Path(candidate)
    missing = [name for name in MARKERS if not (root / name).exists()]
    if missing:
        raise RuntimeError(
            f"the experiments need the torch-clip checkout, but {root} (where torch_clip.suite "
            f"is installed) has no {' or '.join(missing)}: clone the repository and install it "
            "editable from its root (pip install -e '.[suite]'), then run them from there"
        )
    return root


ROOT = repo_root()
