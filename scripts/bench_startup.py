"""``python scripts/bench_startup.py ...``: the same as
``python -m torch_clip.suite.bench.bench_startup ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.bench.bench_startup import main

if __name__ == "__main__":
    raise SystemExit(main())
