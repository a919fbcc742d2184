"""Shared by the data tests: one temporary tfds data dir per session (never the home dir)."""

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))
