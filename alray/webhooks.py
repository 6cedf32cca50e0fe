"""Signed webhooks: every notification POSTed as JSON to each registered URL, at least once.

A receiver checks where a delivery comes from with :func:`verify_signature` (HMAC-SHA256 of
the raw body with the webhook's secret, sent as ``X-Alray-Signature: sha256=<hex>``) and drops
repeats by ``X-Alray-Delivery`` (the notification id): a delivery whose success was not yet
recorded when the coordinator stopped is sent again after the restart.

Store layout, under the project::

    webhooks/<id>.json               url, secret, retry and timeout options
    webhooks/<id>/state.json         delivered_through: the last notification id delivered
    webhooks/<id>/log/<time>.json    one record per attempt (the delivery log)

Each webhook is delivered in notification order by its own worker, so its outbox is exactly
"the notifications after ``delivered_through``": the notifications are already durable, and
moving the watermark after a 2xx answer marks a delivery done. Nothing else has to be stored
for the outbox to survive a restart. A failed attempt (an error, a timeout, a non-2xx answer)
is retried after an exponential backoff (:func:`backoff`) until it succeeds or the webhook is
removed; later notifications wait behind it so receivers see them in order.

>>> sig = sign("s3cret-key", b'{"id": 1}')
>>> sig[:7], verify_signature("s3cret-key", b'{"id": 1}', sig)
('sha256=', True)
>>> verify_signature("other-key", b'{"id": 1}', sig)
False
>>> [backoff(k, base=1.0, cap=10.0, jitter=0.0) for k in range(1, 7)]
[1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import random
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError

from alray._fs import Store, unique_name
from alray.notifications import Notification, NotificationLog

SIGNATURE_HEADER = "X-Alray-Signature"
DELIVERY_HEADER = "X-Alray-Delivery"
LOG_KEEP = 500  # attempts kept per webhook in the store (older ones are pruned)


class WebhookError(ValueError):
    """A webhook request cannot be done as asked; the message says how to fix it."""


def sign(secret: str, body: bytes) -> str:
    """The ``X-Alray-Signature`` header value for a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` (``sha256=<hex>``) signs ``body`` with ``secret``; constant time."""
    if not header or not header.startswith("sha256="):
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())


def backoff(
    attempt: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the ``attempt``-th failure (1-based): ``base * 2**(attempt-1)``
    capped at ``cap``, spread by ±``jitter`` so many failing webhooks do not retry in step."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    delay = min(cap, base * 2.0 ** min(attempt - 1, 62))
    if jitter:
        delay *= 1.0 + (rng or random).uniform(-jitter, jitter)
    return delay


class WebhookConfig(BaseModel):
    """A registered webhook. ``url`` must be http or https."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default_factory=lambda: f"wh-{uuid.uuid4().hex[:10]}")
    url: AnyHttpUrl
    secret: str = Field(min_length=8, description="HMAC key; share it with the receiver")
    timeout_s: float = Field(10.0, gt=0, le=300)
    retry_base_s: float = Field(1.0, gt=0, le=3600)
    retry_max_s: float = Field(300.0, gt=0, le=86400)
    created: str = Field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def public(self) -> dict[str, Any]:
        """The config without its secret (what listings show)."""
        d = self.model_dump(mode="json")
        d["secret"] = "***"
        return d


def make_config(url: str, secret: str, **options: Any) -> WebhookConfig:
    """Validate a webhook registration; ``WebhookError`` says what to fix."""
    try:
        return WebhookConfig(url=url, secret=secret, **options)
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            msg = e["msg"]
            if where == "url":
                msg = f"{msg} (got {url!r}; give an http:// or https:// URL)"
            msgs.append(f"{where}: {msg}")
        raise WebhookError("invalid webhook: " + "; ".join(msgs)) from None


def body_for(project: str, n: Notification) -> bytes:
    """The exact bytes POSTed for a notification (what the signature covers)."""
    d = n.to_dict()
    d.pop("key", None)
    return json.dumps({"project": project, **d}, sort_keys=True).encode()


class _Hook:
    def __init__(self, config: WebhookConfig, delivered_through: int) -> None:
        self.config = config
        self.delivered_through = delivered_through
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_KEEP)
        self.failing_since: float | None = None
        self.attempts = 0  # of the delivery in progress
        self.log_files = 0  # attempt records in the store, pruned past 2 * LOG_KEEP


class WebhookDispatcher:
    """Delivers a project's notifications to its webhooks (one asyncio worker per webhook).

    Create it inside the event loop that will run it, then call :meth:`start`; call
    :meth:`poke` after each new notification.
    """

    def __init__(
        self,
        store: Store,
        notifications: NotificationLog,
        project: str,
        *,
        transport: Any = None,
    ) -> None:
        self.store = store
        self.notifications = notifications
        self.project = project
        self._transport = transport  # tests may pass an httpx transport
        self._client = None
        self._hooks: dict[str, _Hook] = {}
        for name in store.list(suffix=".json"):
            config = WebhookConfig(**store.read_json(name))
            state = store.sub(config.id)
            through = 0
            if state.exists("state.json"):
                through = int(state.read_json("state.json")["delivered_through"])
            hook = _Hook(config, through)
            logs = state.list("log", suffix=".json")
            for old in logs[:-LOG_KEEP]:
                state.delete("log", old)
            for entry in logs[-LOG_KEEP:]:
                hook.log.append(state.read_json("log", entry))
            hook.log_files = min(len(logs), LOG_KEEP)
            self._hooks[config.id] = hook

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start a worker per webhook (call on the running event loop)."""
        for hook in self._hooks.values():
            self._start(hook)

    def _start(self, hook: _Hook) -> None:
        if hook.task is None or hook.task.done():
            hook.task = asyncio.get_running_loop().create_task(self._worker(hook))

    async def close(self) -> None:
        for hook in self._hooks.values():
            if hook.task:
                hook.task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def poke(self) -> None:
        """Wake every worker: a new notification is waiting."""
        for hook in self._hooks.values():
            hook.wake.set()

    # registry -------------------------------------------------------------------------------
    async def add(self, url: str, secret: str, **options: Any) -> dict[str, Any]:
        """Register a webhook; it gets every notification from now on."""
        config = make_config(url, secret, **options)
        through = self.notifications.last_id
        await asyncio.to_thread(
            self.store.sub(config.id).write_json, {"delivered_through": through}, "state.json"
        )
        await asyncio.to_thread(
            self.store.write_json, config.model_dump(mode="json"), f"{config.id}.json"
        )
        hook = _Hook(config, through)
        self._hooks[config.id] = hook
        self._start(hook)
        return self.describe(config.id)

    async def remove(self, webhook_id: str) -> dict[str, Any]:
        hook = self._get(webhook_id)
        info = self.describe(webhook_id)
        del self._hooks[webhook_id]
        if hook.task:
            hook.task.cancel()
        await asyncio.to_thread(self.store.delete, f"{webhook_id}.json")
        await asyncio.to_thread(self.store.delete, webhook_id)
        return info

    def _get(self, webhook_id: str) -> _Hook:
        if webhook_id not in self._hooks:
            known = ", ".join(self._hooks) or "none"
            raise WebhookError(f"no webhook {webhook_id!r}; webhooks: {known}")
        return self._hooks[webhook_id]

    def describe(self, webhook_id: str) -> dict[str, Any]:
        hook = self._get(webhook_id)
        last = hook.log[-1] if hook.log else None
        return {
            **hook.config.public(),
            "delivered_through": hook.delivered_through,
            "pending": max(0, self.notifications.last_id - hook.delivered_through),
            "failing_since": hook.failing_since,
            "attempts": hook.attempts,
            "last_attempt": last,
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(w) for w in sorted(self._hooks)]

    def deliveries(self, webhook_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The latest delivery attempts of a webhook, newest last."""
        return list(self._get(webhook_id).log)[-limit:]

    def pending_total(self) -> int:
        return sum(
            max(0, self.notifications.last_id - h.delivered_through) for h in self._hooks.values()
        )

    # delivery -------------------------------------------------------------------------------
    def _http(self):
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        return self._client

    async def _worker(self, hook: _Hook) -> None:
        while True:
            hook.wake.clear()
            pending = self.notifications.after(hook.delivered_through, limit=1)
            if not pending:
                await hook.wake.wait()
                continue
            n = pending[0]
            hook.attempts = 0
            while True:
                hook.attempts += 1
                if await self._attempt(hook, n, hook.attempts):
                    break
                c = hook.config
                await asyncio.sleep(backoff(hook.attempts, base=c.retry_base_s, cap=c.retry_max_s))
            hook.attempts = 0
            hook.failing_since = None
            hook.delivered_through = n.id
            # The watermark is the outbox: moving it is what marks the delivery done.
            await asyncio.to_thread(
                self.store.sub(hook.config.id).write_json,
                {"delivered_through": n.id},
                "state.json",
            )

    async def _attempt(self, hook: _Hook, n: Notification, attempt: int) -> bool:
        c = hook.config
        body = body_for(self.project, n)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "alray-webhooks/1",
            SIGNATURE_HEADER: sign(c.secret, body),
            DELIVERY_HEADER: str(n.id),
            "X-Alray-Event": n.type,
            "X-Alray-Webhook": c.id,
            "X-Alray-Attempt": str(attempt),
        }
        started = time.monotonic()
        status, error = None, None
        try:
            r = await self._http().post(
                str(c.url), content=body, headers=headers, timeout=c.timeout_s
            )
            status = r.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except Exception as e:  # any transport failure is retried, never fatal
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        ok = error is None
        if not ok and hook.failing_since is None:
            hook.failing_since = time.time()
        entry = {
            "notification_id": n.id,
            "type": n.type,
            "attempt": attempt,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "ok": ok,
            "status": status,
            "error": error,
            "seconds": round(time.monotonic() - started, 4),
        }
        hook.log.append(entry)
        store = self.store.sub(c.id)
        await asyncio.to_thread(store.write_json, entry, "log", unique_name("a-", ".json"))
        hook.log_files += 1
        if hook.log_files > 2 * LOG_KEEP:
            await asyncio.to_thread(_prune, store)
            hook.log_files = LOG_KEEP
        return ok


def _prune(store: Store) -> None:
    """Delete all but the newest ``LOG_KEEP`` attempt records (names sort by time)."""
    for old in store.list("log", suffix=".json")[:-LOG_KEEP]:
        store.delete("log", old)
