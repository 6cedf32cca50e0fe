"""The coordinator: one named, detached async Ray actor per project that keeps it up to date.

It keeps the per-family settings, counts labels added through alray and retrains per the
family's policy, re-ranks after every new model version, compares each new ranking with the
previous one and notifies (``ranks_changed``), runs ranks-on-demand, and delivers every
notification to the project's signed webhooks.

It holds nothing that is not also in the store, so Ray may restart it at any time (it is
created with ``max_restarts=-1``), and a whole cluster may be stopped and started again: on
start it reloads settings, family state, runs, notifications and the webhook outbox, then
finishes what was in flight (a run that was running is queued again, a training or a scoring
that died with the previous actor is started again, a notification of a finished event that
was not stored yet is stored now). Each event's notification is stored under a key, so an
event replayed after a crash is never notified twice.

Long work never runs on the actor's event loop: training (:func:`alray.training.train_on_ray`)
and scoring (:func:`alray.scoring.rank`, a Ray Data pipeline) run in Ray tasks that the actor
launches and awaits. Those driver tasks take no CPU (``num_cpus=0``), so the CPUs stay with
the work they start.

    coordinator/families/<family>.json   new labels, handled model version, work in flight
    coordinator/inbox/labels-*.json      label counts written while no coordinator ran

Use :func:`get_coordinator` (an actor handle) or :class:`Client` (the same methods, blocking):

>>> c = Client("demo", "/data/alray-store")  # doctest: +SKIP
>>> c.set_settings("classifier", heuristic="entropy")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from alray import family_settings as fset
from alray import ranking, ranks
from alray._fs import Store, is_uri, unique_name
from alray.families import FAMILIES
from alray.family_settings import FamilySettings, FamilySettingsError
from alray.notifications import NotificationLog
from alray.project import Project
from alray.runs import Run, RunScheduler, validate_request
from alray.settings import Settings, load_settings
from alray.webhooks import WebhookDispatcher

NAMESPACE = "alray"
NO_MODEL_HEURISTICS = ("none", "random")  # heuristics that rank without a model
PROGRESS_EVERY_S = 0.5  # a run's task reports progress at most this often
MAX_LISTED_IDS = 100  # image ids listed in a ranks_changed payload (entered / left)

log = logging.getLogger("alray.coordinator")


class CoordinatorError(RuntimeError):
    """The coordinator cannot be reached or used as asked; the message says what to do."""


def actor_name(project: str) -> str:
    """The Ray name of a project's coordinator actor."""
    return f"alray-coordinator:{project}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def normalize_store(store_uri: str) -> str:
    """A store URI every Ray worker reads the same way: local paths made absolute (an actor's
    working directory is not the caller's)."""
    if is_uri(store_uri):
        return store_uri
    return os.path.abspath(os.path.expanduser(store_uri))


class FamilyState(BaseModel):
    """What the coordinator remembers per family (``coordinator/families/<family>.json``)."""

    model_config = ConfigDict(extra="ignore")

    new_labels: int = 0  # labeled images added since the last training started
    model_version: int | None = None  # newest model version handled (notified, ranked)
    training: dict[str, Any] | None = None  # {token, labels, started, reason, epochs}
    rank_job: dict[str, Any] | None = None  # {token, model_version, heuristic, reduction, ...}
    last_rank: dict[str, Any] | None = None  # {version, model_version, heuristic, time}
    training_error: str | None = None
    rank_error: str | None = None
    inbox_seen: list[str] = []  # inbox files already counted, deleted next


# -------------------------------------------------------------------------------- Ray tasks
def _rank_task(
    project_name: str,
    store_uri: str,
    family: str,
    *,
    heuristic: str,
    reduction: str,
    n: int | None,
    datasets: list[str] | None,
    mc_samples: int | None,
    model_version: int | None,
    settings: Settings,
    report_to: tuple[str, str, str] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Rank in a Ray task (the driver of the Ray Data scoring pipeline); nothing is saved here:
    the coordinator decides whether the result is still wanted."""
    import ray

    from alray import scoring

    os.environ["ALRAY_PROGRESS_BARS"] = "0"  # no bars in worker logs
    progress = None
    if report_to is not None:
        name, namespace, run_id = report_to
        actor = ray.get_actor(name, namespace=namespace)
        state = {"done": 0, "total": None, "sent": 0.0}

        def progress(k: int, total: int | None = None) -> None:
            if total is not None:
                state["total"] = total
            state["done"] += k
            now = time.monotonic()
            if state["total"] and now - state["sent"] >= PROGRESS_EVERY_S:
                state["sent"] = now
                actor.report_progress.remote(run_id, state["done"] / state["total"])

    result = scoring.rank(
        Project.open(project_name, store_uri),
        family,
        heuristic=heuristic,
        reduction=reduction,
        n=n,
        datasets=datasets,
        model_version=model_version,
        mc_samples=mc_samples,
        save=False,
        progress=progress,
        settings=settings,
    )
    return result.table, result.meta


def _train_task(
    project_name: str, store_uri: str, family: str, epochs: int | None, seed: int
) -> dict[str, Any]:
    """Train in a Ray task; ``train_on_ray`` starts the training task with the CPUs or the GPU
    and registers the new model version itself."""
    from alray import training

    kwargs: dict[str, Any] = {"seed": seed}
    if epochs is not None:
        kwargs["epochs"] = epochs
    return training.train_on_ray(project_name, store_uri, family, **kwargs)


def _unwrap(err: BaseException) -> BaseException:
    """The user's error inside a Ray task error (its message, without Ray's traceback)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def _describe(err: BaseException) -> str:
    err = _unwrap(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


# ---------------------------------------------------------------------------------- the actor
class Coordinator:
    """The coordinator actor of one project (create it with :func:`get_coordinator`).

    Every public method is a coroutine that is safe to call concurrently with the others.
    """

    def __init__(
        self,
        project_name: str,
        store_uri: str,
        settings: Settings | None = None,
        namespace: str = NAMESPACE,
    ):
        import ray

        self.project = Project.open(project_name, store_uri)
        self.store: Store = self.project.store
        self.settings = settings or load_settings()
        self._name = actor_name(project_name)
        self._namespace = namespace  # the actor's, for its tasks to find it by name
        self._started_at = _now()
        self._ready_done = False
        self._ready_lock = asyncio.Lock()
        self._jobs: dict[tuple[str, str], asyncio.Task] = {}  # (kind, family) -> task
        self._state_locks = {f: asyncio.Lock() for f in FAMILIES}
        self._settings_lock = asyncio.Lock()
        self._slots: asyncio.Semaphore | None = None
        # Start (reload + resume) as soon as the actor is up, without waiting for a caller.
        with contextlib.suppress(Exception):
            ray.get_runtime_context().current_actor.ping.remote()

    # start and recovery -----------------------------------------------------------------------
    async def _ready(self) -> None:
        if self._ready_done:
            return
        async with self._ready_lock:
            if self._ready_done:
                return
            await asyncio.to_thread(self._load)
            import ray

            cpus = int(ray.cluster_resources().get("CPU", 1))
            # Two Ray Data scoring pipelines whose actor pools hold every CPU starve each
            # other's read tasks; one pipeline per 8 CPUs keeps a small cluster safe.
            self._slots = asyncio.Semaphore(max(1, cpus // 8))
            self.notifications.listeners.append(lambda n: self.webhooks.poke())
            self.webhooks.start()
            await self.runs.start()
            await self._consume_inbox()
            for family in FAMILIES:
                await self._recover(family)
            self._ready_done = True

    def _load(self) -> None:
        s = self.store
        self.family_settings = fset.load(s)
        self.notifications = NotificationLog(s.sub("notifications"))
        self.webhooks = WebhookDispatcher(s.sub("webhooks"), self.notifications, self.project.name)
        self.runs = RunScheduler(
            s.sub("runs"),
            self.notifications,
            self._execute_run,
            max_concurrent=self.settings.max_concurrent_runs,
        )
        self.state: dict[str, FamilyState] = {}
        self._fresh: set[str] = set()
        for family in FAMILIES:
            path = ("coordinator", "families", f"{family}.json")
            if s.exists(*path):
                self.state[family] = FamilyState(**s.read_json(*path))
            else:
                self.state[family] = FamilyState()
                self._fresh.add(family)

    async def _recover(self, family: str) -> None:
        st = self.state[family]
        latest = await asyncio.to_thread(self._latest_model, family)
        if family in self._fresh:
            # First start on this project: models trained before are taken as handled.
            st.model_version = latest
            if latest is not None or st.new_labels:
                await self._save_state(family)
        if st.training is not None:
            if latest is not None and latest > (st.model_version or 0):
                await self._training_done(family, st.training, {"version": latest})
            else:  # the training task died with the previous actor: train again
                self._launch_training(family, st.training)
        elif latest is not None and latest > (st.model_version or 0):
            await self._on_model(family, latest)  # registered while no coordinator ran
        if st.rank_job is not None and ("rank", family) not in self._jobs:
            job = st.rank_job
            committed = await asyncio.to_thread(self._committed_version, family, job["token"])
            if committed is not None:
                await self._after_commit(family, job, committed)
            else:
                self._launch_rank(family, job)
        await self._maybe_train(family)

    # state ------------------------------------------------------------------------------------
    async def _save_state(self, family: str) -> None:
        async with self._state_locks[family]:  # dumped inside: the last write is the newest
            data = self.state[family].model_dump()
            await asyncio.to_thread(
                self.store.write_json, data, "coordinator", "families", f"{family}.json"
            )

    def _latest_model(self, family: str) -> int | None:
        from alray.assistants import latest_version

        meta = latest_version(self.project, family)
        return None if meta is None else int(meta["version"])

    def _committed_version(self, family: str, token: str) -> int | None:
        """The rank version a rank job stored, if it got that far (its token is in the meta).
        One rank job runs per family at a time, so it can only be among the newest."""
        for v in reversed(ranks.list_versions(self.project, family)[-3:]):
            if ranks.read_meta(self.project, family, v).get("job") == token:
                return v
        return None

    # public: health ---------------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        """Who this is; also what starts the coordinator after a (re)start."""
        await self._ready()
        return {
            "project": self.project.name,
            "store": self.project.store_uri,
            "pid": os.getpid(),
            "started": self._started_at,
            "name": self._name,
            "namespace": self._namespace,
        }

    async def status(self) -> dict[str, Any]:
        """Per family: settings, counters and work in flight; runs, notifications, webhooks."""
        await self._ready()
        runs = self.runs.list()
        return {
            "project": self.project.name,
            "families": {
                f: {
                    "settings": self.family_settings[f].model_dump(),
                    **self.state[f].model_dump(exclude={"inbox_seen"}),
                    "training_running": ("train", f) in self._jobs,
                    "ranking_running": ("rank", f) in self._jobs,
                }
                for f in FAMILIES
            },
            "runs": {s: sum(r.status == s for r in runs) for s in ("queued", "running")},
            "last_notification": self.notifications.last_id,
            "unread": self.notifications.unread_count(),
            "webhook_pending": self.webhooks.pending_total(),
        }

    async def wait_idle(self, timeout: float = 60.0, webhooks: bool = True) -> bool:
        """Wait until no training, scoring or run is in flight (and, with ``webhooks``, every
        notification is delivered); False when ``timeout`` seconds passed first."""
        await self._ready()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = (
                bool(self._jobs)
                or any(s.training or s.rank_job for s in self.state.values())
                or any(r.status in ("queued", "running") for r in self.runs.list())
                or (webhooks and self.webhooks.pending_total() > 0)
            )
            if not busy:
                return True
            await asyncio.sleep(0.1)
        return False

    # public: settings -------------------------------------------------------------------------
    async def get_settings(self, family: str | None = None) -> dict[str, Any]:
        """Every family's settings, or one family's."""
        await self._ready()
        if family is not None:
            return self.family_settings[fset.check_family(family)].model_dump()
        return {f: s.model_dump() for f, s in self.family_settings.items()}

    async def set_settings(self, family: str, **changes: Any) -> dict[str, Any]:
        """Change a family's settings; refused (nothing changed) when a value is invalid.

        A new heuristic, reduction or MC sample count re-ranks the family with its current
        model (no retraining); turning auto ranks on does too; a lower retrain threshold may
        start a training now.
        """
        await self._ready()
        fset.check_family(family)
        async with self._settings_lock:
            old = self.family_settings[family]
            new = old.with_changes(**changes)
            self.family_settings[family] = new
            await asyncio.to_thread(fset.save, self.store, dict(self.family_settings))
        stale = old.heuristic != new.heuristic or old.reduction != new.reduction
        stale = stale or (new.heuristic == "bald" and old.mc_samples != new.mc_samples)
        job = None
        if new.auto and (stale or not old.auto):
            job = await self._request_rank(family, reason="settings changed")
        await self._maybe_train(family)
        return {
            "family": family,
            "settings": new.model_dump(),
            "reranking": job is not None,
            "training": self.state[family].training is not None,
        }

    # public: labels, training, models ---------------------------------------------------------
    async def labels_added(self, family_counts: dict[str, int]) -> dict[str, Any]:
        """Count labeled images added per family; start training where the policy says so."""
        await self._ready()
        clean = self._check_counts(family_counts)
        touched = await self._consume_inbox()
        for family, count in clean.items():
            self.state[family].new_labels += count
            await self._save_state(family)
        for family in sorted(set(clean) | touched):
            await self._maybe_train(family)
        return {
            f: {
                "new_labels": self.state[f].new_labels,
                "retrain_every": self.family_settings[f].retrain_every,
                "training": self.state[f].training is not None,
            }
            for f in clean
        }

    @staticmethod
    def _check_counts(family_counts: dict[str, int]) -> dict[str, int]:
        clean = {}
        for family, count in dict(family_counts).items():
            fset.check_family(family)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"label count for {family} must be an int >= 0, got {count!r}")
            clean[family] = count
        return clean

    async def train(self, family: str, epochs: int | None = None) -> dict[str, Any]:
        """Train the family now (whatever the policy); a training in flight is not doubled."""
        await self._ready()
        fset.check_family(family)
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        st = self.state[family]
        if st.training is None:
            await self._start_training(family, reason="asked", epochs=epochs)
        return dict(st.training or {})

    async def model_registered(self, family: str, version: int | None = None) -> dict[str, Any]:
        """A model version was stored (by ``alray train``, a TorchScript upload…): notify and
        re-rank with it. Versions not newer than the newest handled are ignored."""
        await self._ready()
        fset.check_family(family)
        latest = await asyncio.to_thread(self._latest_model, family)
        if version is None:
            version = latest
        if version is None or latest is None or version > latest:
            raise ValueError(
                f"no {family} model version {version} in project {self.project.name!r}; "
                f"newest: {latest}"
            )
        handled = await self._on_model(family, int(version))
        return {"family": family, "version": version, "handled": handled}

    async def rerank(self, family: str) -> dict[str, Any]:
        """Re-rank the family now with its settings and current model."""
        await self._ready()
        fset.check_family(family)
        job = await self._request_rank(family, reason="asked")
        if job is None:
            raise ValueError(
                f"cannot rank {family}: heuristic {self.family_settings[family].heuristic} "
                "needs a model and there is none yet; train one first"
            )
        return job

    async def _maybe_train(self, family: str) -> None:
        st, fs = self.state[family], self.family_settings[family]
        if st.training is None and fs.retrain_every and st.new_labels >= fs.retrain_every:
            await self._start_training(family, reason="new labels")

    async def _start_training(
        self, family: str, reason: str, epochs: int | None = None
    ) -> dict[str, Any]:
        st = self.state[family]
        if st.training is not None:
            return st.training
        st.training = {
            "token": uuid.uuid4().hex[:12],
            "labels": st.new_labels,
            "started": _now(),
            "reason": reason,
            "epochs": epochs if epochs is not None else self.family_settings[family].epochs,
        }
        await self._save_state(family)  # before launching: a restart retrains
        self._launch_training(family, st.training)
        return st.training

    def _launch_training(self, family: str, job: dict[str, Any]) -> None:
        # Callers check st.training first; the job in _jobs may be the one finishing now (it
        # starts the next training for labels that arrived meanwhile).
        key = ("train", family)
        task = asyncio.ensure_future(self._training(family, job))
        self._jobs[key] = task
        task.add_done_callback(lambda t, k=key: self._job_done(k, t))

    async def _training(self, family: str, job: dict[str, Any]) -> None:
        import ray

        task = ray.remote(_train_task).options(
            num_cpus=0, max_retries=0, name=f"alray-train-{family}"
        )
        ref = task.remote(self.project.name, self.project.store_uri, family, job.get("epochs"), 0)
        try:
            meta = await ref
        except asyncio.CancelledError:
            ray.cancel(ref, force=True)
            raise
        except Exception as e:
            st = self.state[family]
            st.training, st.training_error = None, _describe(e)
            await self._save_state(family)
            await self.notifications.add(
                "training_failed",
                family,
                {"error": st.training_error, "labels": job["labels"], "reason": job["reason"]},
                key=f"training_failed:{family}:{job['token']}",
            )
            return
        await self._training_done(family, job, meta)
        await self._maybe_train(family)  # labels that arrived while it trained

    async def _training_done(self, family: str, job: dict[str, Any], meta: dict) -> None:
        st = self.state[family]
        st.training, st.training_error = None, None
        st.new_labels = max(0, st.new_labels - int(job.get("labels", 0)))
        await self._save_state(family)
        await self._on_model(family, int(meta["version"]))

    async def _on_model(self, family: str, version: int) -> bool:
        st = self.state[family]
        if st.model_version is not None and version <= st.model_version:
            return False
        st.model_version = version
        await self._save_state(family)
        meta = await asyncio.to_thread(self._model_meta, family, version)
        await self.notifications.add(
            "model_trained",
            family,
            {
                "version": version,
                "metric": meta.get("metric"),
                "label_count": meta.get("label_count"),
                "source": meta.get("source"),
            },
            key=f"model_trained:{family}:{version}",
        )
        fs = self.family_settings[family]
        if fs.auto and fs.heuristic != "none":
            await self._request_rank(family, reason=f"model version {version}")
        return True

    def _model_meta(self, family: str, version: int) -> dict[str, Any]:
        from alray.assistants import version_dir

        path = ("models", family, version_dir(version), "meta.json")
        return self.store.read_json(*path) if self.store.exists(*path) else {}

    # auto ranks -------------------------------------------------------------------------------
    async def _request_rank(self, family: str, reason: str) -> dict[str, Any] | None:
        """Rank the family with its settings and newest model, replacing (cancelling) any rank
        job still running: only the newest request is ranked to completion."""
        fs, st = self.family_settings[family], self.state[family]
        model_version = None
        if fs.heuristic not in NO_MODEL_HEURISTICS:
            model_version = await asyncio.to_thread(self._latest_model, family)
            if model_version is None:
                return None
        job = {
            "token": uuid.uuid4().hex[:12],
            "model_version": model_version,
            "heuristic": fs.heuristic,
            "reduction": fs.reduction,
            "mc_samples": fs.mc_samples,
            "top_n": fs.top_n,
            "reason": reason,
            "requested": _now(),
        }
        st.rank_job, st.rank_error = job, None
        await self._save_state(family)  # before launching: a restart ranks again
        self._launch_rank(family, job)
        return job

    def _launch_rank(self, family: str, job: dict[str, Any]) -> None:
        current = self.state[family].rank_job
        if not current or current["token"] != job["token"]:
            return  # a newer request came in while this one was being saved
        key = ("rank", family)
        old = self._jobs.pop(key, None)
        if old is not None:
            old.cancel()  # a stale version: its Ray task is cancelled on the way out
        task = asyncio.ensure_future(self._rank(family, job))
        self._jobs[key] = task
        task.add_done_callback(lambda t, k=key: self._job_done(k, t))

    def _job_done(self, key: tuple[str, str], task: asyncio.Task) -> None:
        if self._jobs.get(key) is task:
            del self._jobs[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("coordinator job %s failed: %s", key, _describe(task.exception()))

    async def _rank(self, family: str, job: dict[str, Any]) -> None:
        st = self.state[family]
        try:
            table, meta = await self._score(
                family,
                heuristic=job["heuristic"],
                reduction=job["reduction"],
                n=None,
                datasets=None,
                mc_samples=job["mc_samples"],
                model_version=job["model_version"],
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if st.rank_job and st.rank_job["token"] == job["token"]:
                st.rank_job, st.rank_error = None, _describe(e)
                await self._save_state(family)
                log.error("ranking %s failed: %s", family, st.rank_error)
            return
        if not st.rank_job or st.rank_job["token"] != job["token"]:
            return  # a newer request replaced this one while the result was on its way
        meta = {**meta, "job": job["token"], "reason": job["reason"]}
        version = await asyncio.to_thread(ranks.write_version, self.project, family, table, meta)
        await self._after_commit(family, job, version)

    async def _after_commit(self, family: str, job: dict[str, Any], version: int) -> None:
        summary = await asyncio.to_thread(self._compare, family, version, job.get("top_n", 100))
        if summary["changed"]:
            await self.notifications.add(
                "ranks_changed",
                family,
                {**summary, "reason": job["reason"]},
                key=f"ranks_changed:{family}:{version}",
            )
        st = self.state[family]
        if st.rank_job and st.rank_job["token"] == job["token"]:
            st.rank_job = None
        st.last_rank = {
            "version": version,
            "model_version": job["model_version"],
            "heuristic": job["heuristic"],
            "reduction": job["reduction"],
            "time": _now(),
            "changed": summary["changed"],
        }
        await self._save_state(family)

    def _compare(self, family: str, version: int, top_n: int) -> dict[str, Any]:
        """The change from the previous rank version to ``version``, over the images unlabeled
        now (images labeled since the previous ranking did not 'leave' it, they were labeled)."""
        earlier = [v for v in ranks.list_versions(self.project, family) if v < version]
        prev_version = earlier[-1] if earlier else None
        labeled = self.project.labeled_ids(family)
        new = ranks.read_version(self.project, family, version)
        new_ids = new.filter(pc.invert(pc.is_in(new["image_id"], labeled)))["image_id"]
        if prev_version is None:
            prev_ids = pa.array([], pa.string())
            prev_meta: dict[str, Any] = {}
        else:
            prev = ranks.read_version(self.project, family, prev_version)
            prev_ids = prev.filter(pc.invert(pc.is_in(prev["image_id"], labeled)))["image_id"]
            prev_meta = ranks.read_meta(self.project, family, prev_version)
        new_meta = ranks.read_meta(self.project, family, version)
        change = ranking.rank_change(
            prev_ids.to_numpy(zero_copy_only=False), new_ids.to_numpy(zero_copy_only=False), top_n
        )
        return {
            "previous_version": prev_version,
            "version": version,
            "previous_model_version": prev_meta.get("model_version"),
            "model_version": new_meta.get("model_version"),
            "previous_heuristic": prev_meta.get("heuristic"),
            "heuristic": new_meta.get("heuristic"),
            "top_n": change["top_n"],
            "overlap": change["overlap"],
            "overlap_fraction": change["overlap_fraction"],
            "entered_count": len(change["entered"]),
            "entered": change["entered"][:MAX_LISTED_IDS],
            "left_count": len(change["left"]),
            "left": change["left"][:MAX_LISTED_IDS],
            "spearman": change["spearman"],
            "common": change["common"],
            "images": len(new_ids),
            "changed": change["changed"],
        }

    async def _score(self, family: str, **kw: Any) -> tuple[pa.Table, dict[str, Any]]:
        """Run one ranking in a Ray task and await it; cancelling this cancels the task."""
        import ray

        report_to = kw.pop("report_to", None)
        needs_pipeline = kw["heuristic"] not in NO_MODEL_HEURISTICS
        assert self._slots is not None
        slot = self._slots if needs_pipeline else contextlib.nullcontext()
        async with slot:
            task = ray.remote(_rank_task).options(num_cpus=0, max_retries=0)
            ref = task.remote(
                self.project.name,
                self.project.store_uri,
                family,
                settings=self.settings,
                report_to=report_to,
                **kw,
            )
            try:
                return await ref
            except asyncio.CancelledError:
                ray.cancel(ref, force=True)
                raise
            except ray.exceptions.RayTaskError as e:
                raise _unwrap(e) from None

    # inbox ------------------------------------------------------------------------------------
    async def _consume_inbox(self) -> set[str]:
        """Count label additions written to the store while no coordinator ran (the CLI does
        that without a Ray cluster). Names are remembered before the files go, so a crash in
        between never counts a file twice."""
        inbox = self.store.sub("coordinator", "inbox")
        names = await asyncio.to_thread(inbox.list, suffix=".json")
        touched: set[str] = set()
        for name in names:
            if any(name in self.state[f].inbox_seen for f in FAMILIES):
                continue
            counts = self._check_counts(
                (await asyncio.to_thread(inbox.read_json, name)).get("family_counts", {})
            )
            for family, count in counts.items():
                self.state[family].new_labels += count
                self.state[family].inbox_seen.append(name)
                touched.add(family)
        for family in touched:
            await self._save_state(family)
        for name in names:
            await asyncio.to_thread(inbox.delete, name)
        for family in FAMILIES:
            if self.state[family].inbox_seen:
                self.state[family].inbox_seen = []
                await self._save_state(family)
        return touched

    # public: runs -----------------------------------------------------------------------------
    async def create_run(
        self,
        name: str,
        family: str,
        heuristic: str,
        n: int,
        datasets: list[str] | None = None,
        reduction: str | None = None,
    ) -> dict[str, Any]:
        """Queue a ranks-on-demand run; invalid requests are refused with what to fix."""
        await self._ready()
        fs = self.family_settings.get(family)
        reduction = reduction or (fs.reduction if fs else "mean")
        known = await asyncio.to_thread(self.project.datasets)
        model = await asyncio.to_thread(self._latest_model, family) if fs else None
        validate_request(
            name=name,
            family=family,
            heuristic=heuristic,
            n=n,
            datasets=datasets,
            reduction=reduction,
            known_datasets=known,
            has_model=lambda f: model is not None,
        )
        run = await self.runs.create(
            name=name.strip(),
            family=family,
            heuristic=heuristic,
            reduction=reduction,
            mc_samples=fs.mc_samples if fs else None,
            n=n,
            datasets=datasets,
        )
        return run.model_dump()

    async def list_runs(self, status: str | None = None) -> list[dict[str, Any]]:
        await self._ready()
        return [r.model_dump() for r in self.runs.list(status)]

    async def get_run(self, run_id: str) -> dict[str, Any]:
        await self._ready()
        return self.runs.get(run_id).model_dump()

    async def run_result(self, run_id: str) -> pa.Table:
        """A completed run's top n (image_id, file_name, dataset, score, rank)."""
        await self._ready()
        return await asyncio.to_thread(self.runs.result, run_id)

    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        await self._ready()
        return (await self.runs.cancel(run_id)).model_dump()

    async def report_progress(self, run_id: str, fraction: float) -> None:
        """Called by a run's Ray task."""
        await self._ready()
        self.runs.progress(run_id, fraction)

    async def _execute_run(self, run: Run, progress: Any) -> tuple[pa.Table, dict[str, Any]]:
        needs_pipeline = run.heuristic not in NO_MODEL_HEURISTICS
        if needs_pipeline and self._slots is not None and self._slots.locked():
            run.note = "waiting for a scoring slot (one Ray Data pipeline per 8 CPUs)"
        try:
            return await self._score(
                run.family,
                heuristic=run.heuristic,
                reduction=run.reduction,
                n=run.n,
                datasets=run.datasets,
                mc_samples=run.mc_samples,
                model_version=None,
                report_to=(self._name, self._namespace, run.id),
            )
        finally:
            run.note = None

    # public: notifications --------------------------------------------------------------------
    async def notifications_after(
        self, after: int = 0, limit: int | None = 100, types: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Notifications with an id above ``after``, oldest first."""
        await self._ready()
        return [n.to_dict() for n in self.notifications.after(after, limit, types)]

    async def wait_notifications(
        self,
        after: int = 0,
        timeout: float = 30.0,
        limit: int | None = 100,
        types: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Long poll: the notifications after ``after`` as soon as there are some (or [])."""
        await self._ready()
        found = await self.notifications.wait(after, timeout, limit, types)
        return [n.to_dict() for n in found]

    async def mark_read(self, up_to: int | None = None) -> dict[str, int]:
        await self._ready()
        through = await self.notifications.mark_read(up_to)
        return {"read_through": through, "unread": self.notifications.unread_count()}

    async def unread_count(self) -> int:
        await self._ready()
        return self.notifications.unread_count()

    # public: webhooks -------------------------------------------------------------------------
    async def add_webhook(self, url: str, secret: str, **options: Any) -> dict[str, Any]:
        """Register a webhook (http/https URL, secret of 8+ characters) for new notifications."""
        await self._ready()
        return await self.webhooks.add(url, secret, **options)

    async def list_webhooks(self) -> list[dict[str, Any]]:
        await self._ready()
        return self.webhooks.list()

    async def remove_webhook(self, webhook_id: str) -> dict[str, Any]:
        await self._ready()
        return await self.webhooks.remove(webhook_id)

    async def webhook_deliveries(self, webhook_id: str, limit: int = 50) -> list[dict[str, Any]]:
        await self._ready()
        return self.webhooks.deliveries(webhook_id, limit)


# --------------------------------------------------------------------------------- clients
def write_inbox(project: Project, family_counts: dict[str, int]) -> str:
    """Record label additions for a coordinator that is not running (it counts them on start)."""
    Coordinator._check_counts(family_counts)
    name = unique_name("labels-", ".json")
    project.store.write_json(
        {"family_counts": dict(family_counts), "time": _now()}, "coordinator", "inbox", name
    )
    return name


def get_coordinator(
    project_name: str,
    store_uri: str | None = None,
    *,
    namespace: str = NAMESPACE,
    settings: Settings | None = None,
) -> Any:
    """The project's coordinator actor (created if it does not run yet), after making sure this
    process is connected to Ray (``ALRAY_RAY_ADDRESS`` / ``RAY_ADDRESS``, else a local Ray).

    The actor is detached: it outlives this process, but not the Ray cluster it runs in.
    """
    import ray

    from alray._ray import ensure_ray

    settings = settings or load_settings()
    store_uri = normalize_store(store_uri or settings.store)
    Project.open(project_name, store_uri)  # a missing project fails here, clearly
    ensure_ray(settings.ray_address, settings.num_cpus)
    actor_cls = ray.remote(Coordinator)
    handle = actor_cls.options(
        name=actor_name(project_name),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        max_concurrency=1000,
    ).remote(project_name, store_uri, settings, namespace)
    info = ray.get(handle.ping.remote())
    if info["store"] != store_uri:
        raise CoordinatorError(
            f"the coordinator of project {project_name!r} in Ray namespace {namespace!r} serves "
            f"store {info['store']}, not {store_uri}; use that store, another namespace, or "
            f"stop it with `ray.kill(ray.get_actor({actor_name(project_name)!r}, "
            f"namespace={namespace!r}))`"
        )
    return handle


def kill_coordinator(project_name: str, namespace: str = NAMESPACE) -> bool:
    """Stop a project's coordinator for good (its state stays in the store); False if none."""
    import ray

    try:
        handle = ray.get_actor(actor_name(project_name), namespace=namespace)
    except ValueError:
        return False
    ray.kill(handle, no_restart=True)
    return True


class Client:
    """Blocking calls to a project's coordinator: ``Client(p, store).create_run(...)``.

    Each attribute is an actor method; errors raised in the actor come back as themselves
    (``FamilySettingsError``, ``RunError``…) without Ray's wrapping.
    """

    def __init__(
        self,
        project_name: str,
        store_uri: str | None = None,
        *,
        namespace: str = NAMESPACE,
        settings: Settings | None = None,
        timeout: float | None = None,
    ) -> None:
        self.handle = get_coordinator(
            project_name, store_uri, namespace=namespace, settings=settings
        )
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("handle", "timeout"):
            raise AttributeError(name)
        method = getattr(self.handle, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            try:
                return ray.get(method.remote(*args, **kwargs), timeout=self.timeout)
            except ray.exceptions.RayTaskError as e:
                raise _unwrap(e) from None

        call.__name__ = name
        return call


__all__ = [
    "NAMESPACE",
    "Client",
    "Coordinator",
    "CoordinatorError",
    "FamilySettings",
    "FamilySettingsError",
    "FamilyState",
    "actor_name",
    "get_coordinator",
    "kill_coordinator",
    "normalize_store",
    "write_inbox",
]
