"""Durable notifications: events with increasing ids, kept in the project store.

Each notification is one JSON object, ``notifications/n0000000042.json``; the file is the
commit point, so a notification either exists whole or not at all. Ids are allocated by the
one coordinator actor of the project and, after a restart, continue after the largest stored
id. A notification may carry a ``key`` naming the event it reports (``run_completed:r000003``):
adding a second notification with a known key returns the first one, so an event replayed
after a crash is never reported twice under two ids.

Readers list the notifications after an id, or wait for the next ones (long poll, any number
of waiters); a read marker (``notifications/read.json``) stores how far they were read.

>>> import asyncio, tempfile
>>> from alray._fs import Store
>>> log = NotificationLog(Store(tempfile.mkdtemp()))
>>> n = asyncio.run(log.add("run_completed", None, {"run_id": "r000001"}, key="r1"))
>>> n.id, log.unread_count(), asyncio.run(log.add("run_completed", None, {}, key="r1")).id
(1, 1, 1)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from alray._fs import Store

TYPES = ("ranks_changed", "run_completed", "run_failed", "model_trained", "training_failed")
READ_MARKER = "read.json"
_NAME = re.compile(r"^n(\d{10})\.json$")


def file_name(notification_id: int) -> str:
    """The stored name of a notification: ids sort the same as names."""
    return f"n{notification_id:010d}.json"


def next_id(names: list[str]) -> int:
    """The id after the largest stored one (1 for an empty folder); other files are ignored.

    >>> next_id(["n0000000002.json", "read.json", "n0000000010.json"])
    11
    """
    ids = [int(m.group(1)) for m in map(_NAME.match, names) if m]
    return max(ids, default=0) + 1


@dataclass(frozen=True)
class Notification:
    """One event: what happened (``type``), when, to which family, and the details."""

    id: int
    type: str
    time: str
    family: str | None
    payload: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NotificationLog:
    """The notifications of one project: append (single writer), list, wait, mark read.

    Everything is loaded into memory on creation: notifications are small, and the coordinator
    answers lists and waits without touching the store. Methods are coroutines or plain reads;
    all run on one event loop (the coordinator actor's), so no locking beyond ``_write``.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._items: list[Notification] = []
        self._by_key: dict[str, int] = {}
        for name in store.list(suffix=".json"):
            if _NAME.match(name):
                n = Notification(**store.read_json(name))
                self._items.append(n)
                if n.key:
                    self._by_key[n.key] = n.id
        self._items.sort(key=lambda n: n.id)
        self._read_through = 0
        if store.exists(READ_MARKER):
            self._read_through = int(store.read_json(READ_MARKER).get("read_through", 0))
        self.listeners: list[Callable[[Notification], None]] = []  # called after each add
        self._write = asyncio.Lock()  # ids are allocated and published in order
        self._changed = asyncio.Condition()

    @property
    def last_id(self) -> int:
        return self._items[-1].id if self._items else 0

    async def add(
        self,
        type: str,
        family: str | None,
        payload: dict[str, Any],
        *,
        key: str | None = None,
    ) -> Notification:
        """Store a notification and wake the waiters; a known ``key`` returns the stored one."""
        if type not in TYPES:
            raise ValueError(f"unknown notification type {type!r}; types: {', '.join(TYPES)}")
        async with self._write:
            if key is not None and key in self._by_key:
                return self.get(self._by_key[key])
            n = Notification(
                id=self.last_id + 1,
                type=type,
                time=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                family=family,
                payload=payload,
                key=key,
            )
            await asyncio.to_thread(self.store.write_json, n.to_dict(), file_name(n.id))
            self._items.append(n)
            if key is not None:
                self._by_key[key] = n.id
        async with self._changed:
            self._changed.notify_all()
        for listener in self.listeners:
            listener(n)
        return n

    def get(self, notification_id: int) -> Notification:
        i = self._index_after(notification_id - 1)
        if i < len(self._items) and self._items[i].id == notification_id:
            return self._items[i]
        raise KeyError(f"no notification {notification_id}; ids run 1..{self.last_id}")

    def has_key(self, key: str) -> bool:
        return key in self._by_key

    def _index_after(self, after: int) -> int:
        lo, hi = 0, len(self._items)
        while lo < hi:  # ids are increasing: binary search
            mid = (lo + hi) // 2
            if self._items[mid].id <= after:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def after(
        self, after: int = 0, limit: int | None = 100, types: list[str] | None = None
    ) -> list[Notification]:
        """Notifications with an id above ``after``, oldest first, at most ``limit``."""
        out = []
        for n in self._items[self._index_after(after) :]:
            if types and n.type not in types:
                continue
            out.append(n)
            if limit is not None and len(out) >= limit:
                break
        return out

    async def wait(
        self,
        after: int = 0,
        timeout: float | None = 30.0,
        limit: int | None = 100,
        types: list[str] | None = None,
    ) -> list[Notification]:
        """Long poll: the notifications after ``after`` as soon as there is one, or [] after
        ``timeout`` seconds. Any number of waiters share one condition."""

        def ready() -> bool:
            return bool(self.after(after, limit=1, types=types))

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(ready), timeout)
            except asyncio.TimeoutError:
                return []
        return self.after(after, limit=limit, types=types)

    @property
    def read_through(self) -> int:
        return self._read_through

    async def mark_read(self, up_to: int | None = None) -> int:
        """Mark every notification up to ``up_to`` (default: all) read; returns the marker.
        The marker never moves back."""
        target = self.last_id if up_to is None else min(int(up_to), self.last_id)
        if target > self._read_through:
            self._read_through = target
            await asyncio.to_thread(self.store.write_json, {"read_through": target}, READ_MARKER)
        return self._read_through

    def unread_count(self) -> int:
        return len(self._items) - self._index_after(self._read_through)
