"""``python scripts/tail_over_training.py ...``: the same as
``python -m torch_clip.suite.experiments.tail_over_training ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.experiments.tail_over_training import main

if __name__ == "__main__":
    raise SystemExit(main())
