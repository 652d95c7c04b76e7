"""``python scripts/regime_map.py ...``: the same as
``python -m torch_clip.suite.experiments.regime_map ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.experiments.regime_map import main

if __name__ == "__main__":
    raise SystemExit(main())
