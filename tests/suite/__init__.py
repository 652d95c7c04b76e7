"""Tests of ``torch_clip.suite``: train.py, the trainer, its configs, records and launchers."""
