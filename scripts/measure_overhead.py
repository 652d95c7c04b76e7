"""``python scripts/measure_overhead.py ...``: the same as
``python -m torch_clip.suite.bench.measure_overhead ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.bench.measure_overhead import main

if __name__ == "__main__":
    raise SystemExit(main())
