"""Runs that are not one training run: each `run(config, workdir)`."""
