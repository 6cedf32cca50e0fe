"""Label files in, normalised label rows out: COCO JSON, CSV ``image,label``, class-per-folder.

Each importer yields ``LabelRow``s naming the image the way the file does (``ref``); the project
resolves refs to its image ids and validates geometry against image sizes. Which family a label
feeds follows DESIGN.md:

- COCO annotation without bbox/segmentation → ``classifier`` (one category per image; an image
  with several different such categories gets them as ``tagger`` tags instead)
- COCO image ``tags`` field → ``tagger``
- COCO ``bbox`` → ``detector``; with ``attributes`` also → ``attributor``
- COCO ``segmentation`` (polygons or RLE) → ``instance_segmentor`` and ``semantic_segmentor``
- CSV and class-per-folder → ``classifier``
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from alray._images import IMAGE_EXTENSIONS
from alray.masks import decode_rle, encode_rle, mask_to_box, polygons_to_mask


@dataclass
class LabelRow:
    family: str
    ref: str  # how the label file names the image
    label: str | None = None
    bbox: list[float] | None = None  # xyxy pixels
    mask: dict | None = None  # {"size": [h, w], "counts": [...]} uncompressed RLE
    attributes: list[str] | None = None
    where: str = ""  # e.g. "annotation 12" for error messages


@dataclass
class Parsed:
    rows: list[LabelRow] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, what is wrong)
    refs: set[str] = field(default_factory=set)  # every image the file talks about


def _attributes(value: object, where: str) -> list[str]:
    if isinstance(value, dict):
        return sorted(str(k) for k, v in value.items() if v)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ValueError(f"{where}: 'attributes' must be a list of names or a {{name: bool}} map")


def parse_coco(path: str) -> Parsed:
    """Read a COCO JSON file into label rows; problems are collected, not raised."""
    with open(path, encoding="utf-8") as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or "images" not in doc:
        raise ValueError(f"{path} is not COCO JSON: expected an object with 'images'")
    out = Parsed()
    cats = {}
    for c in doc.get("categories") or []:
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ValueError(f"{path}: every category needs an 'id' and a 'name', got {c!r:.60}")
        cats[c["id"]] = str(c["name"])
    images: dict[object, dict] = {}
    for img in doc["images"]:
        if "id" not in img or "file_name" not in img:
            out.problems.append((f"image {img!r:.60}", "needs 'id' and 'file_name'"))
            continue
        images[img["id"]] = img
        out.refs.add(str(img["file_name"]))
        tags = img.get("tags") or []
        for tag in [tags] if isinstance(tags, str) else tags:  # "tags": "night" is one tag
            out.rows.append(
                LabelRow(
                    "tagger", str(img["file_name"]), label=str(tag), where=f"image {img['id']} tags"
                )
            )

    image_level: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, ann in enumerate(doc.get("annotations", [])):
        where = f"annotation {ann.get('id', f'#{i}')}"
        img = images.get(ann.get("image_id"))
        if img is None:
            out.problems.append(
                (where, f"unknown image_id {ann.get('image_id')!r} (not in 'images')")
            )
            continue
        ref = str(img["file_name"])
        cat_id = ann.get("category_id")
        if cat_id not in cats:
            known = ", ".join(f"{k}={v}" for k, v in list(cats.items())[:10])
            out.problems.append((where, f"unknown category_id {cat_id!r} (categories: {known})"))
            continue
        label = cats[cat_id]
        try:
            bbox = _coco_bbox(ann.get("bbox"), where)
            mask = _coco_mask(ann.get("segmentation"), img, where)
            attrs = (
                _attributes(ann["attributes"], where) if ann.get("attributes") is not None else None
            )
        except ValueError as e:
            out.problems.append((where, str(e).removeprefix(f"{where}: ")))
            continue
        if bbox is None and mask is not None:
            box = mask_to_box(decode_rle(mask))
            bbox = box
        if bbox is None and mask is None:
            image_level[ref].append((label, where))
            continue
        if bbox is not None:
            out.rows.append(LabelRow("detector", ref, label=label, bbox=bbox, where=where))
            if attrs is not None:
                out.rows.append(
                    LabelRow(
                        "attributor", ref, label=label, bbox=bbox, attributes=attrs, where=where
                    )
                )
        if mask is not None:
            out.rows.append(
                LabelRow("instance_segmentor", ref, label=label, bbox=bbox, mask=mask, where=where)
            )
            out.rows.append(
                LabelRow("semantic_segmentor", ref, label=label, mask=mask, where=where)
            )
    for ref, labels in image_level.items():
        distinct = sorted({lab for lab, _ in labels})
        if len(distinct) == 1:
            out.rows.append(LabelRow("classifier", ref, label=distinct[0], where=labels[0][1]))
        else:
            out.rows.extend(
                LabelRow("tagger", ref, label=lab, where=labels[0][1]) for lab in distinct
            )
    return out


def _coco_bbox(b: object, where: str) -> list[float] | None:
    if b is None or b == []:
        return None
    if not isinstance(b, (list, tuple)) or len(b) != 4:
        raise ValueError(f"bbox must be [x, y, width, height], got {b!r}")
    x, y, w, h = (float(v) for v in b)
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise ValueError(f"bbox {list(b)} has a non-positive or non-finite size")
    return [x, y, x + w, y + h]


def _coco_mask(seg: object, img: dict, where: str) -> dict | None:
    if seg is None or seg == []:
        return None
    if isinstance(seg, dict):  # RLE, compressed or not
        if "size" not in seg or "counts" not in seg:
            raise ValueError("RLE segmentation needs 'size' and 'counts'")
        m = decode_rle(seg)
        return encode_rle(m)
    if isinstance(seg, list):
        if "width" not in img or "height" not in img:
            raise ValueError("polygon segmentation needs the image's 'width' and 'height'")
        m = polygons_to_mask(seg, int(img["height"]), int(img["width"]))
        return encode_rle(m)
    raise ValueError(f"segmentation must be polygons or RLE, got {type(seg).__name__}")


def parse_csv(path: str) -> Parsed:
    """CSV with columns ``image,label`` (header optional) → classifier labels."""
    out = Parsed()
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path} is empty: expected rows of image,label")
    header = [c.strip().lower() for c in rows[0]]
    start = 0
    ic, lc = 0, 1
    if "image" in header and "label" in header:
        ic, lc, start = header.index("image"), header.index("label"), 1
    for n, r in enumerate(rows[start:], start=start + 1):
        where = f"line {n}"
        if not any(c.strip() for c in r):
            continue
        if len(r) <= max(ic, lc) or not r[ic].strip() or not r[lc].strip():
            out.problems.append((where, f"expected image,label, got {','.join(r)!r}"))
            continue
        ref = r[ic].strip()
        out.refs.add(ref)
        out.rows.append(LabelRow("classifier", ref, label=r[lc].strip(), where=where))
    return out


def parse_image_folder(root: str) -> Parsed:
    """``root/<class>/<image>`` → classifier labels; refs are absolute paths."""
    if not os.path.isdir(root):
        raise ValueError(f"no such folder: {root}")
    out = Parsed()
    for cls in sorted(os.listdir(root)):
        d = os.path.join(root, cls)
        if cls.startswith(".") or not os.path.isdir(d):
            continue
        for dirpath, _, files in os.walk(d):
            for name in sorted(files):
                if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                ref = os.path.realpath(os.path.join(dirpath, name))
                out.refs.add(ref)
                out.rows.append(LabelRow("classifier", ref, label=cls, where=f"{cls}/{name}"))
    return out


def iter_problems(parsed: Parsed) -> Iterator[str]:
    for where, what in parsed.problems:
        yield f"{where}: {what}"
