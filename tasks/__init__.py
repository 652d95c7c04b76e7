"""The benchmark tasks (installed as torch_clip.tasks)."""
