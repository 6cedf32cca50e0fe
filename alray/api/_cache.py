"""What a Serve replica keeps in memory so that hot reads cost no store round trip.

:class:`RankCache` holds, per project and family, the latest rank version with the images
labeled since then already filtered out. A page of ranks is then a slice of an in-memory Arrow
table. The cache re-checks the store at most every ``refresh_s`` seconds, in the background
(the request that notices it is stale is still answered from the cached view), and at once
when told that ranks or labels changed (the coordinator's ``ranks_changed`` notifications, or a
label import through this replica). A check is cheap: a directory listing of the rank versions
and of the label files plus the family settings (one small JSON); the Parquet is re-read only
when one of them changed.

:class:`ImageIndex` maps image ids to manifest URIs (the only files the image routes may read),
and :class:`BytesLRU` keeps rendered thumbnails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alray import family_settings as fset
from alray import ranks
from alray.project import Project

log = logging.getLogger("alray.api")

COLUMNS = ["rank", "image_id", "file_name", "dataset", "score"]
REFRESH_S = 2.0


@dataclass
class RankView:
    """One family's current ranking as served: unlabeled images in rank order."""

    project: str
    family: str
    source: str  # "ranks" (a stored rank version) or "alphabetical" (heuristic none)
    version: int | None
    meta: dict[str, Any]
    table: pa.Table  # COLUMNS, unlabeled images only, in rank order
    datasets: frozenset[str]  # every dataset of the ranking, labeled images included
    source_sig: tuple[Any, ...]
    labels_sig: tuple[str, ...]
    _by_dataset: dict[str, pa.Table] = field(default_factory=dict, repr=False)

    def rows(self, dataset: str | None) -> pa.Table:
        if dataset is None:
            return self.table
        t = self._by_dataset.get(dataset)
        if t is None:  # computed once per dataset; datasets are few and known (checked before)
            t = self.table.filter(pc.equal(self.table["dataset"], dataset))
            self._by_dataset[dataset] = t
        return t

    def page(self, offset: int, limit: int, dataset: str | None) -> tuple[int, list[dict]]:
        t = self.rows(dataset)
        return t.num_rows, t.slice(offset, limit).to_pylist()


def _latest_rank_version(project: Project, family: str) -> int | None:
    """The newest finished rank version: one listing and, usually, one existence check."""
    s = project.store.sub("ranks", family)
    numbers = sorted(
        (int(d[1:]) for d in s.list_dirs() if d.startswith("v") and d[1:].isdigit()),
        reverse=True,
    )
    for v in numbers:
        if s.exists(f"v{v:04d}", "meta.json"):  # a version without meta.json is unfinished
            return v
    return None


def load_view(store_uri: str, project_name: str, family: str, old: RankView | None) -> RankView:
    """The current view of a family's ranking; ``old`` when nothing changed (blocking I/O)."""
    project = Project.open(project_name, store_uri)
    heuristic = fset.load(project.store)[family].heuristic
    labels_sig = tuple(project.store.list("labels", family, suffix=".parquet"))
    if heuristic == "none":  # ranking off: alphabetical by file name, straight from the manifest
        source_sig: tuple[Any, ...] = (
            "alphabetical",
            tuple(project.store.list("images", suffix=".parquet")),
        )
    else:
        version = _latest_rank_version(project, family)
        if version is None:
            raise LookupError(
                f"no ranks for family {family!r} in project {project_name!r} yet: train a model "
                f"(POST /api/projects/{project_name}/train) and the coordinator ranks with it, "
                "or set heuristic none (alphabetical) or random in the family's settings"
            )
        source_sig = ("ranks", version)
    if old is not None and old.source_sig == source_sig and old.labels_sig == labels_sig:
        return old
    if source_sig[0] == "alphabetical":
        manifest = project.images(columns=["image_id", "file_name", "dataset"])
        order = pc.sort_indices(manifest, [("file_name", "ascending"), ("image_id", "ascending")])
        full = manifest.take(order)
        full = full.append_column("score", pa.nulls(full.num_rows, pa.float64()))
        full = full.append_column("rank", pa.array(range(1, full.num_rows + 1), pa.int64()))
        version, meta = None, {"heuristic": "none", "model_version": None}
    else:
        version = source_sig[1]
        meta = ranks.read_meta(project, family, version)
        full = ranks.read_version(project, family, version)
    labeled = project.labeled_ids(family)
    datasets = frozenset(pc.unique(full["dataset"]).to_pylist())
    table = full.filter(pc.invert(pc.is_in(full["image_id"], labeled))).select(COLUMNS)
    return RankView(
        project=project_name,
        family=family,
        source=source_sig[0],
        version=version,
        meta=meta,
        table=table.combine_chunks(),  # one chunk: a slice is then a plain offset
        datasets=datasets,
        source_sig=source_sig,
        labels_sig=labels_sig,
    )


@dataclass
class _Entry:
    view: RankView | None = None
    checked: float = 0.0
    dirty: bool = False
    task: asyncio.Task | None = None
    used: float = 0.0


class RankCache:
    """Per (project, family) rank views, refreshed lazily and in the background."""

    def __init__(
        self,
        store_uri: str,
        *,
        refresh_s: float = REFRESH_S,
        max_entries: int = 32,
        loader: Callable[[str, str, str, RankView | None], RankView] = load_view,
    ) -> None:
        self.store_uri = store_uri
        self.refresh_s = refresh_s
        self.max_entries = max_entries
        self._load = loader
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def get(self, project: str, family: str) -> RankView:
        """The cached view; loaded now when missing or marked dirty, else refreshed behind."""
        key = (project, family)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self._evict()
        entry.used = time.monotonic()
        if entry.view is None or entry.dirty:
            return await self._refresh(key, entry)
        if entry.used - entry.checked > self.refresh_s and entry.task is None:
            self._start(key, entry)
        return entry.view

    def invalidate(self, project: str, family: str | None = None) -> None:
        """Make the next read of these views load them first (labels or ranks changed)."""
        for (p, f), entry in self._entries.items():
            if p == project and (family is None or f == family):
                entry.dirty = True

    def refresh_soon(self, project: str, family: str | None = None) -> None:
        """Reload these views in the background now (a new rank version was announced);
        requests meanwhile get the previous view."""
        for (p, f), entry in self._entries.items():
            if p == project and (family is None or f == family):
                entry.checked = 0.0  # a load already running may predate the new version
                if entry.task is None and entry.view is not None:
                    self._start((p, f), entry)

    def families(self, project: str) -> list[str]:
        return [f for (p, f) in self._entries if p == project]

    def _start(self, key: tuple[str, str], entry: _Entry) -> asyncio.Task:
        async def run() -> RankView:
            try:
                dirty_before = entry.dirty
                entry.dirty = False
                try:
                    view = await asyncio.to_thread(self._load, self.store_uri, *key, entry.view)
                except BaseException:
                    entry.dirty = entry.dirty or dirty_before
                    raise
                entry.view, entry.checked = view, time.monotonic()
                return view
            finally:
                entry.task = None

        had_view = entry.view is not None
        entry.task = asyncio.ensure_future(run())
        if had_view:  # a failed first load is the caller's answer (404…), not worth a log line
            entry.task.add_done_callback(_log_failure)
        return entry.task

    async def _refresh(self, key: tuple[str, str], entry: _Entry) -> RankView:
        # A load still running while the entry is dirty began before the change that made it
        # dirty (a load clears the flag when it starts): let it finish, then load again.
        while entry.task is not None and entry.dirty:
            with contextlib.suppress(Exception):
                await asyncio.shield(entry.task)
        task = entry.task or self._start(key, entry)
        try:
            return await asyncio.shield(task)
        except Exception:
            if entry.view is None:
                self._entries.pop(key, None)  # a missing project or ranking is not cached
            raise

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            oldest = min(self._entries, key=lambda k: self._entries[k].used)
            self._entries.pop(oldest)


def _log_failure(task: asyncio.Task) -> None:
    # a background refresh that fails keeps the last good view; the next check retries
    if not task.cancelled() and task.exception() is not None:
        log.warning("alray api: rank cache refresh failed: %s", task.exception())


class ImageIndex:
    """image_id → (uri, file_name) of a project's manifest; reloaded when an id is not found
    (at most every ``refresh_s``), so images added since are found and others are 404."""

    def __init__(self, store_uri: str, *, refresh_s: float = REFRESH_S, max_projects: int = 8):
        self.store_uri = store_uri
        self.refresh_s = refresh_s
        self.max_projects = max_projects
        self._tables: OrderedDict[str, tuple[pa.Table, float]] = OrderedDict()

    def _load(self, project: str) -> pa.Table:
        t = Project.open(project, self.store_uri).images(columns=["image_id", "uri", "file_name"])
        self._tables[project] = (t, time.monotonic())
        self._tables.move_to_end(project)
        while len(self._tables) > self.max_projects:
            self._tables.popitem(last=False)
        return t

    def lookup(self, project: str, image_id: str) -> tuple[str, str] | None:
        """(uri, file_name) of a registered image, or None (blocking: call in a thread)."""
        cached = self._tables.get(project)
        table = cached[0] if cached else self._load(project)
        i = pc.index(table["image_id"], image_id).as_py()
        if i < 0 and cached and time.monotonic() - cached[1] > self.refresh_s:
            table = self._load(project)
            i = pc.index(table["image_id"], image_id).as_py()
        if i < 0:
            return None
        return table["uri"][i].as_py(), table["file_name"][i].as_py()


class BytesLRU:
    """A least-recently-used map of keys to bytes, bounded by total size."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0

    def get(self, key: Any) -> bytes | None:
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: Any, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._size -= len(old)
        self._items[key] = data
        self._size += len(data)
        while self._size > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)
