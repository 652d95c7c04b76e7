"""The benchmark suite's run machinery (installed as ``torch_clip.suite``): records, loggers,
checkpoints, distributed set-up, the loop; the experiments, their reports and the benchmarks in
the subpackages ``experiments``, ``reports`` and ``bench``.

Used by ``train.py`` from a checkout of the repository; ``clip_core`` never imports it.
"""
