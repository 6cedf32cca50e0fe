"""Benchmark: registering a folder of images with ``Project.add_images`` against a plain loop.

Generates N small image files (PNG and JPEG of several sizes, in a few dataset folders with
subfolders), then times in the same run

- alray:    ``Project.add_images(dir)`` into a fresh local store (walk, header reads, ids,
            dedup against the manifest, one Parquet write)
- baseline: ``os.walk`` + ``PIL.Image.open(path).size`` over the same files

and prints both times, files/s and the ratio baseline_time / alray_time (>= 1 means alray is at
least as fast as the plain loop while doing more).

    python bench/store.py            # 100,000 files in a temp dir, best of 3, removed afterwards
    python bench/store.py --n 20000 --repeat 1
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time

from PIL import Image

from alray.project import Project  # imported up front, like PIL: import time is not timed

SIZES = [(32, 24), (64, 48), (100, 75), (128, 128), (224, 224), (320, 240)]
DATASETS = ["alpha", "beta", "gamma", "delta"]
SUBFOLDERS = ["a", "b", "c", "d", "e"]


def _templates() -> list[tuple[str, bytes]]:
    """A handful of real encoded images, each (extension, bytes)."""
    out = []
    for i, (w, h) in enumerate(SIZES):
        im = Image.new("RGB", (w, h), (i * 40 % 256, 90, 200 - i * 30))
        for fmt, ext in (("PNG", ".png"), ("JPEG", ".jpg")):
            buf = io.BytesIO()
            im.save(buf, fmt)
            out.append((ext, buf.getvalue()))
    return out


def generate(root: str, n: int) -> int:
    """Write n image files under root; bytes differ per file (a trailing counter after the end
    marker, which decoders and header readers ignore) so no two files are identical."""
    templates = _templates()
    folders = [os.path.join(root, d, s) for d in DATASETS for s in SUBFOLDERS]
    for f in folders:
        os.makedirs(f, exist_ok=True)
    for i in range(n):
        ext, data = templates[i % len(templates)]
        path = os.path.join(folders[i % len(folders)], f"img{i:07d}{ext}")
        with open(path, "wb") as f:
            f.write(data)
            f.write(i.to_bytes(4, "little"))
    return n


def baseline(root: str) -> int:
    count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with Image.open(os.path.join(dirpath, name)) as im:
                _ = im.size
            count += 1
    return count


def alray_add(root: str, store: str) -> int:
    shutil.rmtree(store, ignore_errors=True)
    p = Project.create("bench", store=store)
    report = p.add_images(root)
    if report.problems:
        raise SystemExit(f"unexpected problems: {report.problems[:3]}")
    return report.added


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of image files")
    ap.add_argument("--dir", default=None, help="where to generate (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3, help="time each side this many times; best")
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="alray-bench-", dir=args.dir)
    try:
        images = os.path.join(work, "images")
        t0 = time.perf_counter()
        generate(images, args.n)
        print(f"generated {args.n} files in {time.perf_counter() - t0:.1f} s under {work}")
        # warm the OS file cache the same way for both sides
        baseline(images)

        best_base = best_alray = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            nb = baseline(images)
            best_base = min(best_base, time.perf_counter() - t0)
            t0 = time.perf_counter()
            na = alray_add(images, os.path.join(work, "store"))
            best_alray = min(best_alray, time.perf_counter() - t0)
            if na != nb or na != args.n:
                raise SystemExit(f"counts differ: alray {na}, baseline {nb}, expected {args.n}")

        print(
            f"baseline os.walk + PIL.Image.open().size: {best_base:8.2f} s "
            f"{args.n / best_base:10,.0f} files/s"
        )
        print(
            f"alray Project.add_images:                 {best_alray:8.2f} s "
            f"{args.n / best_alray:10,.0f} files/s"
        )
        print(f"ratio baseline_time / alray_time: {best_base / best_alray:.2f} (target >= 1.0)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
