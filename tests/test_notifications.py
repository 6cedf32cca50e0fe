"""Notifications: id allocation, keys, listing, long poll with many waiters, read marker.

Pure asyncio on a temp store: no Ray.
"""

from __future__ import annotations

import asyncio

import pytest

from alray._fs import Store
from alray.notifications import TYPES, NotificationLog, file_name, next_id


def test_next_id_continues_after_the_largest_stored_id():
    assert next_id([]) == 1
    assert next_id(["read.json", "n0000000007.json", "n0000000003.json", "x.json"]) == 8
    assert file_name(42) == "n0000000042.json"


def test_ids_increase_and_survive_a_restart(tmp_path):
    store = Store(str(tmp_path))

    async def first():
        log = NotificationLog(store)
        a = await log.add("model_trained", "classifier", {"version": 1})
        b = await log.add("ranks_changed", "classifier", {"version": 1}, key="rc:1")
        return a.id, b.id

    assert asyncio.run(first()) == (1, 2)
    # a half-written temp file (a crash mid-write) is not a notification
    (tmp_path / "n0000000003.json.tmp-abcd").write_text("{")

    async def second():
        log = NotificationLog(store)  # a restarted coordinator
        again = await log.add("ranks_changed", "classifier", {"version": 1}, key="rc:1")
        new = await log.add("run_completed", None, {"run_id": "r000001"})
        return again.id, new.id, [n.id for n in log.after(0)]

    assert asyncio.run(second()) == (2, 3, [1, 2, 3])


def test_unknown_type_is_refused_listing_the_types(tmp_path):
    log = NotificationLog(Store(str(tmp_path)))
    with pytest.raises(ValueError, match="ranks_changed"):
        asyncio.run(log.add("exploded", None, {}))
    assert set(TYPES) >= {"ranks_changed", "run_completed", "run_failed", "model_trained"}


def test_after_limit_and_types(tmp_path):
    async def go():
        log = NotificationLog(Store(str(tmp_path)))
        for i in range(5):
            await log.add("run_completed" if i % 2 else "model_trained", "tagger", {"i": i})
        return (
            [n.id for n in log.after(2)],
            [n.id for n in log.after(0, limit=2)],
            [n.id for n in log.after(0, types=["run_completed"])],
        )

    assert asyncio.run(go()) == ([3, 4, 5], [1, 2], [2, 4])


def test_many_waiters_wake_on_the_next_notification(tmp_path):
    async def go():
        log = NotificationLog(Store(str(tmp_path)))
        waiters = [asyncio.create_task(log.wait(after=0, timeout=10)) for _ in range(20)]
        late = asyncio.create_task(log.wait(after=1, timeout=10))
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in waiters)
        await log.add("model_trained", "detector", {"version": 1})
        got = await asyncio.gather(*waiters)
        assert not late.done()  # it waits for the one after
        await log.add("model_trained", "detector", {"version": 2})
        return [[n.id for n in g] for g in got], [n.id for n in await late]

    got, late = asyncio.run(go())
    assert got == [[1]] * 20 and late == [2]


def test_wait_times_out_empty(tmp_path):
    log = NotificationLog(Store(str(tmp_path)))
    assert asyncio.run(log.wait(after=0, timeout=0.05)) == []


def test_read_marker_and_unread_count_survive_a_restart(tmp_path):
    store = Store(str(tmp_path))

    async def go():
        log = NotificationLog(store)
        for i in range(4):
            await log.add("run_failed", None, {"i": i})
        assert log.unread_count() == 4
        assert await log.mark_read(2) == 2
        assert await log.mark_read(1) == 2  # never moves back
        return log.unread_count()

    assert asyncio.run(go()) == 2
    log = NotificationLog(store)
    assert (log.read_through, log.unread_count()) == (2, 2)
    assert asyncio.run(log.mark_read()) == 4 and log.unread_count() == 0
