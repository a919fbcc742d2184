"""Test set-up: 8 fake CPU devices, so every test sees the data-parallel code path.

XLA reads the flag once, when the backend starts, so it is set before anything imports jax.
Tests that need one device build a one-device mesh explicitly.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep tfds quiet and away from the network and from the user's real data dir.
os.environ.setdefault("TFDS_DISPLAY_PROGRESS_BAR", "0")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    assert len(jax.devices()) == 8, "conftest must run before jax initializes its backend"
    return jax.devices()
