"""The benchmark suite's run machinery: records, loggers, checkpoints, distributed set-up, the loop.

Used by ``train.py`` from a checkout of the repository; ``clip_core`` never imports it.
"""
