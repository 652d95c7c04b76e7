"""``python scripts/plot_heavy_tail.py ...``: the same as
``python -m torch_clip.suite.reports.plot_heavy_tail ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.reports.plot_heavy_tail import main

if __name__ == "__main__":
    raise SystemExit(main())
