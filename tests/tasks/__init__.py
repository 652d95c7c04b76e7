"""Tests of ``torch_clip.tasks``: each task and the contract they share."""
