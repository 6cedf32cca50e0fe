"""The Serve application of alray's HTTP API, for ``serve run`` / ``serve deploy``.

Thin on purpose: everything lives in :mod:`alray.api`. The store comes from ``ALRAY_STORE`` and
the bearer token from ``ALRAY_API_TOKEN`` (set them in the environment, or in the config's
``runtime_env.env_vars``); without a token the API answers loopback clients only.
"""

import os

import alray.api

app = alray.api.build_app(os.environ.get("ALRAY_STORE"))
