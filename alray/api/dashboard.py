"""The Active Learning dashboard: a static page at ``/`` on the API app, and the one read-only
route its charts need.

The page (``alray/api/static/``: HTML, CSS and JavaScript modules, no build step) holds no data,
so ``/`` and ``/static/...`` are open; everything it shows comes from the ``/api`` routes with the
bearer token the page asks for. ``GET /api/projects/{p}/ranks/history?family=`` gives a family's
score histogram (of the images it serves now) and how the ranking moved between its last two
rank versions: the API's rank pages only serve the latest version.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
import asyncio
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, FastAPI, Path, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from alray import family_settings as fset
from alray import ranking, ranks
from alray.api import models as m
from alray.api._cache import RankView
from alray.api._errors import SafeJSONResponse
from alray.api._state import ApiState
from alray.project import Project

STATIC = FsPath(__file__).with_name("static")
VERSIONS_LISTED = 10
_NO_CACHE = {"Cache-Control": "no-cache"}  # the page: always revalidated, so upgrades show


class Histogram(BaseModel):
    edges: list[float] = Field(description="Bin edges, one more than counts")
    counts: list[int]
    count: int = Field(description="Scored images counted")
    min: float | None = None
    max: float | None = None
    mean: float | None = None


class RankVersionInfo(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: int
    model_version: int | None = None
    heuristic: str | None = None
    reduction: str | None = None
    created: str | None = None
    images: int | None = None


class RankChange(BaseModel):
    previous_version: int
    version: int
    previous_heuristic: str | None = None
    heuristic: str | None = None
    previous_model_version: int | None = None
    model_version: int | None = None
    top_n: int
    overlap: int
    overlap_fraction: float
    entered_count: int
    left_count: int
    spearman: float | None = None
    common: int
    changed: bool


class RankMove(BaseModel):
    image_id: str
    file_name: str
    dataset: str
    rank: int
    previous_rank: int | None = Field(description="Rank in the previous version (null: absent)")
    score: float | None = None


class RankHistory(BaseModel):
    project: str
    family: str
    source: str = Field(description="ranks, or alphabetical (heuristic none)")
    version: int | None
    model_version: int | None = None
    heuristic: str
    histogram: Histogram | None = Field(description="Scores of the images served now")
    versions: list[RankVersionInfo] = Field(description="The last rank versions, newest first")
    change: RankChange | None = Field(description="Last rank version against the one before")
    moves: list[RankMove] = Field(description="Top of the last version with previous ranks")


def _histogram(scores: pa.ChunkedArray, bins: int) -> dict[str, Any] | None:
    values = scores.drop_null().to_numpy()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
        "count": int(values.size),
        "min": lo,
        "max": hi,
        "mean": float(values.mean()),
    }


def _unlabeled_ids(table: pa.Table, labeled: pa.Array) -> np.ndarray:
    kept = table.filter(pc.invert(pc.is_in(table["image_id"], labeled)))
    return kept["image_id"].to_numpy(zero_copy_only=False)


def _history(
    store_uri: str, project: str, family: str, view: RankView, bins: int, top: int
) -> dict[str, Any]:
    """Blocking: reads rank metas and, for the change, the previous version's ids and ranks."""
    p = Project.open(project, store_uri)
    numbers = ranks.list_versions(p, family)
    metas = [ranks.read_meta(p, family, v) for v in reversed(numbers[-VERSIONS_LISTED:])]
    versions = [
        {
            **{k: meta.get(k) for k in ("model_version", "heuristic", "reduction", "created")},
            "version": v,
            "images": meta.get("images"),
        }
        for v, meta in zip(reversed(numbers[-VERSIONS_LISTED:]), metas, strict=True)
    ]
    out: dict[str, Any] = {
        "project": project,
        "family": family,
        "source": view.source,
        "version": view.version,
        "model_version": view.meta.get("model_version"),
        "heuristic": view.meta.get("heuristic", "none"),
        "histogram": _histogram(view.table["score"], bins) if view.source == "ranks" else None,
        "versions": versions,
        "change": None,
        "moves": [],
    }
    if len(numbers) < 2:
        return out
    # Like the coordinator's ranks_changed summary: over the images unlabeled now, so images
    # labeled since the previous version did not "leave" the top, they were labeled.
    cur_v, prev_v = numbers[-1], numbers[-2]
    cur_meta, prev_meta = metas[0], metas[1]
    labeled = p.labeled_ids(family)
    cur = ranks.read_version(p, family, cur_v)
    prev = p.store.read_parquet(
        "ranks", family, f"v{prev_v:04d}", "ranks.parquet", columns=["image_id", "rank"]
    )
    if prev is None:
        prev = pa.table({"image_id": pa.array([], pa.string()), "rank": pa.array([], pa.int64())})
    top_n = fset.load(p.store)[family].top_n
    change = ranking.rank_change(_unlabeled_ids(prev, labeled), _unlabeled_ids(cur, labeled), top_n)
    out["change"] = {
        "previous_version": prev_v,
        "version": cur_v,
        "previous_heuristic": prev_meta.get("heuristic"),
        "heuristic": cur_meta.get("heuristic"),
        "previous_model_version": prev_meta.get("model_version"),
        "model_version": cur_meta.get("model_version"),
        **{k: change[k] for k in ("top_n", "overlap", "overlap_fraction", "spearman", "common")},
        "entered_count": len(change["entered"]),
        "left_count": len(change["left"]),
        "changed": change["changed"],
    }
    head = cur.filter(pc.invert(pc.is_in(cur["image_id"], labeled))).slice(0, top)
    where = pc.index_in(head["image_id"], value_set=prev["image_id"].combine_chunks())
    before = pc.take(prev["rank"].combine_chunks(), where)  # null: not in the previous version
    out["moves"] = [
        {**row, "previous_rank": b}
        for row, b in zip(
            head.select(["image_id", "file_name", "dataset", "rank", "score"]).to_pylist(),
            before.to_pylist(),
            strict=True,
        )
    ]
    return out


def install(app: FastAPI, state: ApiState, authorize: Callable[..., Any]) -> None:
    """Serve the page at ``/`` and ``/static``, and add the rank history route (with the
    API's ``authorize`` dependency) to ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=_NO_CACHE)

    router = APIRouter(
        prefix="/api",
        dependencies=[Depends(authorize)],
        responses={
            code: {"model": m.ErrorBody, "description": text}
            for code, text in (
                (401, "Missing or wrong bearer token"),
                (403, "Not allowed from this client"),
                (404, "No such project, or no ranks for the family yet"),
                (422, "Invalid parameter; the message names it"),
                (503, "The project's coordinator is restarting; retry"),
            )
        },
    )
    # Per replica: a history only changes with the view it was computed from (its rank version
    # and the labels), so the previous version is read once per new version, not per page load.
    cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    @router.get(
        "/projects/{project}/ranks/history",
        response_model=RankHistory,
        tags=["ranks"],
    )
    async def get_rank_history(
        project: Annotated[str, Path(pattern=m.NAME_PATTERN, description="Project name")],
        family: Annotated[m.Family, Query(description="Model family")],
        bins: Annotated[int, Query(ge=2, le=100, description="Histogram bins")] = 20,
        top: Annotated[int, Query(ge=1, le=200, description="Images in moves")] = 20,
    ) -> SafeJSONResponse:
        """A family's score histogram (images served now) and how its ranking moved between
        the last two rank versions: the summary of the ``ranks_changed`` notification, and the
        top images of the last version with their previous ranks (for the dashboard)."""
        view = await state.ranks.get(project, family)
        key = (project, family, view.source_sig, view.labels_sig, bins, top)
        out = cache.get(key)
        if out is None:
            out = await asyncio.to_thread(
                _history, state.store_uri, project, family, view, bins, top
            )
            cache[key] = out
            while len(cache) > 32:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return SafeJSONResponse(out)

    app.include_router(router)
