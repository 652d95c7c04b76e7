"""``python scripts/tuned_comparison.py ...``: the same as
``python -m torch_clip.suite.experiments.tuned_comparison ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.experiments.tuned_comparison import main

if __name__ == "__main__":
    raise SystemExit(main())
