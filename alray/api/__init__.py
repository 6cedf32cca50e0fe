"""alray's HTTP API on Ray Serve: rank pages, runs, settings, labels, notifications.

>>> from alray.api import build_app  # doctest: +SKIP
>>> serve.run(build_app("/data/alray-store"))  # doctest: +SKIP
"""

from alray.api.app import AlrayAPI, build_app, create_app

__all__ = ["AlrayAPI", "build_app", "create_app"]
