"""How errors become HTTP answers: a 4xx JSON body that says what is wrong and how to fix it.

The library raises plain exceptions (``ProjectError``, ``RunError``, ``WebhookError``,
``FamilySettingsError``, ``LookupError``…); this module is the one place that maps them to status
codes, so a route never has to. Nothing a client sends should reach the catch-all 500.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from alray.project import LabelImportError, ProjectError
from alray.runs import RunError
from alray.webhooks import WebhookError

log = logging.getLogger("alray.api")


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere in a route."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        problems: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.problems = problems or []
        self.headers = headers


class Unavailable(Exception):
    """The coordinator (or Ray) cannot be reached right now: 503, try again."""


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as null: JSON has no NaN, and a stored notification or
    score may hold one."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on NaN (strict JSON first; the slow clean-up only when needed)."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")


def body(status: int, detail: str, **extra: Any) -> SafeJSONResponse:
    payload: dict[str, Any] = {"detail": detail, "errors": [], "problems": []}
    payload.update({k: v for k, v in extra.items() if k in ("errors", "problems")})
    return SafeJSONResponse(payload, status_code=status, headers=extra.get("headers"))


def classify(exc: BaseException) -> tuple[int, str]:
    """The status code for a library error, and its message."""
    msg = str(exc) or type(exc).__name__
    low = msg.lower()
    if isinstance(exc, ApiError):
        return exc.status, exc.detail
    if isinstance(exc, LabelImportError):
        return 400, msg
    # The stores raise "no project/run/webhook …" for ids that are not there.
    if isinstance(exc, (ProjectError, RunError, WebhookError)) and low.startswith(
        ("no project", "no run", "no webhook")
    ):
        return 404, msg
    if isinstance(exc, ProjectError) and "already exists" in low:
        return 409, msg
    if isinstance(exc, RunError) and low.startswith("run ") and "already" in low:
        return 409, msg  # cancelling a finished run; asking for an unfinished run's result
    if isinstance(exc, RunError) and "only completed runs" in low:
        return 409, msg
    if isinstance(exc, (LookupError, FileNotFoundError)):
        return 404, msg
    if isinstance(exc, ValueError):  # the library's validation errors name the field
        return 422, msg
    return 500, msg


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        head, rest = parts[0], parts[1:]
        return f"{head}.{'.'.join(rest)}" if rest else head
    return ".".join(parts) or "request"


def _hint(e: dict[str, Any]) -> str:
    msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
    kind = e.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field; remove it (see /openapi.json for the fields)"
    if kind == "missing":
        return "required; add it"
    if kind == "json_invalid":
        return f"not valid JSON ({e.get('ctx', {}).get('error', msg)}); send a JSON object"
    if kind == "string_pattern_mismatch":
        pattern = e.get("ctx", {}).get("pattern")
        return f"{msg}; got {e.get('input')!r}" if pattern else msg
    if "input" in e and kind not in ("model_attributes_type", "dict_type", "model_type"):
        shown = repr(e["input"])
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{msg}; got {shown}"
    return msg


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into an ``ErrorBody``."""

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> SafeJSONResponse:
        errors = [{"field": _field(e.get("loc", ())), "message": _hint(e)} for e in exc.errors()]
        detail = "invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return body(422, detail, errors=errors)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> SafeJSONResponse:
        errors = [{"field": exc.field, "message": exc.detail}] if exc.field else []
        return body(
            exc.status, exc.detail, errors=errors, problems=exc.problems, headers=exc.headers
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> SafeJSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route; see /openapi.json for the routes"
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "body: cannot be read; send UTF-8 JSON with Content-Type application/json"
        return body(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> SafeJSONResponse:
        return body(503, str(exc), headers={"Retry-After": "5"})

    async def _library(_: Request, exc: Exception) -> SafeJSONResponse:
        status, detail = classify(exc)
        if status >= 500:
            log.exception("alray api: unexpected error", exc_info=exc)
            detail = f"internal error ({type(exc).__name__}); the replica log has the traceback"
        problems = list(getattr(exc, "problems", []) or [])
        return body(status, detail, problems=problems)

    for exc_type in (ValueError, LookupError, FileNotFoundError, Exception):
        app.add_exception_handler(exc_type, _library)
