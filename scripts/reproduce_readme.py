"""``python scripts/reproduce_readme.py ...``: the same as
``python -m torch_clip.suite.experiments.reproduce_readme ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.experiments.reproduce_readme import main

if __name__ == "__main__":
    raise SystemExit(main())
