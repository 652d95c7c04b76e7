"""``python scripts/lm_noise_probe.py ...``: the same as
``python -m torch_clip.suite.experiments.lm_noise_probe ...``
(that module's docstring says what it does and how to run it)."""

from torch_clip.suite.experiments.lm_noise_probe import main

if __name__ == "__main__":
    raise SystemExit(main())
