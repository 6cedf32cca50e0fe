"""What one API replica holds: its configuration, caches and coordinator handles."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections import OrderedDict
from typing import Any

import pyarrow as pa

from alray.api._cache import BytesLRU, ImageIndex, RankCache
from alray.api._errors import Unavailable
from alray.coordinator import NAMESPACE, CoordinatorError, get_coordinator, normalize_store

log = logging.getLogger("alray.api")

LISTEN_TIMEOUT_S = 25.0  # one long poll on the coordinator's notifications
RETRY_S = 5.0  # after the coordinator could not be reached


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if not host:
        return False
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def _unwrap(err: BaseException) -> BaseException:
    """The actor's own exception inside Ray's ``RayTaskError`` (its message, no traceback)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


class ApiState:
    """Configuration and in-memory state of one API replica (one per Serve replica)."""

    def __init__(
        self,
        store_uri: str,
        api_token: str | None = None,
        image_roots: list[str] | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        self.store_uri = normalize_store(store_uri)
        self.token = api_token or None
        # local roots resolved (links and ..), object-store roots kept as URI prefixes
        self.image_roots = (
            None
            if image_roots is None
            else [
                r if _remote(r) else os.path.realpath(r.removeprefix("file://"))
                for r in image_roots
            ]
        )
        self.namespace = namespace
        self.ranks = RankCache(self.store_uri)
        self.images = ImageIndex(self.store_uri)
        self.thumbnails = BytesLRU(64 << 20)
        self._results: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()
        self._handles: dict[str, Any] = {}
        self._listeners: dict[str, asyncio.Task] = {}

    # coordinator ------------------------------------------------------------------------------
    async def coordinator(self, project: str) -> Any:
        """The project's coordinator actor handle (created on first use; 404 if no project)."""
        handle = self._handles.get(project)
        if handle is None:
            try:
                handle = await asyncio.to_thread(
                    get_coordinator, project, self.store_uri, namespace=self.namespace
                )
            except CoordinatorError as e:
                raise Unavailable(str(e)) from None
            self._handles[project] = handle
            self._listen(project, handle)
        return handle

    async def call(self, project: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Await one coordinator method; its own errors come back as themselves."""
        import ray

        handle = await self.coordinator(project)
        try:
            return await getattr(handle, method).remote(*args, **kwargs)
        except ray.exceptions.RayTaskError as e:
            raise _unwrap(e) from None
        except ray.exceptions.RayActorError as e:
            self._handles.pop(project, None)
            raise Unavailable(
                f"the coordinator of project {project!r} is restarting ({type(e).__name__}); "
                "retry in a few seconds"
            ) from None

    def _listen(self, project: str, handle: Any) -> None:
        """Follow the project's ``ranks_changed`` notifications (a long poll on the coordinator)
        and reload those rank views at once, instead of at the next periodic check."""
        if project in self._listeners:
            return

        async def loop() -> None:
            after: int | None = None
            while True:
                try:
                    if after is None:
                        after = int((await handle.status.remote())["last_notification"])
                    found = await handle.wait_notifications.remote(
                        after=after, timeout=LISTEN_TIMEOUT_S, types=["ranks_changed"]
                    )
                    for n in found:
                        after = max(after, int(n["id"]))
                        self.ranks.refresh_soon(project, n.get("family"))
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a restarting coordinator: poll again a bit later
                    log.info("alray api: notification listener of %s: %s", project, e)
                    await asyncio.sleep(RETRY_S)

        self._listeners[project] = asyncio.ensure_future(loop())

    async def close(self) -> None:
        for task in self._listeners.values():
            task.cancel()

    # run results ------------------------------------------------------------------------------
    async def run_result(self, project: str, run_id: str) -> pa.Table:
        """A completed run's result (immutable, so cached for good, a few runs at a time)."""
        key = (project, run_id)
        table = self._results.get(key)
        if table is None:
            table = await self.call(project, "run_result", run_id)
            self._results[key] = table
            while len(self._results) > 16:
                self._results.popitem(last=False)
        self._results.move_to_end(key)
        return table

    # paths ------------------------------------------------------------------------------------
    def allowed(self, path: str) -> bool:
        """Whether the server may read ``path`` (a local path or a URI) for a client."""
        if self.image_roots is None:
            return True
        if _remote(path):
            return any(path.startswith(r.rstrip("/") + "/") for r in self.image_roots if _remote(r))
        local = os.path.realpath(path.removeprefix("file://"))
        return any(
            local == r or local.startswith(r.rstrip(os.sep) + os.sep)
            for r in self.image_roots
            if not _remote(r)
        )

    def check_server_path(self, path: str, field: str) -> None:
        """Refuse a server-side path outside the configured image roots (when there are any);
        for a list file, every absolute path or URI it lists too."""
        from alray.api._errors import ApiError

        if self.image_roots is None:
            return
        roots = ", ".join(self.image_roots)
        if not self.allowed(path):
            raise ApiError(
                403,
                f"body.{field}: {path} is outside the folders this server may read ({roots}); "
                "put the images under one of them",
                field=f"body.{field}",
            )
        if field == "list_file" and not _remote(path):
            outside = [u for u in _listed_uris(path) if _absolute(u) and not self.allowed(u)]
            if outside:
                raise ApiError(
                    403,
                    f"body.list_file: lists {len(outside)} image(s) outside the folders this "
                    f"server may read ({roots}), e.g. {outside[0]}; list only images under them",
                    field="body.list_file",
                )


def _remote(path: str) -> bool:
    from alray._fs import is_uri

    return is_uri(path) and not path.startswith("file://")


def _absolute(uri: str) -> bool:
    return _remote(uri) or uri.startswith("file://") or os.path.isabs(uri)


def _listed_uris(list_file: str) -> list[str]:
    """The uri (or path) column of a CSV/Parquet image list, as ``Project.add_images`` reads
    it; [] when it cannot be read (add_images then explains what is wrong)."""
    import csv

    import pyarrow.parquet as pq

    try:
        if list_file.endswith(".parquet"):
            t = pq.read_table(list_file)
            cols = {c.lower(): c for c in t.column_names}
            key = cols.get("uri") or cols.get("path")
            return [] if key is None else [str(v).strip() for v in t[key].to_pylist() if v]
        with open(list_file, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = {c.lower(): c for c in (reader.fieldnames or [])}
            key = cols.get("uri") or cols.get("path")
            return [] if key is None else [str(r.get(key) or "").strip() for r in reader]
    except (OSError, ValueError, UnicodeDecodeError):
        return []
