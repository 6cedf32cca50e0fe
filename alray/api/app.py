"""The HTTP API: a FastAPI app served by a Ray Serve deployment.

:func:`create_app` builds the FastAPI app around one replica's :class:`ApiState`;
:class:`AlrayAPI` is the Serve deployment (autoscaled replicas, FastAPI ingress) and
:func:`build_app` the Serve application that ``alray serve``, ``serve run serve/config.yaml``
and ``serve deploy`` start.

The routes compose with each project's coordinator actor through its handle (awaited, never
blocking the replica's event loop); rank pages come from the replica's cache of the latest
rank version (see :mod:`alray.api._cache`), so a page costs no store round trip. Store reads
and image decoding run in threads.

Safety: every route but ``/healthz`` needs ``Authorization: Bearer <ALRAY_API_TOKEN>`` (compared
in constant time). Without a token the API answers loopback clients only. Every body, query
and path parameter is validated; bad input gets a 4xx whose message names the field and the
fix (:mod:`alray.api._errors`).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime, and
# some name objects local to create_app (the bearer scheme).
import asyncio
import contextlib
import hmac
import io
import logging
import mimetypes
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from ray import serve

from alray import family_settings as fset
from alray.api import dashboard
from alray.api import models as m
from alray.api._errors import ApiError, SafeJSONResponse, Unavailable, install
from alray.api._state import ApiState, is_loopback
from alray.coordinator import NAMESPACE, normalize_store, write_inbox
from alray.families import FAMILIES
from alray.project import Project, list_projects, read_uri
from alray.settings import load_settings

log = logging.getLogger("alray.api")

MAX_UPLOAD_BYTES = 50 << 20  # label files
SSE_HEARTBEAT_S = 15

ProjectName = Annotated[
    str, Path(pattern=m.NAME_PATTERN, description="Project name (1-64 letters, digits, _ - .)")
]
FamilyName = Annotated[m.Family, Path(description="Model family")]
RunId = Annotated[str, Path(pattern=m.RUN_ID_PATTERN, description="Run id, e.g. r000001")]
WebhookId = Annotated[str, Path(pattern=m.WEBHOOK_ID_PATTERN, description="Webhook id")]
ImageId = Annotated[str, Path(pattern=m.IMAGE_ID_PATTERN, description="Image id (16 hex)")]

_ERRORS: dict[int, dict[str, Any]] = {
    code: {"model": m.ErrorBody, "description": text}
    for code, text in (
        (400, "The request body cannot be used (e.g. label file problems)"),
        (401, "Missing or wrong bearer token"),
        (403, "Not allowed from this client or for this path"),
        (404, "No such project, run, webhook, image or ranking"),
        (409, "Conflicts with the current state"),
        (413, "Upload too large"),
        (415, "Unsupported content type"),
        (422, "Invalid parameter or body field; the message names it"),
        (503, "The project's coordinator is restarting; retry"),
    )
}


def _err(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers a route documents beyond the ones every route has (400 401 403 404 422
    503)."""
    return {c: _ERRORS[c] for c in codes}


_COCO_SCHEMA = m.inline_schema(m.CocoDoc)


# ---------------------------------------------------------------------------------- helpers
def _latest_model_version(project: Project, family: str) -> int | None:
    # Read from the store directly: alray.assistants would import torch into every replica.
    s = project.store.sub("models", family)
    nums = sorted(
        (int(d[1:]) for d in s.list_dirs() if d.startswith("v") and d[1:].isdigit()), reverse=True
    )
    return next((v for v in nums if s.exists(f"v{v:04d}", "meta.json")), None)


def _model_metas(project: Project, family: str | None) -> list[dict[str, Any]]:
    out = []
    for fam in [family] if family else FAMILIES:
        s = project.store.sub("models", fam)
        nums = sorted(int(d[1:]) for d in s.list_dirs() if d.startswith("v") and d[1:].isdigit())
        for v in nums:
            if s.exists(f"v{v:04d}", "meta.json"):
                meta = s.read_json(f"v{v:04d}", "meta.json")
                out.append({**meta, "version": int(meta.get("version", v)), "family": fam})
    return out


def _project_detail(store_uri: str, name: str) -> dict[str, Any]:
    from alray.api._cache import _latest_rank_version

    project = Project.open(name, store_uri)
    info = project.info()
    counts = project.counts()
    families = {}
    for fam in FAMILIES:
        labeled = sum(d["families"][fam]["labeled"] for d in counts)
        unlabeled = sum(d["families"][fam]["unlabeled"] for d in counts)
        families[fam] = {
            "labeled": labeled,
            "unlabeled": unlabeled,
            "model_version": _latest_model_version(project, fam),
            "rank_version": _latest_rank_version(project, fam),
        }
    return {
        "name": name,
        "created": info.get("created"),
        "images": sum(d["images"] for d in counts),
        "datasets": counts,
        "families": families,
    }


def _result_page(table: Any, offset: int, limit: int) -> dict[str, Any]:
    cols = ["rank", "image_id", "file_name", "dataset", "score"]
    page = table.select(cols).slice(offset, limit).to_pylist()
    return {"total": table.num_rows, "offset": offset, "limit": limit, "items": page}


def _thumbnail(data: bytes, size: int) -> bytes:
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        img = ImageOps.exif_transpose(img)
        img.thumbnail((size, size))
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGBA")
            flat = Image.new("RGB", img.size, (255, 255, 255))
            flat.paste(img, mask=img.getchannel("A"))
            img = flat
        out = io.BytesIO()
        img.save(out, "JPEG", quality=85)
        return out.getvalue()


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"body: {int(declared)} bytes is over the {limit >> 20} MB limit; split the file"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body: over the {limit >> 20} MB limit; split the file")
        chunks.append(chunk)
    return b"".join(chunks)


def _import_labels(store_uri: str, name: str, raw: bytes, kind: str, skip_invalid: bool) -> dict:
    project = Project.open(name, store_uri)
    with tempfile.TemporaryDirectory(prefix="alray-labels-") as d:
        path = os.path.join(d, f"upload.{'json' if kind == 'coco' else 'csv'}")
        with open(path, "wb") as f:
            f.write(raw)
        try:
            report = project.import_labels(**{kind: path}, skip_invalid=skip_invalid)
        except (TypeError, KeyError, IndexError, AttributeError) as e:
            # a file of the right type but not the expected structure
            raise ApiError(
                400, f"body: not a usable {kind.upper()} label file ({type(e).__name__}: {e})"
            ) from None
        except ValueError as e:  # LabelImportError (with its problems) or a malformed file
            msg = str(e).replace(path, "the uploaded file")
            msg = msg.replace("--skip-invalid", "?skip_invalid=true")
            raise ApiError(400, f"body: {msg}", problems=getattr(e, "problems", None)) from None
    if report.problems and not any(report.annotations.values()):
        # skip_invalid kept nothing: every label was invalid, so the upload did nothing
        raise ApiError(
            400,
            f"body: none of the {len(report.problems)} label(s) is valid; nothing was imported",
            problems=report.problems,
        )
    return report.to_dict()


def _check_coco(raw: bytes) -> None:
    """Refuse a JSON body that is not COCO-shaped, naming the field (the importer's messages
    would name a temporary file, and it trusts the structure)."""
    try:
        m.CocoDoc.model_validate_json(raw)
    except ValidationError as err:
        problems = err.errors()
        if any(e["type"] == "json_invalid" for e in problems):
            msg = "body: not valid JSON; send a COCO JSON object"
            raise ApiError(400, msg, field="body") from None
        fields = [
            {"field": ".".join(["body", *map(str, e["loc"])]), "message": e["msg"]}
            for e in problems[:20]
        ]
        detail = "not COCO JSON: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        raise ApiError(422, detail, field=fields[0]["field"]) from None


def _webhook(project: str, hooks: list[dict[str, Any]], webhook_id: str) -> dict[str, Any]:
    for h in hooks:
        if h.get("id") == webhook_id:
            return h
    known = ", ".join(h.get("id", "?") for h in hooks) or "none"
    raise ApiError(404, f"no webhook {webhook_id!r} in project {project!r}; webhooks: {known}")


# ---------------------------------------------------------------------------------- the app
def _lifespan(state: ApiState) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.close()  # stop the notification listeners with the replica

    return lifespan


def create_app(state: ApiState) -> FastAPI:
    """The FastAPI app of one replica (also usable on its own, e.g. under uvicorn)."""
    app = FastAPI(
        title="alray",
        version="0.1.0",
        description="Active learning on Ray: rank unlabeled images, runs, settings, labels, "
        "notifications. Authenticate with `Authorization: Bearer <ALRAY_API_TOKEN>`.",
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
        lifespan=_lifespan(state),
    )
    install(app)
    bearer = HTTPBearer(auto_error=False, description="ALRAY_API_TOKEN")

    async def authorize(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if state.token is None:  # no token: this machine only
            client = request.client.host if request.client else None
            if not is_loopback(client):
                raise ApiError(
                    403,
                    "this server has no ALRAY_API_TOKEN, so it answers this machine only; "
                    "set ALRAY_API_TOKEN on the server to allow other hosts",
                )
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="alray"'}
        if credentials is None:
            raise ApiError(
                401,
                "header.Authorization: missing; send 'Authorization: Bearer <ALRAY_API_TOKEN>'",
                field="header.Authorization",
                headers=challenge,
            )
        given = credentials.credentials.encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, state.token.encode("utf-8")):
            raise ApiError(
                401,
                "header.Authorization: wrong token; send the server's ALRAY_API_TOKEN",
                field="header.Authorization",
                headers=challenge,
            )

    @app.get("/healthz", response_model=m.Health, tags=["health"])
    async def healthz() -> dict[str, Any]:
        """Liveness: no token needed, tells nothing about the projects."""
        return {"status": "ok", "auth": state.token is not None}

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorize)])
    async def openapi() -> dict[str, Any]:
        return app.openapi()

    api = APIRouter(
        prefix="/api",
        dependencies=[Depends(authorize)],
        responses=_err(400, 401, 403, 404, 422, 503),
    )

    # projects ---------------------------------------------------------------------------------
    @api.get("/projects", response_model=m.ProjectList, tags=["projects"])
    async def get_projects() -> dict[str, Any]:
        """The projects in the store."""

        def read() -> list[dict[str, Any]]:
            out = []
            for name in list_projects(state.store_uri):
                try:
                    created = Project.open(name, state.store_uri).info().get("created")
                except Exception:  # a half-written project.json: list it anyway
                    created = None
                out.append({"name": name, "created": created})
            return out

        return {"projects": await asyncio.to_thread(read)}

    @api.post(
        "/projects",
        response_model=m.ProjectCreated,
        status_code=201,
        responses=_err(409),
        tags=["projects"],
    )
    async def create_project(req: m.ProjectCreate) -> dict[str, Any]:
        """Create a project, registering images from a folder or a URI list on the server."""
        if (req.images is None) == (req.list_file is None):
            raise ApiError(
                422,
                "body: give images (a folder on the server) or list_file (a CSV/Parquet of "
                "image URIs), exactly one",
                field="body",
            )
        for field in ("images", "list_file"):
            path = getattr(req, field)
            if path is None:
                continue
            state.check_server_path(path, field)
            from alray._fs import is_uri

            local = path.removeprefix("file://")
            if (not is_uri(path) or path.startswith("file://")) and not (
                os.path.isdir(local) if field == "images" else os.path.isfile(local)
            ):
                kind = "folder" if field == "images" else "file"
                raise ApiError(
                    422,
                    f"body.{field}: no {kind} {path!r} on the server; give a path the server "
                    "can read",
                    field=f"body.{field}",
                )

        def run() -> dict[str, Any]:
            project = Project.create(req.name, state.store_uri)
            report = project.add_images(req.images, list_file=req.list_file, dataset=req.dataset)
            created = project.info().get("created")
            return {"name": req.name, "created": created, "images": report.to_dict()}

        return await asyncio.to_thread(run)

    @api.get("/projects/{project}", response_model=m.ProjectDetail, tags=["projects"])
    async def get_project(project: ProjectName) -> dict[str, Any]:
        """Images per dataset, labeled and unlabeled per family, latest model and rank versions."""
        return await asyncio.to_thread(_project_detail, state.store_uri, project)

    # ranks ------------------------------------------------------------------------------------
    @api.get("/projects/{project}/ranks", response_model=m.RankPage, tags=["ranks"])
    async def get_ranks(
        project: ProjectName,
        family: Annotated[m.Family, Query(description="Model family")],
        dataset: Annotated[str | None, Query(pattern=m.NAME_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=m.MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> Response:
        """A page of the family's unlabeled images, most informative first (heuristic none:
        alphabetical). Answered from this replica's cache of the latest rank version."""
        view = await state.ranks.get(project, family)
        if dataset is not None and dataset not in view.datasets:
            known = ", ".join(sorted(view.datasets)) or "none"
            raise ApiError(
                404,
                f"query.dataset: no dataset {dataset!r} in this ranking; datasets: {known}",
                field="query.dataset",
            )
        total, items = view.page(offset, limit, dataset)
        meta = view.meta
        return SafeJSONResponse(
            {
                "project": project,
                "family": family,
                "source": view.source,
                "version": view.version,
                "model_version": meta.get("model_version"),
                "heuristic": meta.get("heuristic", "none"),
                "reduction": meta.get("reduction"),
                "ranked_at": meta.get("created"),
                "dataset": dataset,
                "total": total,
                "offset": offset,
                "limit": limit,
                "items": items,
            }
        )

    # settings ---------------------------------------------------------------------------------
    @api.get("/projects/{project}/settings", response_model=m.AllSettings, tags=["settings"])
    async def get_all_settings(project: ProjectName) -> dict[str, Any]:
        return {"families": await state.call(project, "get_settings")}

    @api.put("/projects/{project}/settings", response_model=m.AllSettingsChange, tags=["settings"])
    async def put_all_settings(project: ProjectName, req: m.AllSettingsUpdate) -> dict[str, Any]:
        """Change several families' settings; each family is checked before any is changed."""
        changes = {f: u.model_dump(exclude_unset=True) for f, u in req.families.items()}
        current = await state.call(project, "get_settings")
        for family, change in changes.items():
            try:
                fset.FamilySettings(**current[family]).with_changes(**change)
            except fset.FamilySettingsError as e:
                where = f"body.families.{family}"
                raise ApiError(422, f"{where}: {e}", field=where) from None
        out = {}
        for family, change in changes.items():
            out[family] = await state.call(project, "set_settings", family, **change)
            state.ranks.invalidate(project, family)  # heuristic none ↔ ranked changes the view
        return {"families": out}

    @api.get(
        "/projects/{project}/settings/{family}",
        response_model=m.FamilySettingsOut,
        tags=["settings"],
    )
    async def get_family_settings(project: ProjectName, family: FamilyName) -> dict[str, Any]:
        return await state.call(project, "get_settings", family)

    @api.put(
        "/projects/{project}/settings/{family}",
        response_model=m.SettingsChange,
        tags=["settings"],
    )
    async def put_family_settings(
        project: ProjectName, family: FamilyName, req: m.FamilySettingsUpdate
    ) -> dict[str, Any]:
        """Change one family's settings (fields left out keep their value)."""
        change = req.model_dump(exclude_unset=True)
        out = await state.call(project, "set_settings", family, **change)
        state.ranks.invalidate(project, family)
        return out

    # labels, training, models -----------------------------------------------------------------
    @api.post(
        "/projects/{project}/labels",
        response_model=m.LabelsImported,
        responses=_err(413, 415),
        tags=["labels"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _COCO_SCHEMA},
                    "text/csv": {
                        "schema": {"type": "string", "description": "CSV with image,label"}
                    },
                },
            }
        },
    )
    async def post_labels(
        project: ProjectName,
        request: Request,
        skip_invalid: Annotated[
            bool, Query(description="Import the valid labels, report the rest")
        ] = False,
    ) -> dict[str, Any]:
        """Import labels (COCO JSON or CSV ``image,label``, at most 50 MB); the labeled images
        count toward the families' automatic retraining."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype in ("application/json", "text/json"):
            kind = "coco"
        elif ctype in ("text/csv", "application/csv", "text/plain"):
            kind = "csv"
        else:
            raise ApiError(
                415,
                f"header.Content-Type: {ctype or 'none'} is not a label format; send COCO JSON "
                "as application/json or CSV (image,label) as text/csv",
                field="header.Content-Type",
            )
        raw = await _read_body(request, MAX_UPLOAD_BYTES)
        if not raw.strip():
            raise ApiError(400, "body: empty; send a label file", field="body")
        if kind == "coco":
            _check_coco(raw)
        await asyncio.to_thread(Project.open, project, state.store_uri)  # 404 first
        report = await asyncio.to_thread(
            _import_labels, state.store_uri, project, raw, kind, skip_invalid
        )
        state.ranks.invalidate(project)  # this replica never serves the new labels as unlabeled
        counts = {f: n for f, n in report["images"].items() if n}
        report["retraining"], report["queued"] = {}, False
        if counts:
            try:
                report["retraining"] = await state.call(project, "labels_added", counts)
            except Exception as e:  # the labels are stored; the counts wait for the coordinator
                log.warning("alray api: labels_added failed (%s); writing the inbox", e)
                await asyncio.to_thread(write_inbox, Project.open(project, state.store_uri), counts)
                report["queued"] = True
        return report

    @api.post(
        "/projects/{project}/train",
        response_model=m.TrainStarted,
        status_code=202,
        tags=["models"],
    )
    async def post_train(project: ProjectName, req: m.TrainRequest) -> dict[str, Any]:
        """Train the family now (a training in flight is not doubled); a ``model_trained`` or
        ``training_failed`` notification tells the outcome."""
        job = await state.call(project, "train", req.family, epochs=req.epochs)
        return {**job, "family": req.family}

    @api.get("/projects/{project}/models", response_model=m.ModelList, tags=["models"])
    async def get_models(
        project: ProjectName, family: Annotated[m.Family | None, Query()] = None
    ) -> dict[str, Any]:
        def read() -> list[dict[str, Any]]:
            return _model_metas(Project.open(project, state.store_uri), family)

        return {"models": await asyncio.to_thread(read)}

    # runs -------------------------------------------------------------------------------------
    @api.post("/projects/{project}/runs", response_model=m.RunOut, status_code=202, tags=["runs"])
    async def post_run(project: ProjectName, req: m.RunCreate) -> dict[str, Any]:
        """Queue a ranks-on-demand run; follow it at ``GET …/runs/{id}`` or by notification."""
        heuristic = req.heuristic
        if heuristic is None:
            heuristic = (await state.call(project, "get_settings", req.family))["heuristic"]
        return await state.call(
            project,
            "create_run",
            name=req.name,
            family=req.family,
            heuristic=heuristic,
            n=req.n,
            datasets=req.datasets,
            reduction=req.reduction,
        )

    @api.get("/projects/{project}/runs", response_model=m.RunList, tags=["runs"])
    async def get_runs(
        project: ProjectName, status: Annotated[m.RunStatus | None, Query()] = None
    ) -> dict[str, Any]:
        return {"runs": await state.call(project, "list_runs", status)}

    @api.get("/projects/{project}/runs/{run_id}", response_model=m.RunDetail, tags=["runs"])
    async def get_run(
        project: ProjectName,
        run_id: RunId,
        limit: Annotated[int, Query(ge=1, le=m.MAX_PAGE, description="Result rows")] = 100,
        offset: Annotated[int, Query(ge=0, le=m.MAX_RUN_N)] = 0,
    ) -> dict[str, Any]:
        """A run's status and progress and, once completed, a page of its result."""
        run = await state.call(project, "get_run", run_id)
        if run.get("status") == "completed":
            table = await state.run_result(project, run_id)
            run["result"] = _result_page(table, offset, limit)
        return run

    @api.post("/projects/{project}/runs/{run_id}/cancel", response_model=m.RunOut, tags=["runs"])
    async def cancel_run(project: ProjectName, run_id: RunId) -> dict[str, Any]:
        return await state.call(project, "cancel_run", run_id)

    # notifications ----------------------------------------------------------------------------
    @api.get(
        "/projects/{project}/notifications",
        response_model=m.NotificationList,
        tags=["notifications"],
    )
    async def get_notifications(
        project: ProjectName,
        after: Annotated[int, Query(ge=0, description="Only ids above this")] = 0,
        limit: Annotated[int, Query(ge=1, le=m.MAX_PAGE)] = 100,
        types: Annotated[list[m.NotificationType] | None, Query()] = None,
    ) -> dict[str, Any]:
        items = await state.call(project, "notifications_after", after, limit, types)
        status = await state.call(project, "status")
        return {
            "items": items,
            "last_id": status.get("last_notification", 0),
            "unread": status.get("unread", 0),
        }

    @api.get(
        "/projects/{project}/notifications/stream",
        tags=["notifications"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def stream_notifications(
        project: ProjectName,
        request: Request,
        after: Annotated[int, Query(ge=0, description="Only ids above this")] = 0,
        types: Annotated[list[m.NotificationType] | None, Query()] = None,
        heartbeat: Annotated[int, Query(ge=1, le=60, description="Seconds between pings")] = (
            SSE_HEARTBEAT_S
        ),
        last_event_id: Annotated[str | None, Header(pattern=r"^[0-9]{1,18}$")] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: each notification as it is stored (``id``, ``event`` = type,
        ``data`` = JSON); a reconnecting client resumes after ``Last-Event-ID``."""
        start = int(last_event_id) if last_event_id else after
        await state.coordinator(project)  # 404 before the stream starts

        async def events() -> AsyncIterator[str]:
            last = start
            yield f"retry: 3000\n: alray notifications of {project} after {last}\n\n"
            while not await request.is_disconnected():
                try:
                    found = await state.call(
                        project, "wait_notifications", last, float(heartbeat), 100, types
                    )
                except Unavailable:  # the coordinator restarts: keep the stream, poll again
                    yield ": coordinator restarting\n\n"
                    await asyncio.sleep(2.0)
                    continue
                if not found:
                    yield ": ping\n\n"
                    continue
                for n in found:
                    last = max(last, int(n["id"]))
                    data = SafeJSONResponse(n).body.decode()
                    yield f"id: {n['id']}\nevent: {n['type']}\ndata: {data}\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.post(
        "/projects/{project}/notifications/read",
        response_model=m.ReadState,
        tags=["notifications"],
    )
    async def mark_read(
        project: ProjectName, req: Annotated[m.MarkRead | None, Body()] = None
    ) -> dict[str, Any]:
        """Mark notifications read up to an id (default: all)."""
        return await state.call(project, "mark_read", req.up_to if req else None)

    # webhooks ---------------------------------------------------------------------------------
    @api.get("/projects/{project}/webhooks", response_model=m.WebhookList, tags=["webhooks"])
    async def get_webhooks(project: ProjectName) -> dict[str, Any]:
        return {"webhooks": await state.call(project, "list_webhooks")}

    @api.post(
        "/projects/{project}/webhooks",
        response_model=m.WebhookOut,
        status_code=201,
        tags=["webhooks"],
    )
    async def post_webhook(project: ProjectName, req: m.WebhookCreate) -> dict[str, Any]:
        """Register a receiver; every later notification is POSTed to it, signed with the
        secret (``X-Alray-Signature: sha256=<hmac>``)."""
        options = req.model_dump(exclude_unset=True, exclude={"url", "secret"})
        return await state.call(project, "add_webhook", req.url, req.secret, **options)

    @api.get(
        "/projects/{project}/webhooks/{webhook_id}",
        response_model=m.WebhookOut,
        tags=["webhooks"],
    )
    async def get_webhook(project: ProjectName, webhook_id: WebhookId) -> dict[str, Any]:
        return _webhook(project, await state.call(project, "list_webhooks"), webhook_id)

    @api.delete(
        "/projects/{project}/webhooks/{webhook_id}",
        response_model=m.WebhookOut,
        tags=["webhooks"],
    )
    async def delete_webhook(project: ProjectName, webhook_id: WebhookId) -> dict[str, Any]:
        return await state.call(project, "remove_webhook", webhook_id)

    @api.get(
        "/projects/{project}/webhooks/{webhook_id}/deliveries",
        response_model=m.DeliveryList,
        tags=["webhooks"],
    )
    async def get_deliveries(
        project: ProjectName,
        webhook_id: WebhookId,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        return {"deliveries": await state.call(project, "webhook_deliveries", webhook_id, limit)}

    # images -----------------------------------------------------------------------------------
    async def _image(project: str, image_id: str) -> tuple[bytes, str]:
        found = await asyncio.to_thread(state.images.lookup, project, image_id)
        if found is None:
            raise ApiError(
                404,
                f"path.image_id: no image {image_id} in project {project!r}",
                field="path.image_id",
            )
        uri, file_name = found
        try:
            data = await asyncio.to_thread(read_uri, uri)  # a manifest URI, never a client path
        except (FileNotFoundError, OSError) as e:
            raise ApiError(
                404, f"the file of image {image_id} cannot be read ({type(e).__name__})"
            ) from None
        return data, file_name

    image_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
    }

    @api.get(
        "/projects/{project}/images/{image_id}",
        response_class=Response,
        responses=image_responses,
        tags=["images"],
    )
    async def get_image(project: ProjectName, image_id: ImageId) -> Response:
        """The original bytes of a registered image."""
        data, file_name = await _image(project, image_id)
        media = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        return Response(
            data,
            media_type=media,
            headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @api.get(
        "/projects/{project}/images/{image_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {"schema": {"type": "string"}}}}},
        tags=["images"],
    )
    async def get_thumbnail(
        project: ProjectName,
        image_id: ImageId,
        size: Annotated[int, Query(ge=16, le=1024, description="Longest side, pixels")] = 128,
    ) -> Response:
        """A JPEG thumbnail of a registered image (cached in the replica)."""
        key = (project, image_id, size)
        thumb = state.thumbnails.get(key)
        if thumb is None:
            data, _ = await _image(project, image_id)
            try:
                thumb = await asyncio.to_thread(_thumbnail, data, size)
            except Exception as e:  # PIL raises many types for undecodable files
                raise ApiError(
                    422, f"image {image_id} cannot be decoded ({type(e).__name__}: {e})"
                ) from None
            state.thumbnails.put(key, thumb)
        return Response(
            thumb,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    app.include_router(api)
    dashboard.install(app, state, authorize)  # the page at / and its chart route

    return app


# --------------------------------------------------------------------------- Serve deployment
@serve.deployment(
    name="AlrayAPI",
    # I/O-bound: a replica reserves no CPU, so Ray Data scoring on the same machine keeps them
    ray_actor_options={"num_cpus": 0},
    # SSE streams hold a request each: a replica serves many at once
    max_ongoing_requests=1000,
    autoscaling_config={
        "min_replicas": 1,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 64,
        "upscale_delay_s": 10,
        "downscale_delay_s": 120,
    },
)
@serve.ingress()
class AlrayAPI:
    """The API's Serve deployment: each replica builds its own app around its own caches."""

    def __init__(
        self,
        store_uri: str,
        api_token: str | None = None,
        image_roots: list[str] | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        self._state = ApiState(store_uri, api_token, image_roots, namespace)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Built in the replica (not pickled from the driver): the routes close over this
        # replica's state.
        return create_app(self._state)


def build_app(
    store_uri: str | None = None,
    *,
    api_token: str | None = None,
    image_roots: list[str] | None = None,
    namespace: str = NAMESPACE,
) -> serve.Application:
    """The Serve application of the API (give it to ``serve.run``).

    ``store_uri`` and ``api_token`` default to ``ALRAY_STORE`` and ``ALRAY_API_TOKEN``.
    ``image_roots`` limits the server folders ``POST /api/projects`` may read (default: any).
    """
    settings = load_settings()
    store = normalize_store(store_uri or settings.store)
    token = settings.api_token if api_token is None else api_token
    if not token:
        log.warning(
            "alray api: no ALRAY_API_TOKEN set: the API answers loopback clients only, "
            "without authentication"
        )
    return AlrayAPI.bind(store, token or None, image_roots, namespace)
