"""Ranks-on-demand runs: validation and the scheduler without Ray, then real runs on Ray:
completion + notification, cancellation, and the coordinator killed mid-scoring."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid

import pyarrow as pa
import pytest
import torch

from alray import ranks, scoring
from alray._fs import Store
from alray.assistants import save_version, script_bytes
from alray.coordinator import Client, actor_name, kill_coordinator
from alray.models import build_model
from alray.notifications import NotificationLog
from alray.project import Project
from alray.runs import MAX_ATTEMPTS, Run, RunError, RunScheduler, validate_request
from alray.synthetic import generate

SIZE = 32


# ------------------------------------------------------------------------- without Ray
def _request(**kw):
    base = dict(
        name="r",
        family="classifier",
        heuristic="margin",
        n=5,
        datasets=None,
        reduction="mean",
        known_datasets=["A", "B"],
        has_model=lambda f: True,
    )
    return {**base, **kw}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"family": "classifer"}, "unknown family 'classifer'; choose one of: classifier"),
        ({"heuristic": "best"}, "unknown heuristic 'best'; choose one of: margin"),
        ({"n": 0}, "at least 1, got 0"),
        ({"datasets": ["A", "Z"]}, "unknown dataset.s. Z; datasets: A, B"),
        ({"reduction": "median"}, "choose one of: mean, max, sum"),
        ({"has_model": lambda f: False}, "no classifier model yet"),
        ({"name": " "}, "name"),
    ],
)
def test_invalid_requests_are_refused_with_what_to_fix(change, match):
    with pytest.raises(RunError, match=match):
        validate_request(**_request(**change))


def test_models_are_not_needed_for_none_and_random():
    for h in ("none", "random"):
        validate_request(**_request(heuristic=h, has_model=lambda f: False))


class FakeWork:
    """An ``execute`` whose runs finish when the test says so."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.fail: set[str] = set()

    async def __call__(self, run: Run, progress):
        self.started.append(run.id)
        gate = self.gates.setdefault(run.id, asyncio.Event())
        progress(0.5)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(run.id)
            raise
        if run.id in self.fail:
            raise LookupError("the model vanished")
        t = pa.table({"image_id": ["a"], "score": [0.5], "rank": [1]})
        return t, {"model_version": 1, "skipped_count": 0}

    def finish(self, run_id: str) -> None:
        self.gates.setdefault(run_id, asyncio.Event()).set()


async def _until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _req(name):
    return dict(name=name, family="classifier", heuristic="margin", n=1)


def test_scheduler_limits_concurrency_cancels_and_notifies(tmp_path):
    store = Store(str(tmp_path))

    async def go():
        log = NotificationLog(store.sub("notifications"))
        work = FakeWork()
        s = RunScheduler(store.sub("runs"), log, work, max_concurrent=1)
        await s.start()
        a, b, c = [await s.create(**_req(x)) for x in "abc"]
        await _until(lambda: work.started == [a.id])
        assert [s.get(i).status for i in (a.id, b.id, c.id)] == ["running", "queued", "queued"]
        assert s.get(a.id).progress == 0.5
        await s.cancel(b.id)  # queued: never starts
        work.finish(a.id)
        await _until(lambda: s.get(a.id).status == "completed")
        await _until(lambda: work.started == [a.id, c.id])
        await s.cancel(c.id)  # running: its execute is cancelled
        await _until(lambda: work.cancelled == [c.id])
        with pytest.raises(RunError, match="already cancelled"):
            await s.cancel(c.id)
        d = await s.create(**_req("d"))
        work.fail.add(d.id)
        work.finish(d.id)
        await _until(lambda: s.get(d.id).status == "failed")
        return s, log, (a, b, c, d)

    s, log, (a, b, c, d) = asyncio.run(go())
    assert s.result(a.id).num_rows == 1
    assert s.get(d.id).error == "LookupError: the model vanished"
    assert [(n.type, n.payload["run_id"]) for n in log.after(0)] == [
        ("run_completed", a.id),
        ("run_failed", d.id),
    ]
    with pytest.raises(RunError, match="only completed runs have a result"):
        s.result(b.id)


def test_scheduler_recovers_after_a_restart(tmp_path):
    store = Store(str(tmp_path))
    runs = store.sub("runs")
    # as a killed coordinator leaves them: one running, one finished but not yet notified
    runs.write_json(
        Run(id="r000001", status="running", attempts=1, **_req("x")).model_dump(), "r000001.json"
    )
    runs.write_json(
        Run(id="r000002", status="completed", result_rows=1, **_req("y")).model_dump(),
        "r000002.json",
    )
    runs.write_json(
        Run(id="r000003", status="running", attempts=MAX_ATTEMPTS, **_req("z")).model_dump(),
        "r000003.json",
    )

    async def go():
        log = NotificationLog(store.sub("notifications"))
        work = FakeWork()
        s = RunScheduler(runs, log, work, max_concurrent=2)
        await s.start()
        await _until(lambda: "r000001" in work.started)
        work.finish("r000001")
        await _until(lambda: s.get("r000001").status == "completed")
        await _until(lambda: s.get("r000003").status == "failed")
        return s, log

    s, log = asyncio.run(go())
    assert s.get("r000001").attempts == 2
    assert "stopped 3 times" in s.get("r000003").error
    got = sorted((n.type, n.payload["run_id"]) for n in log.after(0))
    assert got == [
        ("run_completed", "r000001"),
        ("run_completed", "r000002"),
        ("run_failed", "r000003"),
    ]
    # a second restart notifies nothing again
    asyncio.run(_restart_notifies_nothing(store))


async def _restart_notifies_nothing(store):
    log = NotificationLog(store.sub("notifications"))
    before = log.last_id
    s = RunScheduler(store.sub("runs"), log, FakeWork())
    await s.start()
    assert log.last_id == before


# ---------------------------------------------------------------------------- on Ray
def _add_model(p: Project) -> None:
    torch.manual_seed(0)
    net = build_model("classifier", num_classes=3)
    meta = {"classes": ["circle", "square", "triangle"], "input_size": [SIZE, SIZE]}
    save_version(p, "classifier", script_bytes(net.eval()), meta)


@pytest.fixture(scope="module")
def env(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("runs")
    generate(str(root / "images"), 60, size=SIZE, seed=5)
    name = f"runs-{uuid.uuid4().hex[:6]}"
    p = Project.create(name, store=str(root / "store"))
    p.add_images(str(root / "images"))
    _add_model(p)
    ns = f"test-{uuid.uuid4().hex[:8]}"
    client = Client(name, p.store_uri, namespace=ns, timeout=120)
    yield p, client, ns
    kill_coordinator(name, ns)


def _wait_run(client, run_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.2)


@pytest.mark.ray
def test_run_completes_with_the_top_n_and_notifies(env):
    p, c, _ = env
    run = c.create_run("top of A and B", "classifier", "margin", 7, ["A", "B"])
    assert run["status"] in ("queued", "running")
    done = _wait_run(c, run["id"])
    assert done["status"] == "completed", done["error"]
    assert done["progress"] == 1.0 and done["model_version"] == 1 and done["attempts"] == 1
    result = c.run_result(run["id"])
    assert result.num_rows == 7 and set(result["dataset"].to_pylist()) <= {"A", "B"}
    direct = scoring.rank(p, "classifier", heuristic="margin", n=7, datasets=["A", "B"])
    assert result["image_id"].to_pylist() == direct.table["image_id"].to_pylist()
    assert result["score"].to_pylist() == pytest.approx(direct.table["score"].to_pylist())
    notes = [n for n in c.notifications_after(0) if n["payload"].get("run_id") == run["id"]]
    assert [n["type"] for n in notes] == ["run_completed"]
    assert notes[0]["payload"]["images"] == 7


@pytest.mark.ray
def test_invalid_run_is_refused_by_the_coordinator(env):
    _, c, _ = env
    before = len(c.list_runs())
    with pytest.raises(RunError, match="unknown dataset"):
        c.create_run("x", "classifier", "margin", 5, ["nope"])
    with pytest.raises(RunError, match="no detector model yet"):
        c.create_run("x", "detector", "entropy", 5)
    assert len(c.list_runs()) == before


@pytest.mark.ray
def test_cancel_a_running_run(env):
    p, c, _ = env
    run = c.create_run("to cancel", "classifier", "entropy", 5)
    deadline = time.monotonic() + 60
    while c.get_run(run["id"])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.cancel_run(run["id"])
    assert c.wait_idle(60)
    assert c.get_run(run["id"])["status"] == "cancelled"
    assert not p.store.exists("runs", run["id"], "result.parquet")
    assert not [n for n in c.notifications_after(0) if n["payload"].get("run_id") == run["id"]]


class FifoImage:
    """Turns one registered image into a named pipe: a scoring task that reads it blocks until
    :meth:`feed` starts answering each reader with the image's bytes. That pins a run
    mid-scoring for as long as a test needs, with no sleeps to guess."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self.data = f.read()
        os.remove(path)
        os.mkfifo(path)
        self.stop = threading.Event()
        self.fed = 0

    def feed(self) -> None:
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:  # non-blocking open fails (ENXIO) until a reader has the pipe open
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            os.set_blocking(fd, True)
            try:
                os.write(fd, self.data)
                self.fed += 1
            except OSError:  # the reader died (a killed task)
                pass
            finally:
                os.close(fd)
            time.sleep(0.5)  # let that reader see the end of the data and close the pipe


@pytest.mark.ray
def test_coordinator_killed_mid_scoring_resumes_the_run(tmp_path, ray_session):
    ray = ray_session
    generate(str(tmp_path / "images"), 10, size=SIZE, seed=6)
    name = f"kill-{uuid.uuid4().hex[:6]}"
    p = Project.create(name, store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p)
    fifo = FifoImage(p.images()["uri"][0].as_py())
    ns = f"test-{uuid.uuid4().hex[:8]}"
    c = Client(name, p.store_uri, namespace=ns, timeout=120)
    try:
        run = c.create_run("survives a crash", "classifier", "least_confidence", 4)
        deadline = time.monotonic() + 60
        while c.get_run(run["id"])["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # an auto re-rank in flight too (it waits for the scoring slot the run holds)
        assert c.set_settings("classifier", heuristic="entropy")["reranking"] is True
        time.sleep(1.0)  # the scoring pipeline is up and waits on the pipe
        assert c.get_run(run["id"])["status"] == "running" and fifo.fed == 0
        assert c.status()["families"]["classifier"]["rank_job"] is not None
        old_pid = c.ping()["pid"]
        ray.kill(ray.get_actor(actor_name(name), namespace=ns), no_restart=False)
        deadline = time.monotonic() + 60
        while c.ping()["pid"] == old_pid:  # the kill is asynchronous; Ray restarts the actor
            assert time.monotonic() < deadline, "the coordinator was not restarted"
            time.sleep(0.1)
        fifo.feed()
        done = _wait_run(c, run["id"])
        assert done["status"] == "completed", done["error"]
        assert done["attempts"] == 2
        assert c.run_result(run["id"]).num_rows == 4
        assert c.wait_idle(120)
        # the re-rank was started again and stored once, its notification sent once
        assert ranks.list_versions(p, "classifier") == [1]
        assert ranks.read_meta(p, "classifier", 1)["heuristic"] == "entropy"
        notes = c.notifications_after(0)
        assert [n["id"] for n in notes] == list(range(1, len(notes) + 1))  # no gap, no repeat
        assert sorted(n["type"] for n in notes) == ["ranks_changed", "run_completed"]
        assert [n["payload"]["run_id"] for n in notes if n["type"] == "run_completed"] == [
            run["id"]
        ]
    finally:
        fifo.stop.set()
        kill_coordinator(name, ns)
