"""The benchmarks: the optimizer step (``bench_step``, built from ``workload`` (parameters,
gradients, shared state), ``contenders`` (the steps to time), ``timing`` (the round-robin clock
and the per-step probes) and ``report`` (ratios, target checks, the Markdown and CSV files)), the
sharded step (``bench_sharded``) and the suite's per-run overhead (``measure_overhead``)."""
