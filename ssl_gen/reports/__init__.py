"""Markdown tables and plots from finished runs: the estimator tables and figures
(`estimator_report`), the discrete-VAE comparison's report (`dvae_report`), training curves
(`curves`). Imported by runners and the trainer; imports neither."""
