"""A moto S3 server on loopback: the stand-in for a cluster's bucket, shared by the tests of
the S3 store and of clusters that read from it."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[dict]:
    """Start a server with ``bucket`` in it, with the AWS variables set for this process;
    yields ``{"query", "fs", "env"}``: the endpoint as a store URI's query string, a pyarrow
    filesystem on it, and the variables other processes need. Restores them on exit."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # else a log line per request
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fs = pafs.S3FileSystem(
            endpoint_override=f"{host}:{port}",
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )
        fs.create_dir(bucket)
        query = f"endpoint_override={host}:{port}&scheme=http"
        yield {"query": query, "fs": fs, "env": CREDENTIALS}
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
