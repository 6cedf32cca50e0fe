"""Finding image files and reading their size from the header, without decoding pixels.

Formats are recognised by content (magic bytes), not by extension. PNG, JPEG, GIF and BMP
headers are parsed here directly (a few bytes each); other formats Pillow knows fall back to
``PIL.Image.open``, which also reads only the header.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".jpe",
        ".gif",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".ppm",
        ".pgm",
        ".pbm",
        ".ico",
        ".jp2",
    ]
)
_HEAD = 64 * 1024  # enough for any JPEG/PNG/GIF/BMP header alray has met; larger EXIF falls back


class NotAnImage(ValueError):
    """The bytes are not an image format alray can read."""


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes, or None when they are no known image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:2] in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        return "ppm"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ico"
    if head[4:12] == b"jP  \r\n\x87\n" or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise NotAnImage("corrupt JPEG: bad marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                break
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    raise EOFError("JPEG frame header not within the bytes read")


def parse_header(head: bytes, read_all: Callable[[], bytes] | None = None) -> Header:
    """Image format and size from the first bytes of a file.

    ``read_all`` gives the whole file when the header is not within ``head`` (rare: huge EXIF).
    Raises ``NotAnImage`` for unknown or corrupt headers.
    """
    fmt = sniff_format(head)
    if fmt is None:
        raise NotAnImage("not an image: content matches no known image format")
    try:
        if fmt == "png":
            if head[12:16] != b"IHDR":
                raise NotAnImage("corrupt PNG: no IHDR chunk")
            w, h = struct.unpack(">II", head[16:24])
        elif fmt == "gif":
            w, h = struct.unpack("<HH", head[6:10])
        elif fmt == "bmp":
            (dib,) = struct.unpack("<I", head[14:18])
            if dib == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                w, h = struct.unpack("<HH", head[18:22])
            elif dib in (16, 40, 52, 56, 64, 108, 124):
                w, h = struct.unpack("<ii", head[18:26])
                h = abs(h)
            else:  # "BM" followed by anything else is text that happens to start that way
                raise NotAnImage("not an image: 'BM' without a bitmap header")
        elif fmt == "jpeg":
            try:
                w, h = _jpeg_size(head)
            except EOFError:
                if read_all is None:
                    raise NotAnImage("corrupt JPEG: no frame header") from None
                try:
                    w, h = _jpeg_size(read_all())
                except EOFError:
                    raise NotAnImage("corrupt JPEG: no frame header") from None
        else:
            data = head if read_all is None else read_all()
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except (struct.error, UnidentifiedImageError, OSError) as e:
        raise NotAnImage(f"corrupt {fmt.upper()} header: {e}") from None
    if w <= 0 or h <= 0:
        raise NotAnImage(f"corrupt {fmt.upper()} header: size {w}x{h}")
    return Header(fmt, int(w), int(h))


def read_local_header(path: str) -> Header:
    # one os.read on a raw descriptor: no buffered-reader object per file
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        head = os.read(fd, _HEAD)
    finally:
        os.close(fd)

    def read_all() -> bytes:
        with open(path, "rb") as f:
            return f.read()

    return parse_header(head, read_all)


@dataclass(frozen=True)
class Found:
    path: str  # absolute
    rel: str  # posix path relative to the root


@dataclass(frozen=True)
class Refused:
    path: str
    reason: str


def walk_local(root: str) -> Iterator[Found | Refused]:
    """Every regular file under ``root`` (recursively, sorted), refusing links that leave it."""
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such folder: {root}")
    stack = [(root, "")]  # (folder, its path relative to root with a trailing "/")
    while stack:
        d, prefix = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if d == root:
                raise
            yield Refused(d, f"unreadable folder: {e.strerror or e}")
            continue
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue  # hidden files and folders (.DS_Store, .git) are never images of a project
            if e.is_symlink():
                target = os.path.realpath(e.path)
                if os.path.commonpath([root, target]) != root:
                    yield Refused(e.path, f"symbolic link to {target}, outside {root}")
                    continue
                if os.path.isdir(target):
                    continue  # its files are reached under their own path inside the root
                if os.path.isfile(target):
                    yield Found(e.path, prefix + e.name)
                continue
            if e.is_dir(follow_symlinks=False):
                subdirs.append((e.path, f"{prefix}{e.name}/"))
            elif e.is_file(follow_symlinks=False):
                yield Found(e.path, prefix + e.name)
        stack.extend(reversed(subdirs))


def map_threaded(fn: Callable, items: Iterable, workers: int = 16, chunk: int = 256) -> Iterator:
    """``map(fn, items)`` in order on a thread pool: file reads release the GIL.

    Items go to the threads in chunks of ``chunk``, so the pool's per-task cost (a future, a
    lock, a queue entry) is paid once per chunk rather than once per file.
    """
    items = list(items)
    if len(items) < 2 * chunk:
        yield from map(fn, items)
        return

    def run(batch: list) -> list:
        return [fn(x) for x in batch]

    batches = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    with ThreadPoolExecutor(max_workers=min(workers, len(batches))) as pool:
        for out in pool.map(run, batches):
            yield from out
