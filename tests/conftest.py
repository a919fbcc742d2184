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

# Tests are dominated by compilation of tiny programs: XLA's optimization passes cost more
# than they save there (about 2x faster compiles measured on the train step). A test that
# times or stresses the compiled code can turn them back on locally.
jax.config.update("jax_disable_most_optimizations", True)

# SSL_GEN_X64=1 runs the suite with 64-bit types on (`jax_enable_x64`), the mode a user who
# needs float64 works in; tests/test_x64.py runs the structured/ and estimators/ tests this
# way in a subprocess. Set before any array exists: the flag changes default dtypes.
X64 = os.environ.get("SSL_GEN_X64", "").lower() in ("1", "true", "yes")
if X64:
    jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def devices():
    assert len(jax.devices()) == 8, "conftest must run before jax initializes its backend"
    return jax.devices()


def pytest_collection_modifyitems(config, items):
    """Modules with `slow` tests first, each module's tests in their order: under
    pytest-xdist (`make test` runs 2 workers) the long modules (notebooks, CLI launches, the
    x64 run) start at once, and the many short ones fill in around them instead of one long
    module ending the run on one worker while the other idles."""
    del config
    modules = {}
    for i, item in enumerate(items):
        first, slow = modules.get(item.path, (i, False))
        modules[item.path] = (first, slow or item.get_closest_marker("slow") is not None)
    order = {path: (not slow, first) for path, (first, slow) in modules.items()}
    items.sort(key=lambda item: order[item.path])  # stable: within a module, as collected
