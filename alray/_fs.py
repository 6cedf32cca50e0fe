"""Every byte alray stores goes through here: one ``pyarrow.fs`` filesystem under a root URI.

Writes are atomic: locally a temp file is renamed into place; on object stores one PUT (or a
completed multipart upload) makes the object appear whole or not at all. Data that changes
over time is written as new, uniquely named objects, so a reader never sees half of anything.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import posixpath
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_TMP_MARK = ".tmp-"


def is_uri(s: str) -> bool:
    return "://" in s


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for a store URI or a local path (relative paths are made absolute).

    Bucket filesystems (``s3://``, ``gs://``) are made once per bucket and query options and
    reused: building one costs a client and, without ``region=``, a request to find the
    bucket's region, which per image would dominate reading it.
    """
    if not is_uri(uri) or uri.startswith("file://"):
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in _BUCKET_SCHEMES and parts.netloc and "@" not in parts.netloc:
        fs = _bucket_filesystem(parts.scheme, parts.netloc, parts.query)
        return fs, (parts.netloc + urllib.parse.unquote(parts.path)).rstrip("/")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/")


_BUCKET_SCHEMES = ("s3", "gs", "gcs")


@functools.lru_cache(maxsize=64)
def _bucket_filesystem(scheme: str, bucket: str, query: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{bucket}" + (f"?{query}" if query else ""))
    return fs


def unique_name(prefix: str, suffix: str) -> str:
    """A name that sorts by creation time and never collides across processes."""
    return f"{prefix}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}{suffix}"


class Store:
    """A folder of a filesystem, with atomic writes and tolerant reads."""

    def __init__(self, uri: str, fs: pafs.FileSystem | None = None, root: str | None = None):
        self.uri = uri
        if fs is None or root is None:
            fs, root = resolve(uri)
        self.fs = fs
        self.root = root
        self.local = isinstance(fs, pafs.LocalFileSystem)

    def sub(self, *parts: str) -> Store:
        """The store rooted at a subfolder."""
        base, sep, query = self.uri.partition("?")  # s3://b/p?endpoint_override=… keeps its query
        return Store(posixpath.join(base, *parts) + sep + query, self.fs, self.path(*parts))

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    # reads ---------------------------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def list(self, *parts: str, suffix: str = "") -> list[str]:
        """Names (not paths) directly under a folder, sorted; temp files left out."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        names = [posixpath.basename(i.path) for i in self.fs.get_file_info(sel)]
        return sorted(n for n in names if _TMP_MARK not in n and n.endswith(suffix))

    def list_dirs(self, *parts: str) -> list[str]:
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        infos = self.fs.get_file_info(sel)
        return sorted(
            posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory
        )

    def read_parquet(self, *parts: str, columns: list[str] | None = None) -> pa.Table | None:
        """All Parquet files of a folder as one table, or one file; None when there is none."""
        files = self.parquet_files(*parts)
        if not files:
            return None
        tables = [pq.read_table(f, filesystem=self.fs, columns=columns) for f in files]
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]

    def parquet_files(self, *parts: str) -> list[str]:
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.File:
            return [p]
        return [posixpath.join(p, n) for n in self.list(*parts, suffix=".parquet")]

    # writes --------------------------------------------------------------------------------
    def makedirs(self, *parts: str) -> None:
        self.fs.create_dir(self.path(*parts), recursive=True)

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write atomically; return the path written."""
        final = self.path(*parts)
        parent = posixpath.dirname(final)
        if self.local:
            self.fs.create_dir(parent, recursive=True)
            tmp = f"{final}{_TMP_MARK}{uuid.uuid4().hex[:8]}"
            try:
                with self.fs.open_output_stream(tmp) as f:
                    f.write(data)
                os.replace(tmp, final)  # atomic on POSIX, also over an existing file
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)  # readers skip temp files anyway; don't leave litter
                raise
        else:
            with self.fs.open_output_stream(final) as f:
                f.write(data)
        return final

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(
            json.dumps(obj, indent=1, sort_keys=True, default=str).encode(), *parts
        )

    def write_parquet(self, table: pa.Table, *parts: str) -> str:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        return self.write_bytes(buf.getvalue(), *parts)

    def delete(self, *parts: str) -> None:
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def walk_files(self, *parts: str) -> Iterator[str]:
        sel = pafs.FileSelector(self.path(*parts), recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.File and _TMP_MARK not in info.path:
                yield info.path
