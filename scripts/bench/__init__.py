"""The parts of ``scripts/bench_step.py``, one job each: ``workload`` (parameters, gradients,
shared state), ``contenders`` (the steps to time), ``timing`` (the round-robin clock and the
per-step probes) and ``report`` (ratios, target checks, the Markdown and CSV files)."""
