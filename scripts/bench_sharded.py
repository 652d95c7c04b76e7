"""``python scripts/bench_sharded.py ...``: the same as
``python -m torch_clip.suite.bench.bench_sharded ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.bench.bench_sharded import main

if __name__ == "__main__":
    raise SystemExit(main())
