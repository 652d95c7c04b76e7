"""``python scripts/bench_sweep.py ...``: the same as
``python -m torch_clip.suite.bench.bench_sweep ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.bench.bench_sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
