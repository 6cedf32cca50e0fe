"""Seeded synthetic images for every family: coloured shapes on cluttered backgrounds.

Each image holds one to ``max_objects`` filled shapes (circle, square, triangle, cross) in a
few colours over a noisy background with outline clutter; later shapes occlude earlier ones.
One COCO JSON describes them all:

- an image-level annotation (no bbox, no segmentation) with the category of the largest
  visible shape → **classifier** label;
- ``tags`` on each image: the colours present → **tagger**;
- per visible object: exact ``bbox`` (COCO xywh), exact ``segmentation`` (uncompressed RLE of
  the visible pixels) and ``attributes`` (colour, ``large``/``small``, ``occluded``) →
  **detector**, **instance_segmentor**, **semantic_segmentor**, **attributor**.

About ``hard`` of the images are made genuinely ambiguous (low contrast, a small main shape,
two shapes of nearly the same size, heavy occlusion, strong noise) so that uncertainty ranking
has something to find. Generation is deterministic for a seed (each image has its own
generator seeded by ``(seed, index)``), and fast: a few thousand 64×64 images per second.

>>> import tempfile, json
>>> path = generate(tempfile.mkdtemp(), 6, seed=1)
>>> coco = json.load(open(path))
>>> len(coco["images"]), sorted({i["dataset"] for i in coco["images"]})
(6, ['A', 'B', 'C'])
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from alray.masks import encode_rle, mask_to_box

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (40, 170, 60),
    "blue": (45, 75, 215),
    "yellow": (225, 205, 40),
}


@dataclass
class SyntheticObject:
    """One drawn shape: its visible mask, box (xyxy) and words."""

    shape: str
    colour: str
    mask: np.ndarray  # visible pixels (bool H×W)
    box: list[float]
    attributes: list[str] = field(default_factory=list)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        scale = r * 0.85
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        scale = r * 1.1
    else:  # cross: a plus sign
        t = 0.36
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t),
               (-1, t), (-1, -t), (-t, -t)]
        scale = r
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + scale * (x * ca - y * sa), cy + scale * (x * sa + y * ca)) for x, y in pts]


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, angle), fill=255)
    return np.asarray(img) > 127


def _background(rng: np.random.Generator, size: int, hard: bool) -> np.ndarray:
    base = rng.uniform(60, 200)
    tint = rng.normal(0, 12, 3)
    gy, gx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    slope = rng.normal(0, 25, 2)
    bg = base + tint[None, None, :] + (slope[0] * gx + slope[1] * gy)[..., None]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # outline clutter in muted colours: never filled, so it is not a shape
    for _ in range(int(rng.integers(2, 7 if hard else 5))):
        g = rng.uniform(40, 220)
        col = tuple(int(np.clip(g + rng.normal(0, 25), 0, 255)) for _ in range(3))
        x0, y0, x1, y1 = rng.uniform(-0.1, 1.1, 4) * size
        if rng.random() < 0.6:
            draw.line([x0, y0, x1, y1], fill=col, width=int(rng.integers(1, 3)))
        else:
            draw.ellipse([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=col)
    return np.asarray(img, dtype=np.float32)


def render(
    rng: np.random.Generator,
    size: int = 64,
    *,
    hard_fraction: float = 0.25,
    max_objects: int = 3,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
) -> tuple[np.ndarray, list[SyntheticObject], str]:
    """Draw one image: ``(uint8 (size, size, 3), visible objects, main shape)``."""
    hard = rng.random() < hard_fraction
    kind = str(rng.choice(["contrast", "small", "tie", "occlude", "noise"])) if hard else ""
    img = _background(rng, size, hard)
    s = size / 64.0
    n = int(rng.choice(np.arange(1, max_objects + 1),
                       p=np.linspace(2, 1, max_objects) / np.linspace(2, 1, max_objects).sum()))
    if kind in ("tie", "occlude"):
        n = max(n, 2)
    # the first object drawn is the main one (largest); others are smaller distractors
    radii = [rng.uniform(9, 17) * s] + [rng.uniform(4, 8) * s for _ in range(n - 1)]
    if kind == "small":
        radii[0] = rng.uniform(5, 8) * s
        radii[1:] = [min(r, radii[0] * 0.7) for r in radii[1:]]
    if kind == "tie":
        radii[1] = radii[0] * rng.uniform(0.9, 1.05)
    centres = []
    for i, r in enumerate(radii):
        if kind == "occlude" and i == 1:
            cx0, cy0 = centres[0]
            ang = rng.uniform(0, 2 * math.pi)
            d = radii[0] * rng.uniform(0.5, 1.0)
            centres.append((cx0 + d * math.cos(ang), cy0 + d * math.sin(ang)))
            radii[1] = max(radii[1], radii[0] * 0.8)
        else:
            centres.append(tuple(rng.uniform(r, size - r, 2)))
    full_masks, specs = [], []
    for (cx, cy), r in zip(centres, radii, strict=True):
        shape = str(rng.choice(shapes))
        colour = str(rng.choice(colours))
        angle = rng.uniform(-0.35, 0.35)
        full_masks.append(_shape_mask(shape, size, cx, cy, r, angle))
        specs.append((shape, colour, r))
    order = list(range(n))  # main object at the bottom: distractors may cover part of it
    covered = np.zeros((size, size), bool)
    visible = [None] * n
    for i in reversed(order):  # the last drawn is on top: walk from the top down
        visible[i] = full_masks[i] & ~covered
        covered |= full_masks[i]
    for i in order:
        shape, colour, r = specs[i]
        col = np.asarray(COLOURS[colour], np.float32) + rng.normal(0, 12, 3)
        alpha = rng.uniform(0.25, 0.45) if kind == "contrast" and i == 0 else 1.0
        m = full_masks[i]
        img[m] = (1 - alpha) * img[m] + alpha * col
    noise = rng.uniform(18, 30) if kind == "noise" else rng.uniform(3, 9)
    img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)

    objects: list[SyntheticObject] = []
    for i in range(n):
        vis, full = visible[i], full_masks[i]
        area = int(vis.sum())
        if area < 8 or area < 0.2 * full.sum():
            continue  # hidden almost entirely: drawn, but nobody could label it
        shape, colour, r = specs[i]
        attrs = [colour, "large" if r >= 8.5 * s else "small"]
        if area < 0.8 * full.sum():
            attrs.append("occluded")
        objects.append(SyntheticObject(shape, colour, vis, mask_to_box(vis), attrs))
    main = max(objects, key=lambda o: int(o.mask.sum())).shape
    return img, objects, main


def generate(
    out_dir: str,
    n_images: int,
    *,
    datasets: Sequence[str] | None = ("A", "B", "C"),
    size: int = 64,
    seed: int = 0,
    image_format: str = "png",
    hard_fraction: float = 0.25,
    max_objects: int = 3,
    shapes: Sequence[str] = SHAPES,
    colours: Sequence[str] = tuple(COLOURS),
    corrupt: int = 0,
    coco_name: str = "labels.json",
) -> str:
    """Write ``n_images`` images under ``out_dir/<dataset>/`` (or ``out_dir`` when
    ``datasets`` is None) and one COCO JSON with every family's labels; return its path.

    Images are spread round-robin over ``datasets``; file names are unique across datasets
    (``A/A_000001.png``). ``corrupt`` extra files of garbage bytes with an image suffix are
    written next to them (not in the JSON), for skip-and-report tests.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
    for c in colours:
        if c not in COLOURS:
            raise ValueError(f"unknown colour {c!r}; expected some of {', '.join(COLOURS)}")
    ext = "png" if image_format == "png" else "jpg"
    os.makedirs(out_dir, exist_ok=True)
    cat_ids = {name: i + 1 for i, name in enumerate(shapes)}
    images, annotations = [], []
    ann_id = 0
    for idx in range(n_images):
        rng = np.random.default_rng([seed, idx])
        arr, objects, main = render(
            rng, size, hard_fraction=hard_fraction, max_objects=max_objects, shapes=shapes,
            colours=colours,
        )
        ds = datasets[idx % len(datasets)] if datasets else None
        stem = f"{ds}_{idx + 1:06d}" if ds else f"img_{idx + 1:06d}"
        rel = f"{ds}/{stem}.{ext}" if ds else f"{stem}.{ext}"
        path = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buf = io.BytesIO()
        if image_format == "png":
            Image.fromarray(arr).save(buf, "PNG", compress_level=1)
        else:
            Image.fromarray(arr).save(buf, "JPEG", quality=92)
        with open(path, "wb") as f:
            f.write(buf.getvalue())
        image_id = idx + 1
        entry = {
            "id": image_id,
            "file_name": rel,
            "width": size,
            "height": size,
            "tags": sorted({o.colour for o in objects}),
        }
        if ds:
            entry["dataset"] = ds
        images.append(entry)
        ann_id += 1
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_ids[main]})
        for o in objects:
            x0, y0, x1, y1 = o.box
            ann_id += 1
            annotations.append({
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_ids[o.shape],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": int(o.mask.sum()),
                "segmentation": encode_rle(o.mask),
                "iscrowd": 0,
                "attributes": o.attributes,
            })
    for j in range(corrupt):
        ds = datasets[j % len(datasets)] if datasets else None
        rel = f"{ds}/corrupt_{j + 1:04d}.{ext}" if ds else f"corrupt_{j + 1:04d}.{ext}"
        os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
        with open(os.path.join(out_dir, rel), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + np.random.default_rng([seed, 1 << 30, j]).bytes(64))
    coco = {
        "info": {"description": "alray synthetic shapes", "seed": seed, "size": size},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "shape"} for n, i in cat_ids.items()],
    }
    out = os.path.join(out_dir, coco_name)
    with open(out, "w") as f:
        json.dump(coco, f)
    return out
