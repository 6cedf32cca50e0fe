"""Webhooks: signatures, backoff, validation, and delivery to a loopback receiver (no Ray):
retries after failures and timeouts, exactly once per notification id after dedupe, and an
outbox that survives a restart."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alray._fs import Store
from alray.notifications import NotificationLog
from alray.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    WebhookDispatcher,
    WebhookError,
    backoff,
    make_config,
    sign,
    verify_signature,
)

SECRET = "test-secret-123"


class Receiver:
    """A webhook receiver on 127.0.0.1: ``fail_first`` answers 500 that many times, ``slow``
    sleeps that long on the first request (past the sender's timeout). It dedupes by the
    idempotency header, the way a real receiver should."""

    def __init__(self, fail_first: int = 0, slow: float = 0.0) -> None:
        self.fail_first, self.slow = fail_first, slow
        self.requests: list[tuple[dict, bytes]] = []
        self.accepted: dict[str, int] = {}  # delivery id -> times processed (after dedupe)
        self.answered_ok: dict[str, int] = {}  # delivery id -> 2xx answers sent
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append((dict(self.headers), body))
                    nth = len(outer.requests)
                if outer.slow and nth == 1:
                    time.sleep(outer.slow)
                if nth <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                if not verify_signature(SECRET, body, self.headers.get(SIGNATURE_HEADER)):
                    self.send_response(401)
                    self.end_headers()
                    return
                with outer.lock:
                    key = self.headers[DELIVERY_HEADER]
                    if key not in outer.accepted:  # dedupe by idempotency id: process once
                        outer.accepted[key] = 1
                    outer.answered_ok[key] = outer.answered_ok.get(key, 0) + 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kw):
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_signature_roundtrip_and_tampering():
    body = b'{"id": 7, "type": "ranks_changed"}'
    header = sign(SECRET, body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature(SECRET, body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature("wrong-secret", body, header)
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, header.replace("sha256=", "md5="))


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter():
    assert [backoff(k, base=0.5, cap=4.0, jitter=0) for k in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
    ]
    rng = random.Random(0)
    for k in range(1, 30):
        d = backoff(k, base=1.0, cap=60.0, jitter=0.1, rng=rng)
        assert 0.9 * min(60.0, 2 ** (k - 1)) <= d <= 1.1 * min(60.0, 2 ** (k - 1))
    with pytest.raises(ValueError):
        backoff(0)


@pytest.mark.parametrize(
    "url, secret, match",
    [
        ("ftp://example.com/x", SECRET, "http:// or https://"),
        ("file:///etc/passwd", SECRET, "http:// or https://"),
        ("not a url", SECRET, "url"),
        ("https://example.com/hook", "short", "secret"),
    ],
)
def test_invalid_registrations_are_refused(url, secret, match):
    with pytest.raises(WebhookError, match=match):
        make_config(url, secret)


def test_https_and_http_urls_are_accepted():
    assert str(make_config("https://example.com/h", SECRET).url).startswith("https://")
    assert make_config("http://127.0.0.1:8080/h", SECRET).public()["secret"] == "***"


async def _until(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


def test_signed_deliveries_in_order(tmp_path, receiver):
    rx = receiver()

    async def go():
        store = Store(str(tmp_path))
        log = NotificationLog(store.sub("notifications"))
        await log.add("model_trained", "classifier", {"version": 0})  # before registration
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        log.listeners.append(lambda n: d.poke())
        d.start()
        hook = await d.add(rx.url, SECRET, retry_base_s=0.01)
        for i in range(3):
            await log.add("ranks_changed", "classifier", {"i": i})
        await _until(lambda: d.describe(hook["id"])["delivered_through"] == 4)
        await d.close()
        return d.deliveries(hook["id"])

    deliveries = asyncio.run(go())
    ids = [h[DELIVERY_HEADER] for h, _ in rx.requests]
    assert ids == ["2", "3", "4"]  # only notifications after registration, in order
    for headers, body in rx.requests:
        assert verify_signature(SECRET, body, headers[SIGNATURE_HEADER])
        doc = json.loads(body)
        assert doc["project"] == "proj" and doc["type"] == "ranks_changed"
        assert str(doc["id"]) == headers[DELIVERY_HEADER]
    assert [d["ok"] for d in deliveries] == [True, True, True]


def test_failures_then_success_deliver_each_id_exactly_once(tmp_path, receiver):
    rx = receiver(fail_first=2)

    async def go():
        store = Store(str(tmp_path))
        log = NotificationLog(store.sub("notifications"))
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        log.listeners.append(lambda n: d.poke())
        d.start()
        hook = await d.add(rx.url, SECRET, retry_base_s=0.02, retry_max_s=0.1)
        for i in range(3):
            await log.add("run_completed", None, {"i": i})
        await _until(lambda: d.describe(hook["id"])["delivered_through"] == 3)
        await d.close()
        return d.deliveries(hook["id"])

    log = asyncio.run(go())
    assert [(e["notification_id"], e["ok"], e["attempt"]) for e in log] == [
        (1, False, 1),
        (1, False, 2),
        (1, True, 3),
        (2, True, 1),
        (3, True, 1),
    ]
    assert log[0]["status"] == 500 and log[0]["error"] == "HTTP 500"
    assert rx.accepted == {"1": 1, "2": 1, "3": 1}
    assert rx.answered_ok == {"1": 1, "2": 1, "3": 1}  # never sent again after a 2xx


def test_timeout_is_retried_and_deduped_by_the_receiver(tmp_path, receiver):
    rx = receiver(slow=0.6)

    async def go():
        store = Store(str(tmp_path))
        log = NotificationLog(store.sub("notifications"))
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        log.listeners.append(lambda n: d.poke())
        d.start()
        hook = await d.add(rx.url, SECRET, timeout_s=0.2, retry_base_s=0.05)
        await log.add("run_failed", None, {"error": "x"})
        await _until(lambda: d.describe(hook["id"])["delivered_through"] == 1)
        await asyncio.sleep(0.6)  # let the slow first request finish on the receiver
        await d.close()
        return d.deliveries(hook["id"])

    log = asyncio.run(go())
    assert log[0]["ok"] is False and "Timeout" in log[0]["error"]
    assert log[-1]["ok"] is True
    assert len(rx.requests) >= 2  # the same notification was sent again…
    assert rx.accepted == {"1": 1}  # …and processed once, by its idempotency id


def test_outbox_survives_a_restart(tmp_path, receiver):
    store = Store(str(tmp_path))

    async def while_down():
        log = NotificationLog(store.sub("notifications"))
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        log.listeners.append(lambda n: d.poke())
        d.start()
        hook = await d.add("http://127.0.0.1:9/nothing-listens", SECRET, retry_base_s=0.02)
        for i in range(3):
            await log.add("ranks_changed", "tagger", {"i": i})
        await asyncio.sleep(0.3)  # a few failed attempts
        await d.close()  # the coordinator dies with 3 undelivered notifications
        return hook["id"]

    hook_id = asyncio.run(while_down())
    rx = receiver()
    cfg = json.loads((tmp_path / "webhooks" / f"{hook_id}.json").read_text())
    cfg["url"] = rx.url  # the receiver is back (at a new port)
    (tmp_path / "webhooks" / f"{hook_id}.json").write_text(json.dumps(cfg))

    async def after_restart():
        log = NotificationLog(store.sub("notifications"))
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        assert d.describe(hook_id)["pending"] == 3
        assert any(not e["ok"] for e in d.deliveries(hook_id))  # the log survived too
        d.start()
        await _until(lambda: d.describe(hook_id)["delivered_through"] == 3)
        await d.close()

    asyncio.run(after_restart())
    assert rx.accepted == {"1": 1, "2": 1, "3": 1}


def test_remove_stops_deliveries(tmp_path, receiver):
    rx = receiver()

    async def go():
        store = Store(str(tmp_path))
        log = NotificationLog(store.sub("notifications"))
        d = WebhookDispatcher(store.sub("webhooks"), log, "proj")
        log.listeners.append(lambda n: d.poke())
        d.start()
        hook = await d.add(rx.url, SECRET)
        await d.remove(hook["id"])
        await log.add("model_trained", "classifier", {"version": 1})
        await asyncio.sleep(0.2)
        with pytest.raises(WebhookError, match="no webhook"):
            d.describe(hook["id"])
        await d.close()
        return WebhookDispatcher(store.sub("webhooks"), log, "proj").list()

    assert asyncio.run(go()) == [] and rx.requests == []
