"""Attach to the configured Ray, or start a local one (the one place alray calls ray.init)."""

from __future__ import annotations

import os

from alray.settings import load_settings


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Make sure this process is connected to Ray.

    Order: already connected → nothing to do; ``address`` or ``ALRAY_RAY_ADDRESS`` → join that
    cluster; ``RAY_ADDRESS`` set (inside ``ray job submit``) → join it (``address="auto"``);
    otherwise start a local Ray without the dashboard (``ALRAY_NUM_CPUS`` CPUs, default all).
    """
    import ray

    if ray.is_initialized():
        return
    settings = load_settings()
    address = address or settings.ray_address
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return
    ray.init(
        include_dashboard=False,
        num_cpus=num_cpus if num_cpus is not None else settings.num_cpus,
        log_to_driver=False,
        configure_logging=False,
    )
