"""The experiment pipeline: the sweeps and their protocol (``sweeps``), the comparisons
(``tuned_comparison``, ``regime_map``, ``lm_comparison``), the noise probes (``noise_probe``,
``tail_over_training``, ``lm_noise_probe``), ``reproduce_readme`` (every README figure and table)
and the provenance stamp of what they write. Each driver runs as ``python -m`` on its module;
``scripts/<name>.py`` is the same command."""
