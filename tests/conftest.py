"""Shared fixtures: one Ray instance per test session (Ray takes seconds to start here)."""

from __future__ import annotations

import os

import pytest

# The `ray job` CLI and local clusters must agree on auth; tests run without token auth.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with both CPUs, shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    # shut down at the end of the session by Ray's own atexit hook
