"""Tests of the experiment pipeline, its reports and benchmarks (``torch_clip.suite.experiments``,
``.reports``, ``.bench``)."""
