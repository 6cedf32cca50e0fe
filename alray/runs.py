"""Ranks on demand: runs that rank a family's unlabeled images once, as a person asked.

A run has a name, a family, a heuristic, a number of images ``n`` and optionally source
datasets. Its life: ``queued`` → ``running`` (with a progress fraction) → ``completed`` (the top
``n`` with their scores stored) | ``failed`` (with the error) | ``cancelled``. Stored as::

    runs/r000007.json              the run record (status, progress, times, error…)
    runs/r000007/result.parquet    image_id, file_name, dataset, score, rank (completed runs)

:class:`RunScheduler` keeps the queue: at most ``max_concurrent`` runs at once, oldest first.
It does not know about Ray: the coordinator gives it an ``execute`` coroutine that runs one
ranking (in a Ray task) and returns the table; cancelling a run cancels that coroutine, which
cancels its Ray task. After a restart, runs that were running are queued again (up to
``MAX_ATTEMPTS`` starts), and a finished run whose notification was not stored yet gets it.

>>> next_run_id(["r000002.json", "r000010.json", "r000010"])
'r000011'
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from alray import heuristics
from alray._fs import Store
from alray.families import FAMILIES, REDUCTIONS
from alray.notifications import NotificationLog

Status = Literal["queued", "running", "completed", "failed", "cancelled"]
FINAL = ("completed", "failed", "cancelled")
MAX_ATTEMPTS = 3  # starts of one run; more means each start crashed the coordinator
PROGRESS_SAVE_S = 2.0  # the stored progress lags the live one by at most this
_ID = re.compile(r"^r(\d{6,})\.json$")

# execute(run, progress(fraction)) -> (ranking table, meta)
Execute = Callable[["Run", Callable[[float], None]], Awaitable[tuple[pa.Table, dict[str, Any]]]]


class RunError(ValueError):
    """A run request cannot be done as asked; the message says how to fix it."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def next_run_id(names: list[str]) -> str:
    """The id after the largest stored run id."""
    ids = [int(m.group(1)) for m in map(_ID.match, names) if m]
    return f"r{max(ids, default=0) + 1:06d}"


class Run(BaseModel):
    """One ranks-on-demand run."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    family: str
    heuristic: str
    reduction: str = "mean"
    mc_samples: int | None = None
    n: int
    datasets: list[str] | None = None
    status: Status = "queued"
    progress: float = 0.0
    created: str = Field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    attempts: int = 0
    note: str | None = None  # what a running run waits for, when it waits
    model_version: int | None = None
    result_rows: int | None = None
    skipped: int | None = None


def validate_request(
    *,
    name: str,
    family: str,
    heuristic: str,
    n: int,
    datasets: list[str] | None,
    reduction: str,
    known_datasets: list[str],
    has_model: Callable[[str], bool] | None = None,
) -> None:
    """Refuse a run request that cannot work, saying what to fix (every problem at once)."""
    problems = []
    if not name or not name.strip() or len(name) > 200:
        problems.append("name: give a name of 1 to 200 characters")
    if family not in FAMILIES:
        problems.append(f"family: unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    if heuristic not in heuristics.HEURISTICS:
        problems.append(
            f"heuristic: unknown heuristic {heuristic!r}; "
            f"choose one of: {', '.join(heuristics.HEURISTICS)}"
        )
    if reduction not in REDUCTIONS:
        problems.append(
            f"reduction: unknown reduction {reduction!r}; choose one of: {', '.join(REDUCTIONS)}"
        )
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        problems.append(f"n: the number of images must be at least 1, got {n!r}")
    if datasets is not None:
        if not datasets:
            problems.append("datasets: give at least one dataset, or none for all")
        unknown = sorted(set(datasets) - set(known_datasets))
        if unknown:
            problems.append(
                f"datasets: unknown dataset(s) {', '.join(unknown)}; "
                f"datasets: {', '.join(known_datasets) or 'none yet'}"
            )
    needs_model = heuristic in heuristics.HEURISTICS and heuristic not in ("none", "random")
    if not problems and needs_model and has_model is not None and not has_model(family):
        problems.append(
            f"family: no {family} model yet, so {heuristic} cannot score; train one "
            f"(`alray train PROJECT --family {family}`) or use heuristic none or random"
        )
    if problems:
        raise RunError("invalid run: " + "; ".join(problems))


class RunScheduler:
    """The runs of one project: create, queue, run (``execute``), cancel, recover."""

    def __init__(
        self,
        store: Store,
        notifications: NotificationLog,
        execute: Execute,
        *,
        max_concurrent: int = 2,
    ) -> None:
        self.store = store
        self.notifications = notifications
        self.execute = execute
        self.max_concurrent = max(1, int(max_concurrent))
        self._runs: dict[str, Run] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._saved_progress: dict[str, float] = {}
        self._lock = asyncio.Lock()  # id allocation and status changes
        self._io = asyncio.Lock()  # writes in call order, each of the record as it is then
        for name in store.list(suffix=".json"):
            if _ID.match(name):
                run = Run(**store.read_json(name))
                self._runs[run.id] = run

    # lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover after a restart, then start queued runs (call on the running loop)."""
        for run in sorted(self._runs.values(), key=lambda r: r.id):
            if run.status == "running":  # its Ray task died with the previous coordinator
                run.status, run.progress = "queued", 0.0
                await self._save(run)
            elif run.status in ("completed", "failed") and not self.notifications.has_key(
                self._key(run)
            ):
                await self._notify(run)  # stored as finished, notification not yet stored
        self._pump()

    async def close(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()

    # requests -------------------------------------------------------------------------------
    async def create(self, **request: Any) -> Run:
        """Queue a run (already validated by the caller); returns its record."""
        async with self._lock:
            run = Run(id=next_run_id([f"{i}.json" for i in self._runs]), **request)
            self._runs[run.id] = run
            await self._save(run)
        self._pump()
        return run

    def get(self, run_id: str) -> Run:
        if run_id not in self._runs:
            known = ", ".join(sorted(self._runs)[-5:]) or "none yet"
            raise RunError(f"no run {run_id!r}; latest runs: {known}")
        return self._runs[run_id]

    def list(self, status: str | None = None) -> list[Run]:
        return [r for _, r in sorted(self._runs.items()) if status is None or r.status == status]

    async def cancel(self, run_id: str) -> Run:
        run = self.get(run_id)
        if run.status in FINAL:
            raise RunError(f"run {run_id} is already {run.status}; nothing to cancel")
        async with self._lock:
            run.status, run.finished = "cancelled", _now()
            await self._save(run)
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()  # the execute coroutine cancels its Ray task on the way out
        self._pump()
        return run

    def result(self, run_id: str) -> pa.Table:
        run = self.get(run_id)
        if run.status != "completed":
            raise RunError(f"run {run_id} is {run.status}; only completed runs have a result")
        t = self.store.read_parquet(run_id, "result.parquet")
        if t is None:
            raise RunError(f"run {run_id}'s result is missing from the store")
        return t

    def progress(self, run_id: str, fraction: float) -> None:
        """Live progress from the run's task (saved at most every ``PROGRESS_SAVE_S``)."""
        run = self._runs.get(run_id)
        if run is None or run.status != "running":
            return
        run.progress = max(run.progress, min(1.0, float(fraction)))
        if time.monotonic() - self._saved_progress.get(run_id, 0.0) > PROGRESS_SAVE_S:
            self._saved_progress[run_id] = time.monotonic()
            self._background(self._save(run))

    # machinery ------------------------------------------------------------------------------
    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _pump(self) -> None:
        running = sum(1 for r in self._runs.values() if r.status == "running")
        for run in sorted(self._runs.values(), key=lambda r: r.id):
            if running >= self.max_concurrent:
                break
            if run.status == "queued" and run.id not in self._tasks:
                run.status = "running"  # claimed now, so the next pump does not start it twice
                self._tasks[run.id] = asyncio.ensure_future(self._run(run))
                running += 1

    async def _run(self, run: Run) -> None:
        try:
            run.attempts += 1
            run.started, run.progress, run.error = _now(), 0.0, None
            if run.attempts > MAX_ATTEMPTS:
                raise RuntimeError(
                    f"the coordinator stopped {MAX_ATTEMPTS} times while this run was running; "
                    "look at the Ray logs of the alray coordinator for the cause"
                )
            await self._save(run)
            table, meta = await self.execute(run, lambda f: self.progress(run.id, f))
            if run.status != "running":
                return  # cancelled while the result was on its way
            await asyncio.to_thread(self.store.write_parquet, table, run.id, "result.parquet")
            run.model_version = meta.get("model_version")
            run.skipped = meta.get("skipped_count")
            run.result_rows = table.num_rows
            run.status, run.progress, run.finished = "completed", 1.0, _now()
            await self._save(run)
            await self._notify(run)
        except asyncio.CancelledError:
            if run.status != "cancelled":  # the coordinator is shutting down: resume later
                raise
        except Exception as e:
            if run.status == "running":
                run.status, run.finished = "failed", _now()
                run.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                await self._save(run)
                await self._notify(run)
        finally:
            self._tasks.pop(run.id, None)
            self._pump()

    @staticmethod
    def _key(run: Run) -> str:
        return f"run_{run.status}:{run.id}"

    async def _notify(self, run: Run) -> None:
        payload = {
            "run_id": run.id,
            "name": run.name,
            "heuristic": run.heuristic,
            "n": run.n,
            "datasets": run.datasets,
            "status": run.status,
        }
        if run.status == "completed":
            payload |= {"images": run.result_rows, "model_version": run.model_version}
            kind = "run_completed"
        else:
            payload["error"] = run.error
            kind = "run_failed"
        await self.notifications.add(kind, run.family, payload, key=self._key(run))

    async def _save(self, run: Run) -> None:
        async with self._io:  # dumped inside the lock: a late write never stores an old state
            await asyncio.to_thread(self.store.write_json, run.model_dump(), f"{run.id}.json")
