"""``alray.Project``: an annotation project's images, labels and everything derived from them.

A project lives under a store URI (a local folder, ``s3://…``, any ``pyarrow.fs`` URI)::

    <store>/<project>/
        project.json                   name, creation time, format version
        images/part-*.parquet          the images manifest, appended per import
        labels/<family>/part-*.parquet one row per annotation; the newest import of an image wins
        models/<family>/vNNNN/         model versions (alray.assistants)
        ranks/<family>/vNNNN/          rank versions (alray.scoring)
        reports/                       what imports skipped and why

Every table is append-only and every object is written atomically, so a process killed at any
moment leaves the previous state readable, on a laptop folder and on object storage alike.

>>> import tempfile, os
>>> from PIL import Image
>>> d = tempfile.mkdtemp()
>>> os.makedirs(f"{d}/imgs/A")
>>> Image.new("RGB", (8, 6)).save(f"{d}/imgs/A/x.png")
>>> p = Project.create("demo", store=f"{d}/store")
>>> p.add_images(f"{d}/imgs").added
1
>>> p.images().column("dataset").to_pylist()
['A']
"""

from __future__ import annotations

import csv
import hashlib
import os
import posixpath
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from alray import _importers, families
from alray._fs import Store, is_uri, resolve, unique_name
from alray._images import (
    IMAGE_EXTENSIONS,
    Found,
    NotAnImage,
    Refused,
    map_threaded,
    parse_header,
    read_local_header,
    walk_local,
)
from alray.families import FAMILIES
from alray.settings import load_settings

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("file_name", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("seq", pa.int64()),
        ("label", pa.string()),
        ("bbox", pa.list_(pa.float64())),
        ("rle_size", pa.list_(pa.int32())),
        ("rle_counts", pa.list_(pa.int64())),
        ("attributes", pa.list_(pa.string())),
        ("source", pa.string()),
    ]
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Progress = Callable[[int, "int | None"], None]  # advance(n, total)


class ProjectError(ValueError):
    """A project operation cannot be done as asked; the message says how to fix it."""


class LabelImportError(ProjectError):
    """A label file has problems; nothing was imported."""

    def __init__(self, message: str, problems: list[str]):
        super().__init__(message)
        self.problems = problems


@dataclass
class AddReport:
    """What ``Project.add_images`` did."""

    added: int = 0
    already_present: int = 0
    ignored: int = 0  # files that are not images (by content) and have no image extension
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    datasets: dict[str, int] = field(default_factory=dict)  # added per dataset

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "already_present": self.already_present,
            "ignored": self.ignored,
            "skipped": len(self.problems),
            "problems": self.problems,
            "datasets": self.datasets,
        }


@dataclass
class ImportReport:
    """What ``Project.import_labels`` did: per family, images labeled and annotations."""

    images: dict[str, int] = field(default_factory=dict)
    annotations: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "annotations": self.annotations, "problems": self.problems}


def check_family(family: str) -> str:
    """``family``, or a ``ProjectError`` listing the families (the list is ``alray.families``)."""
    try:
        return families.check_family(family)
    except ValueError as e:
        raise ProjectError(str(e)) from None


def image_id_for(dataset: str, file_name: str) -> str:
    """Stable id of an image: the same dataset and file name always give the same id."""
    return hashlib.sha1(f"{dataset}/{file_name}".encode()).hexdigest()[:16]


class Project:
    """One annotation project under a store. Use ``Project.create`` or ``Project.open``."""

    def __init__(self, name: str, store: str | None = None, *, _check: bool = True):
        self.name = name
        self.store_uri = store if store is not None else load_settings().store
        self.store = Store(self.store_uri).sub(name)
        if _check and not self.store.exists("project.json"):
            known = list_projects(self.store_uri)
            hint = f" Projects there: {', '.join(known)}." if known else ""
            raise ProjectError(
                f"no project {name!r} in store {self.store_uri}.{hint} "
                f"Create it with: alray project create {name} --images DIR"
            )

    def __repr__(self) -> str:
        return f"Project({self.name!r}, store={self.store_uri!r})"

    # life cycle ------------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, store: str | None = None, *, exist_ok: bool = False) -> Project:
        """Create an empty project (``exist_ok`` opens an existing one instead of failing)."""
        if not _NAME.match(name):
            raise ProjectError(
                f"invalid project name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit"
            )
        p = cls(name, store, _check=False)
        if p.store.exists("project.json"):
            if exist_ok:
                return p
            raise ProjectError(f"project {name!r} already exists in {p.store_uri}")
        p.store.write_json({"name": name, "created": _now(), "format": 1}, "project.json")
        return p

    @classmethod
    def open(cls, name: str, store: str | None = None) -> Project:
        return cls(name, store)

    def info(self) -> dict[str, Any]:
        return self.store.read_json("project.json")

    # images ----------------------------------------------------------------------------------
    def add_images(
        self,
        images: str | None = None,
        *,
        list_file: str | None = None,
        dataset: str | None = None,
        progress: Progress | None = None,
    ) -> AddReport:
        """Register images from a folder (recursive) or a CSV/Parquet list of URIs.

        The dataset is ``dataset`` when given, else the top-level subfolder (files directly in
        the folder go to a dataset named after the folder). Re-adding the same images does
        nothing. Unreadable files and links leaving the folder are reported, never fatal.
        """
        if (images is None) == (list_file is None):
            raise ProjectError("give exactly one of images (a folder) or list_file (CSV/Parquet)")
        if dataset is not None and not _NAME.match(dataset):
            raise ProjectError(
                f"invalid dataset name {dataset!r}: use letters, digits, '_', '-', '.'"
            )
        report = AddReport()
        if images is not None:
            candidates = self._folder_candidates(images, dataset, report)
        else:
            candidates = self._list_candidates(list_file, dataset, report)

        existing = set(self._column("images", "image_id"))
        fresh: dict[str, tuple[str, str, str]] = {}
        for ds, fname, uri in candidates:
            iid = image_id_for(ds, fname)
            if iid in existing or iid in fresh:
                report.already_present += 1
            else:
                fresh[iid] = (ds, fname, uri)
        if progress:
            progress(0, len(fresh))

        ids: list[str] = []
        names: list[str] = []
        dss: list[str] = []
        uris: list[str] = []
        widths: list[int] = []
        heights: list[int] = []

        def head(item: tuple[str, tuple[str, str, str]]):
            iid, (ds, fname, uri) = item
            try:
                h = read_local_header(uri) if not is_uri(uri) else _remote_header(uri)
                return iid, ds, fname, uri, h, None
            except NotAnImage as e:
                return iid, ds, fname, uri, None, str(e)
            except OSError as e:
                return iid, ds, fname, uri, None, f"unreadable: {e.strerror or e}"
            except ValueError as e:  # e.g. pyarrow cannot parse a listed URI
                return iid, ds, fname, uri, None, f"unreadable: {e}"

        done = 0
        for iid, ds, fname, uri, h, err in map_threaded(head, fresh.items()):
            done += 1
            if progress and done % 256 == 0:
                progress(256, None)
            if h is None:
                if err.startswith("not an image") and _ext(fname) not in IMAGE_EXTENSIONS:
                    report.ignored += 1
                else:
                    report.problems.append({"path": uri, "reason": err})
                continue
            ids.append(iid)
            names.append(fname)
            dss.append(ds)
            uris.append(uri)
            widths.append(h.width)
            heights.append(h.height)
        if progress and done % 256:
            progress(done % 256, None)
        for ds in dss:
            report.datasets[ds] = report.datasets.get(ds, 0) + 1
        report.added = len(ids)
        if report.added:
            table = pa.table([ids, names, dss, uris, widths, heights], schema=MANIFEST_SCHEMA)
            self.store.write_parquet(table, "images", unique_name("part-", ".parquet"))
        if report.problems:
            self.store.write_json(report.to_dict(), "reports", unique_name("images-", ".json"))
        return report

    def _folder_candidates(self, root: str, dataset: str | None, report: AddReport) -> list:
        out = []
        if is_uri(root) and not root.startswith("file://"):
            fs, base = resolve(root)
            base = base.rstrip("/")
            src = Store(root, fs, base)
            query = root.split("?", 1)[1] if "?" in root else ""
            scheme = root.split("://", 1)[0]
            for path in src.walk_files():
                rel = path[len(base) + 1 :]
                if any(part.startswith(".") for part in rel.split("/")):
                    continue  # hidden, as in local folders
                ds, fname = _split_dataset(rel, dataset, posixpath.basename(base))
                # object keys may hold spaces, '%', '#', '?': quote them so the URI parses back
                uri = f"{scheme}://{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
                out.append((ds, fname, uri))
            return out
        root = root[len("file://") :] if root.startswith("file://") else root
        root_name = os.path.basename(os.path.realpath(root))
        for f in walk_local(root):
            if isinstance(f, Refused):
                report.problems.append({"path": f.path, "reason": f.reason})
                continue
            assert isinstance(f, Found)
            ds, fname = _split_dataset(f.rel, dataset, root_name)
            out.append((ds, fname, f.path))
        return out

    def _list_candidates(self, list_file: str, dataset: str | None, report: AddReport) -> list:
        if not os.path.isfile(list_file):
            raise ProjectError(f"no such file: {list_file}")
        base = os.path.dirname(os.path.realpath(list_file))
        if list_file.endswith(".parquet"):
            t = pq.read_table(list_file)
            cols = {c.lower(): c for c in t.column_names}
            records = t.to_pylist()
        else:
            with open(list_file, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                cols = {c.lower(): c for c in (reader.fieldnames or [])}
                records = list(reader)
        key = cols.get("uri") or cols.get("path")
        if key is None:
            raise ProjectError(
                f"{list_file} needs a 'uri' (or 'path') column; found: {', '.join(cols) or 'none'}"
            )
        out = []
        for n, r in enumerate(records, start=2):
            raw = str(r.get(key) or "").strip()
            if not raw:
                report.problems.append({"path": f"{list_file}:{n}", "reason": "empty uri"})
                continue
            row_ds = r.get(cols["dataset"]) if "dataset" in cols else None
            ds_given = dataset or (str(row_ds) if row_ds else None)
            if is_uri(raw) and not raw.startswith("file://"):
                fname = raw.split("?", 1)[0].rsplit("/", 1)[-1]
                ds = ds_given or posixpath.basename(posixpath.dirname(raw.split("://", 1)[1]))
                out.append((ds, fname, raw))
                continue
            local = raw[len("file://") :] if raw.startswith("file://") else raw
            if os.path.isabs(local):
                path = os.path.realpath(local)
                ds = ds_given or os.path.basename(os.path.dirname(path))
                out.append((ds, os.path.basename(path), path))
                continue
            path = os.path.realpath(os.path.join(base, local))
            if os.path.commonpath([base, path]) != base:
                report.problems.append(
                    {"path": raw, "reason": f"resolves to {path}, outside the list's folder {base}"}
                )
                continue
            rel = os.path.relpath(os.path.join(base, os.path.normpath(local)), base).replace(
                os.sep, "/"
            )
            ds, fname = _split_dataset(rel, ds_given, os.path.basename(base))
            out.append((ds, fname, os.path.join(base, os.path.normpath(local))))
        return out

    def images(
        self, datasets: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pa.Table:
        """The images manifest (optionally of some datasets), sorted by image id."""
        t = self.store.read_parquet("images", columns=columns)
        if t is None:
            t = MANIFEST_SCHEMA.empty_table()
            if columns:
                t = t.select(columns)
        if datasets is not None:
            wanted = list(datasets)
            unknown = sorted(set(wanted) - set(self.datasets()))
            if unknown:
                raise ProjectError(
                    f"unknown dataset(s) {', '.join(unknown)} in project {self.name!r}; "
                    f"datasets: {', '.join(self.datasets()) or 'none yet'}"
                )
            t = t.filter(pc.is_in(t["dataset"], pa.array(wanted)))
        if "image_id" in t.column_names:
            t = t.sort_by("image_id")
        return t

    def datasets(self) -> list[str]:
        return sorted(set(self._column("images", "dataset")))

    def read_image_bytes(self, uri: str) -> bytes:
        return read_uri(uri)

    # labels ----------------------------------------------------------------------------------
    def import_labels(
        self,
        *,
        coco: str | None = None,
        csv: str | None = None,
        image_folder: str | None = None,
        skip_invalid: bool = False,
    ) -> ImportReport:
        """Import labels; each image's labels for a family replace what it had before.

        Problems (unknown image, box outside the image, unknown category) stop the import
        with a list of them, unless ``skip_invalid`` imports the valid labels and reports the rest.
        """
        given = [
            (k, v) for k, v in (("coco", coco), ("csv", csv), ("image_folder", image_folder)) if v
        ]
        if len(given) != 1:
            raise ProjectError("give exactly one label source: coco=, csv= or image_folder=")
        kind, src = given[0]
        if kind != "image_folder" and not os.path.isfile(src):
            raise ProjectError(f"no such file: {src}")
        parsed = {
            "coco": _importers.parse_coco,
            "csv": _importers.parse_csv,
            "image_folder": _importers.parse_image_folder,
        }[kind](src)
        problems = list(_importers.iter_problems(parsed))
        resolver = _Resolver(
            self.images(columns=["image_id", "file_name", "dataset", "uri", "width", "height"])
        )
        good: dict[str, list[_importers.LabelRow]] = {}
        ids: dict[int, str] = {}
        # One annotation can give rows to several families (a mask → detector, instance and
        # semantic segmentor): it is valid or invalid as a whole, and reported once.
        bad: set[tuple[str, str]] = set()
        reported: set[str] = set()
        for row in parsed.rows:
            iid, err = resolver.resolve(row.ref)
            if err is None:
                err = resolver.check_geometry(iid, row)
            if err is not None:
                bad.add((row.where, row.ref))
                msg = f"{row.where} ({row.ref}): {err}"
                if msg not in reported:
                    reported.add(msg)
                    problems.append(msg)
                continue
            ids[id(row)] = iid
        for row in parsed.rows:
            if id(row) in ids and (row.where, row.ref) not in bad:
                good.setdefault(row.family, []).append(row)
        if problems and not skip_invalid:
            shown = "\n  ".join(problems[:10])
            more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise LabelImportError(
                f"{len(problems)} problem(s) in {src}; nothing was imported. Fix them, or import "
                f"the valid labels with --skip-invalid:\n  {shown}{more}",
                problems,
            )
        report = ImportReport(problems=problems)
        seq = time.time_ns()
        for family, rows in good.items():
            table = _label_table([(ids[id(r)], r) for r in rows], seq, src)
            self.store.write_parquet(table, "labels", family, unique_name("part-", ".parquet"))
            report.images[family] = len({ids[id(r)] for r in rows})
            report.annotations[family] = len(rows)
        if problems:
            self.store.write_json(report.to_dict(), "reports", unique_name("labels-", ".json"))
        return report

    def labels(self, family: str) -> pa.Table:
        """The current labels of a family: for each image, the rows of its newest import."""
        check_family(family)
        t = self.store.read_parquet("labels", family)
        if t is None or t.num_rows == 0:
            return LABEL_SCHEMA.empty_table()
        newest = t.group_by("image_id").aggregate([("seq", "max")])
        # no join: Acero joins refuse the list columns (bbox, rle_counts) as non-key fields
        row_newest = pc.take(newest["seq_max"], pc.index_in(t["image_id"], newest["image_id"]))
        t = t.filter(pc.equal(t["seq"], row_newest))
        return t.select(LABEL_SCHEMA.names).sort_by([("image_id", "ascending")])

    def labeled_ids(self, family: str) -> pa.Array:
        """Ids of the images that have labels for a family."""
        check_family(family)
        t = self.store.read_parquet("labels", family, columns=["image_id"])
        if t is None:
            return pa.array([], pa.string())
        return pc.unique(t["image_id"])

    def unlabeled(self, family: str, datasets: Iterable[str] | None = None) -> pa.Table:
        """Manifest rows of the images without labels for a family."""
        t = self.images(datasets)
        return t.filter(pc.invert(pc.is_in(t["image_id"], self.labeled_ids(family))))

    def counts(self) -> list[dict[str, Any]]:
        """Per dataset: images, and per family labeled and unlabeled."""
        t = self.images(columns=["image_id", "dataset"])
        out = []
        labeled = {f: self.labeled_ids(f) for f in FAMILIES}
        for ds in sorted(set(t["dataset"].to_pylist())):
            sub = t.filter(pc.equal(t["dataset"], ds))
            n = sub.num_rows
            fam = {}
            for f in FAMILIES:
                k = int(pc.sum(pc.is_in(sub["image_id"], labeled[f])).as_py() or 0)
                fam[f] = {"labeled": k, "unlabeled": n - k}
            out.append({"dataset": ds, "images": n, "families": fam})
        return out

    # helpers ---------------------------------------------------------------------------------
    def _column(self, folder: str, column: str) -> list:
        t = self.store.read_parquet(folder, columns=[column])
        return [] if t is None else t.column(column).to_pylist()


class _Resolver:
    """Finds the project image a label file means: by path, dataset/file, file name or base name."""

    def __init__(self, manifest: pa.Table):
        self.by_key: dict[str, list[str]] = {}
        self.size: dict[str, tuple[int, int]] = {}
        for iid, fname, ds, uri, w, h in zip(
            *(
                manifest[c].to_pylist()
                for c in ("image_id", "file_name", "dataset", "uri", "width", "height")
            ),
            strict=True,
        ):
            self.size[iid] = (w, h)
            keys = {uri, f"{ds}/{fname}", fname, posixpath.basename(fname)}
            if not is_uri(uri):
                keys.add(os.path.realpath(uri))
            for k in keys:
                self.by_key.setdefault(k, []).append(iid)

    def resolve(self, ref: str) -> tuple[str | None, str | None]:
        ref = ref.replace("\\", "/")
        for key in (ref, ref.removeprefix("./"), posixpath.basename(ref)):
            hits = sorted(set(self.by_key.get(key, [])))
            if len(hits) == 1:
                return hits[0], None
            if len(hits) > 1:
                return None, (
                    f"matches {len(hits)} images; name it as dataset/file_name to say which"
                )
        return None, "unknown image: not in the project (add it with `alray images add` first)"

    def check_geometry(self, iid: str, row: _importers.LabelRow) -> str | None:
        w, h = self.size[iid]
        if row.bbox is not None:
            x1, y1, x2, y2 = row.bbox
            tol = 1.0
            if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
                return f"box {[round(v, 1) for v in row.bbox]} (xyxy) is outside the {w}x{h} image"
        if row.mask is not None and list(row.mask["size"]) != [h, w]:
            return f"mask size {row.mask['size']} (h, w) does not match the {w}x{h} image"
        return None


def _label_table(rows: list[tuple[str, _importers.LabelRow]], seq: int, source: str) -> pa.Table:
    return pa.table(
        {
            "image_id": [iid for iid, _ in rows],
            "seq": [seq] * len(rows),
            "label": [r.label for _, r in rows],
            "bbox": [r.bbox for _, r in rows],
            "rle_size": [r.mask["size"] if r.mask else None for _, r in rows],
            "rle_counts": [r.mask["counts"] if r.mask else None for _, r in rows],
            "attributes": [r.attributes for _, r in rows],
            "source": [os.path.basename(source)] * len(rows),
        },
        schema=LABEL_SCHEMA,
    )


def _split_dataset(rel: str, dataset: str | None, root_name: str) -> tuple[str, str]:
    """(dataset, file name within it) for a path relative to the added folder."""
    if dataset:
        return dataset, rel
    if "/" in rel:
        top, rest = rel.split("/", 1)
        return top, rest
    return root_name, rel


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _remote_header(uri: str):
    fs, path = resolve(uri)
    with fs.open_input_file(path) as f:
        head = f.read(64 * 1024)

        def read_all() -> bytes:
            f.seek(0)
            return f.read()

        return parse_header(head, read_all)


def read_uri(uri: str) -> bytes:
    """The bytes of an image by its manifest URI (a local path or any pyarrow.fs URI)."""
    if not is_uri(uri):
        with open(uri, "rb") as f:
            return f.read()
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def list_projects(store: str | None = None) -> list[str]:
    """Names of the projects in a store."""
    s = Store(store if store is not None else load_settings().store)
    return [d for d in s.list_dirs() if s.exists(d, "project.json")]
