"""Rank versions in the store: each full ranking of a family's unlabeled images, numbered.

    ranks/<family>/v0003/ranks.parquet   image_id, file_name, dataset, score, rank (1 = best)
    ranks/<family>/v0003/meta.json       model version, heuristic, reduction, time, skipped…

``meta.json`` is written last: a version without it is unfinished and never listed.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from alray.project import Project, check_family

RANK_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("file_name", pa.string()),
        ("dataset", pa.string()),
        ("score", pa.float64()),
        ("rank", pa.int64()),
    ]
)


def _folder(version: int) -> str:
    return f"v{version:04d}"


def list_versions(project: Project, family: str) -> list[int]:
    """Finished rank versions of a family, oldest first."""
    check_family(family)
    s = project.store.sub("ranks", family)
    out = []
    for d in s.list_dirs():
        if d.startswith("v") and d[1:].isdigit() and s.exists(d, "meta.json"):
            out.append(int(d[1:]))
    return sorted(out)


def next_version(project: Project, family: str) -> int:
    s = project.store.sub("ranks", family)
    taken = [int(d[1:]) for d in s.list_dirs() if d.startswith("v") and d[1:].isdigit()]
    return max(taken, default=0) + 1


def write_version(project: Project, family: str, table: pa.Table, meta: dict[str, Any]) -> int:
    """Store a ranking (already in rank order, with a ``rank`` column) as the next version."""
    version = next_version(project, family)
    s = project.store.sub("ranks", family, _folder(version))
    s.write_parquet(table.select(RANK_SCHEMA.names).cast(RANK_SCHEMA), "ranks.parquet")
    s.write_json(
        {**meta, "version": version, "family": family, "images": table.num_rows}, "meta.json"
    )
    return version


def read_meta(project: Project, family: str, version: int) -> dict[str, Any]:
    return project.store.read_json("ranks", family, _folder(version), "meta.json")


def read_version(project: Project, family: str, version: int | None = None) -> pa.Table:
    """A stored ranking in rank order (the latest when ``version`` is None)."""
    if version is None:
        versions = list_versions(project, family)
        if not versions:
            raise LookupError(
                f"no ranks for family {family!r} in project {project.name!r} yet: "
                f"run `alray rank {project.name} --family {family}` after training a model"
            )
        version = versions[-1]
    t = project.store.read_parquet("ranks", family, _folder(version), "ranks.parquet")
    return RANK_SCHEMA.empty_table() if t is None else t


def current(
    project: Project,
    family: str,
    *,
    limit: int | None = None,
    offset: int = 0,
    dataset: str | None = None,
    version: int | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The latest ranking with images labeled since then left out, and its meta.

    Ranks are those of the stored version (gaps show where labeled images were).
    """
    if version is None:
        versions = list_versions(project, family)
        if not versions:
            read_version(project, family)  # raises the helpful LookupError
        version = versions[-1]
    meta = read_meta(project, family, version)
    t = read_version(project, family, version)
    t = t.filter(pc.invert(pc.is_in(t["image_id"], project.labeled_ids(family))))
    if dataset is not None:
        t = t.filter(pc.equal(t["dataset"], dataset))
    end = None if limit is None else offset + limit
    return t.slice(offset, None if end is None else max(0, end - offset)), meta


EXPORT_FORMATS = (".csv", ".json", ".parquet")


def export(table: pa.Table, path: str) -> str:
    """Write a ranking as CSV, JSON (a list of rows) or Parquet, chosen by the file's suffix."""
    import json
    import os

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = os.path.splitext(path)[1].lower()
    if suffix not in EXPORT_FORMATS:
        raise ValueError(f"cannot write {path!r}: use a file ending in {', '.join(EXPORT_FORMATS)}")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    if suffix == ".csv":
        pacsv.write_csv(table, tmp)
    elif suffix == ".parquet":
        pq.write_table(table, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table.to_pylist(), f, indent=1)
    os.replace(tmp, path)
    return path
