"""Score a family's unlabeled images with its current model and rank them, on Ray Data.

The job: images manifest → keep unlabeled → read + decode (Ray tasks) → model replicas in an
actor pool (one GPU each when the cluster has GPUs) → one score per image (the family's
heuristic and reduction) → ranking, ties by image id. ``n`` keeps only the best ``n`` per
block and merges them, so memory stays O(n); a full ranking is spilled to disk as it streams
in and sorted there, never held as Python objects on the driver.

>>> from alray.scoring import plan_resources
>>> plan_resources({"CPU": 8.0}, device="auto").max_replicas
7
>>> plan_resources({"CPU": 16.0, "GPU": 2.0}, device="auto").num_gpus
1.0
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alray import _scorer, families, heuristics, ranks
from alray.project import Project, check_family
from alray.ranking import TopK
from alray.settings import Settings, load_settings

Progress = Callable[[int, "int | None"], None]
SPILL_SORT_IN_MEMORY_ROWS = 5_000_000  # above this, the spilled ranking is sorted by Ray Data
MAX_SKIPPED_LISTED = 1000


@dataclass(frozen=True)
class Resources:
    """How a scoring job asks the cluster for model replicas."""

    device: str  # "cpu" or "cuda"
    num_gpus: float  # per replica
    num_cpus: float  # per replica
    min_replicas: int
    max_replicas: int
    threads: int  # torch intra-op threads per replica


def plan_resources(
    cluster: dict[str, float],
    *,
    device: str = "auto",
    min_replicas: int = 1,
    max_replicas: int | None = None,
) -> Resources:
    """Replica resources for a cluster: one GPU per replica when GPUs exist (decode stays on
    CPU), else CPU replicas leaving one CPU free for Ray Data's read tasks (a pool that takes
    every CPU can starve the reads and hang the dataset).

    An explicit ``max_replicas`` is kept even above what the cluster has now: on an
    autoscaling cluster (workers at min 0) that is how far the pool may grow as nodes join;
    Ray Data only adds replicas onto resources that exist. The replicas started up front
    stay within today's cluster. ``device="cuda"`` on a cluster with no GPU yet is refused
    unless ``max_replicas`` says how many GPU nodes to wait for.
    """
    cpus = int(cluster.get("CPU", 0))
    gpus = int(cluster.get("GPU", 0))
    if device == "cuda" and gpus == 0 and not max_replicas:
        raise RuntimeError(
            "ALRAY_DEVICE=cuda but the Ray cluster has no GPU; use auto or cpu, or set "
            "ALRAY_SCORER_MAX_REPLICAS so that an autoscaler can add GPU nodes"
        )
    if device == "cuda" or (gpus and device == "auto"):
        top = max_replicas or gpus
        low = max(1, min(min_replicas, top, gpus))
        return Resources("cuda", 1.0, 1.0, low, top, max(1, cpus // max(gpus, 1) - 1))
    top = max_replicas or max(1, cpus - 1)
    low = max(1, min(min_replicas, top, cpus - 1))
    threads = max(1, cpus // top)
    return Resources("cpu", 0.0, 1.0, low, top, threads)


@dataclass
class Ranking:
    """A ranking: ``table`` (image_id, file_name, dataset, score, rank) in rank order."""

    table: pa.Table
    meta: dict[str, Any]
    version: int | None = None  # the stored rank version, when it was saved
    skipped: list[dict[str, str]] = field(default_factory=list)


def rank(
    project: Project,
    family: str,
    *,
    heuristic: str = heuristics.DEFAULT_HEURISTIC,
    reduction: str = "mean",
    n: int | None = None,
    datasets: list[str] | None = None,
    model_version: int | None = None,
    mc_samples: int | None = None,
    seed: int = 0,
    save: bool = False,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> Ranking:
    """Rank the unlabeled images of ``family`` (optionally of some datasets, top ``n`` only).

    ``heuristic="none"`` orders by file name and needs no model. ``save`` stores the result
    as the family's next rank version (what ``alray ranks`` and the API serve).
    """
    check_family(family)
    heuristics.get(heuristic)  # unknown names fail here, listing the known ones
    if reduction not in families.REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; choose one of {', '.join(families.REDUCTIONS)}"
        )
    if n is not None and n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    settings = settings or load_settings()
    mc = mc_samples or settings.mc_samples
    started = time.time()
    manifest = project.unlabeled(family, datasets).select(
        ["image_id", "file_name", "dataset", "uri"]
    )
    meta: dict[str, Any] = {
        "heuristic": heuristic,
        "reduction": reduction,
        "datasets": datasets,
        "n": n,
        "seed": seed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if heuristic in ("none", "random"):
        table, skipped = _rank_without_model(manifest, heuristic, seed, n)
        meta["model_version"] = None
        if progress:
            progress(manifest.num_rows, manifest.num_rows)
    else:
        from alray.assistants import list_versions

        metas = {m["version"]: m for m in list_versions(project, family)}
        version = model_version or max(metas, default=None)
        if version is None:
            raise LookupError(
                f"no {family} model in project {project.name!r} yet: train one with "
                f"`alray train {project.name} --family {family}` or add one with `alray models add`"
            )
        if version not in metas:
            raise LookupError(
                f"no {family} model version {version}; versions: {', '.join(map(str, metas))}"
            )
        meta["model_version"] = version
        meta["mc_samples"] = mc if heuristic == "bald" else None
        table, skipped = _rank_with_model(
            project,
            family,
            manifest,
            metas[version],
            heuristic,
            reduction,
            mc,
            seed,
            n,
            progress,
            settings,
        )
    meta["skipped_count"] = len(skipped)
    meta["skipped"] = skipped[:MAX_SKIPPED_LISTED]
    meta["seconds"] = round(time.time() - started, 3)
    result = Ranking(table, meta, skipped=skipped)
    if save:
        result.version = ranks.write_version(project, family, table, meta)
    return result


def _rank_without_model(manifest: pa.Table, heuristic: str, seed: int, n: int | None):
    if heuristic == "none":
        order = pc.sort_indices(manifest, [("file_name", "ascending"), ("image_id", "ascending")])
        t = manifest.take(order).append_column("score", pa.nulls(manifest.num_rows, pa.float64()))
    else:
        scores = _scorer.random_scores(manifest["image_id"].to_pylist(), seed)
        t = _sort_scored(manifest.append_column("score", pa.array(scores)))
    if n is not None:
        t = t.slice(0, n)
    return _with_rank(t), []


def _sort_scored(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("score", "descending"), ("image_id", "ascending")]))


def _with_rank(t: pa.Table) -> pa.Table:
    t = t.select(["image_id", "file_name", "dataset", "score"])
    return t.append_column("rank", pa.array(np.arange(1, t.num_rows + 1, dtype=np.int64)))


def _rank_with_model(
    project, family, manifest, model_meta, heuristic, reduction, mc, seed, n, progress, settings
):
    import ray

    from alray._ray import ensure_ray

    ensure_ray(settings.ray_address, settings.num_cpus)
    total = manifest.num_rows
    if progress:
        progress(0, total)
    if total == 0:
        return _with_rank(manifest.append_column("score", pa.array([], pa.float64()))), []
    res = plan_resources(
        ray.cluster_resources(),
        device=settings.device,
        min_replicas=settings.scorer_min_replicas,
        max_replicas=settings.scorer_max_replicas,
    )
    input_size = tuple(model_meta["input_size"])
    batch = settings.batch_size
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(os.environ.get("ALRAY_PROGRESS_BARS", "1") != "0")
    # Blocks of a few batches keep every replica busy without huge objects in the store.
    blocks = max(res.max_replicas * 4, -(-total // (batch * 4)))
    ds = ray.data.from_arrow(manifest).repartition(min(blocks, total))
    ds = ds.map_batches(
        _scorer.decode_batch,
        fn_kwargs={"input_size": input_size},
        batch_format="pyarrow",
        batch_size=batch,
        num_cpus=1,
    )
    ds = ds.map_batches(
        _scorer.Scorer,
        fn_constructor_kwargs={
            "project_name": project.name,
            "store_uri": project.store_uri,
            "family": family,
            "model_version": model_meta["version"],
            "heuristic": heuristic,
            "reduction": reduction,
            "mc_samples": mc,
            "seed": seed,
            "device": res.device,
            "threads": res.threads,
        },
        compute=ray.data.ActorPoolStrategy(min_size=res.min_replicas, max_size=res.max_replicas),
        batch_size=batch,
        batch_format="numpy",
        num_cpus=res.num_cpus,
        num_gpus=res.num_gpus,
    )
    if n is not None:
        ds = ds.map_batches(
            _scorer.top_n_per_block, fn_kwargs={"n": n}, batch_size=None, batch_format="numpy"
        )
        return _collect_top(ds, n, total, progress)
    return _collect_full(ds, total, progress)


def _skips(batch: dict[str, np.ndarray]) -> list[dict[str, str]]:
    bad = np.flatnonzero(batch["error"] != "")
    return [
        {
            "image_id": str(batch["image_id"][i]),
            "uri": str(batch["uri"][i]),
            "error": str(batch["error"][i]),
        }
        for i in bad
    ]


def _collect_top(ds, n: int, total: int, progress: Progress | None):
    top = TopK(n)
    skipped: list[dict[str, str]] = []
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        good = b["error"] == ""
        skipped += _skips(b)
        top.add(
            b["score"][good],
            b["image_id"][good],
            file_name=b["file_name"][good],
            dataset=b["dataset"][good],
        )
        if progress:
            progress(len(b["error"]), None)  # approximate: blocks arrive already reduced
    res = top.result()
    t = pa.table(
        {
            "image_id": pa.array(res["image_id"].astype(str)),
            "file_name": pa.array(res["file_name"].astype(str)),
            "dataset": pa.array(res["dataset"].astype(str)),
            "score": pa.array(res["score"], pa.float64()),
        }
    )
    return _with_rank(t), skipped


def _collect_full(ds, total: int, progress: Progress | None):
    skipped: list[dict[str, str]] = []
    schema = pa.schema(
        [
            ("image_id", pa.string()),
            ("file_name", pa.string()),
            ("dataset", pa.string()),
            ("score", pa.float64()),
        ]
    )
    with tempfile.TemporaryDirectory(prefix="alray-spill-") as tmp:
        path = os.path.join(tmp, "scores.parquet")
        rows = 0
        with pq.ParquetWriter(path, schema) as writer:
            for b in ds.iter_batches(batch_format="numpy", batch_size=None):
                good = b["error"] == ""
                skipped += _skips(b)
                writer.write_table(
                    pa.table(
                        {
                            "image_id": pa.array(b["image_id"][good].astype(str)),
                            "file_name": pa.array(b["file_name"][good].astype(str)),
                            "dataset": pa.array(b["dataset"][good].astype(str)),
                            "score": pa.array(b["score"][good], pa.float64()),
                        },
                        schema=schema,
                    )
                )
                rows += int(good.sum())
                if progress:
                    progress(len(good), None)
        if rows <= SPILL_SORT_IN_MEMORY_ROWS:
            t = _sort_scored(pq.read_table(path))
        else:
            t = _sort_spilled_with_ray(path)
    return _with_rank(t), skipped


def _sort_spilled_with_ray(path: str) -> pa.Table:
    import ray.data

    ds = ray.data.read_parquet(path).sort(["score", "image_id"], descending=[True, False])
    return pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))
