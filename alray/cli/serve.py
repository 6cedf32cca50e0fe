"""``alray serve``: the HTTP API on a local Ray + Serve, in the foreground until Ctrl-C."""

from __future__ import annotations

import time

import typer

from alray.cli import app
from alray.cli._common import console, err_console, fail, store_uri

APP_NAME = "alray"


def check_bind(host: str, token: str | None) -> str | None:
    """Why the API must not listen on ``host`` (None when it may): without a token, anyone
    who reaches the port could use the API, so only loopback addresses are allowed."""
    from alray.api._state import is_loopback

    if token or is_loopback(host):
        return None
    return (
        f"refusing to serve on {host} without a token: anyone who reaches it could use the API. "
        "Set ALRAY_API_TOKEN (clients then send 'Authorization: Bearer <token>'), "
        "or serve on --host 127.0.0.1"
    )


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on"),
) -> None:
    """Start a local Ray and Serve with the HTTP API and print its URL (Ctrl-C stops it)."""
    from alray.settings import load_settings

    settings = load_settings()
    problem = check_bind(host, settings.api_token)
    if problem:
        fail(problem, code=2)

    from ray import serve

    from alray._ray import ensure_ray
    from alray.api import build_app

    ensure_ray(settings.ray_address, settings.num_cpus)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(store_uri()), name=APP_NAME, route_prefix="/", blocking=False)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"alray dashboard at http://{shown}:{port}/ and API at http://{shown}:{port}/api")
    console.print(f"store {store_uri()}")
    console.print(f"OpenAPI spec: http://{shown}:{port}/openapi.json; Ctrl-C stops the server")
    if not settings.api_token:
        err_console.print(
            "no ALRAY_API_TOKEN: listening on loopback only, without authentication",
            style="yellow",
        )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the API")
    finally:
        serve.shutdown()
