"""The figures and tables of the experiments: the shared plotting helpers (``plotting``), the
comparison and heavy-tail figures (``plot_comparison``, ``plot_heavy_tail``), the regime map's and
the language model's reports, and ``summarize`` (one table of a sweep's runs)."""
