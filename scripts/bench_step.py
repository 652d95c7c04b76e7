"""``python scripts/bench_step.py ...``: the same as
``python -m torch_clip.suite.bench.bench_step ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.bench.bench_step import main

if __name__ == "__main__":
    raise SystemExit(main())
