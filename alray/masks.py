"""Binary masks as COCO run-length encodings (uncompressed ``counts``), and polygons to masks.

COCO's RLE runs over the mask in column-major (Fortran) order and starts with a run of zeros.

>>> import numpy as np
>>> m = np.zeros((3, 4), bool); m[1, 1:3] = True
>>> rle = encode_rle(m); rle
{'size': [3, 4], 'counts': [4, 1, 2, 1, 4]}
>>> bool((decode_rle(rle) == m).all())
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw


def encode_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a 2-D boolean mask: ``{"size": [h, w], "counts": [...]}``."""
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {mask.shape}")
    h, w = mask.shape
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return {"size": [int(h), int(w)], "counts": [int(r) for r in runs]}


def decode_rle(rle: dict) -> np.ndarray:
    """The boolean (H, W) mask of a COCO uncompressed RLE."""
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = _decode_compressed_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("RLE counts must not be negative")
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h}*{w}={h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return np.repeat(values, counts).reshape((h, w), order="F")


def _decode_compressed_counts(s: str | bytes) -> list[int]:
    """COCO's compressed RLE string (pycocotools' LEB128-like code) to run lengths."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            if p >= len(s):
                raise ValueError("compressed RLE counts end in the middle of a number")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons ``[[x1, y1, x2, y2, ...], ...]`` into one boolean mask."""
    img = Image.new("1", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"a polygon needs an even number of >= 6 coordinates, got {len(poly)}")
        draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly), 2)], fill=1)
    return np.array(img, dtype=bool)


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """The tight xyxy box of a mask (pixel edges), or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
