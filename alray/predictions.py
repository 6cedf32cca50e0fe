"""Predictions of the latest model version as COCO JSON pre-labels, with scores.

What each family writes:

- classifier: one annotation per image without geometry (``category_id``, ``score``) — the
  same shape alray imports as a classifier label;
- tagger: ``tags`` on each image (probability ≥ 0.5) and ``tag_scores`` for every tag;
- detector: ``bbox`` (xywh) + ``category_id`` + ``score`` per object;
- instance_segmentor: also ``segmentation`` as uncompressed RLE at the image's size;
- semantic_segmentor: one annotation per class present (RLE of its pixels, ``score`` = the mean
  probability of the predicted class over them); background is left out;
- attributor: ``bbox``, ``attributes`` (≥ 0.5), ``attribute_scores``, and ``category_id`` from
  the model's object classes (a single ``object`` category when it has none).

``file_name`` is ``<dataset>/<file name>``, so the file imports back into the same project.

>>> import tempfile, json
>>> from alray.project import Project
>>> from alray.synthetic import generate
>>> from alray.training import train
>>> d = tempfile.mkdtemp()
>>> coco = generate(f"{d}/imgs", 30, seed=0)
>>> p = Project.create("demo", store=f"{d}/store")
>>> _ = p.add_images(f"{d}/imgs"); _ = p.import_labels(coco=coco)
>>> _ = train(p, "classifier", epochs=1)
>>> summary = export_coco(p, "classifier", f"{d}/pre.json")
>>> len(json.load(open(f"{d}/pre.json"))["annotations"])
30
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np

from alray._fs import Store
from alray.assistants import Assistant, load_assistant, resize_mask
from alray.families import check_family
from alray.masks import encode_rle, mask_to_box

Progress = Callable[..., None]


def _xywh(b: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in b)
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _annotations(a: Assistant, rec: dict, image_id: int, size: tuple[int, int],
                 image: dict, next_id: Callable[[], int]) -> list[dict]:
    fam = a.family
    if fam == "classifier":
        k = int(np.argmax(rec["probs"]))
        return [{"id": next_id(), "image_id": image_id, "category_id": k + 1,
                 "score": round(float(rec["probs"][k]), 6)}]
    if fam == "tagger":
        p = rec["probs"]
        image["tags"] = [t for t, v in zip(a.classes, p, strict=True) if v >= 0.5]
        image["tag_scores"] = {t: round(float(v), 6) for t, v in zip(a.classes, p, strict=True)}
        return []
    if fam == "semantic_segmentor":
        probs = rec["probs"]
        pred = probs.argmax(0)
        out = []
        for c in np.unique(pred):
            if c == 0:
                continue  # background
            small = pred == c
            mask = resize_mask(small, size)
            if not mask.any():
                continue
            box = mask_to_box(mask)
            out.append({
                "id": next_id(), "image_id": image_id, "category_id": int(c),
                "segmentation": encode_rle(mask), "area": int(mask.sum()), "bbox": _xywh(box),
                "iscrowd": 0, "score": round(float(probs[c][small].mean()), 6),
            })
        return out
    out = []
    for m in range(len(rec["boxes"])):
        ann: dict[str, Any] = {"id": next_id(), "image_id": image_id,
                               "bbox": _xywh(rec["boxes"][m]), "iscrowd": 0}
        if fam == "attributor":
            p = rec["probs"][m]
            ann["attributes"] = [n for n, v in zip(a.classes, p, strict=True) if v >= 0.5]
            ann["attribute_scores"] = {n: round(float(v), 6)
                                       for n, v in zip(a.classes, p, strict=True)}
            cp = rec.get("class_probs")
            if cp is not None and len(a.meta.get("object_classes") or []):
                ann["category_id"] = int(np.argmax(cp[m])) + 1
                ann["score"] = round(float(rec["scores"][m] * cp[m].max()), 6)
            else:
                ann["category_id"] = 1
                ann["score"] = round(float(rec["scores"][m]), 6)
        else:
            k = int(np.argmax(rec["probs"][m]))
            ann["category_id"] = k + 1
            ann["score"] = round(float(rec["scores"][m] * rec["probs"][m][k]), 6)
            ann["class_scores"] = [round(float(v), 6) for v in rec["probs"][m]]
        if fam == "instance_segmentor":
            mask = resize_mask(rec["masks"][m], size)
            ann["segmentation"] = encode_rle(mask)
            ann["area"] = int(mask.sum())
        out.append(ann)
    return out


def _categories(a: Assistant) -> list[dict]:
    fam = a.family
    if fam == "tagger":
        return []
    if fam == "attributor":
        names = list(a.meta.get("object_classes") or []) or ["object"]
    else:
        names = list(a.classes)
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)
            if not (fam == "semantic_segmentor" and i == 0)]


def export_coco(
    project: Any,
    family: str,
    out: str,
    datasets: Sequence[str] | None = None,
    unlabeled_only: bool = False,
    progress: Progress | None = None,
    *,
    version: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 8,
) -> dict:
    """Predict every image (of ``datasets``; only the family's unlabeled ones with
    ``unlabeled_only``) with the latest model and write COCO JSON to ``out`` (a path or URI,
    written atomically). Returns a summary: images, annotations, skipped (undecodable) images.
    """
    check_family(family)
    a = load_assistant(project, family, version, device=device, batch_size=batch_size)
    table = project.unlabeled(family, datasets) if unlabeled_only else project.images(datasets)
    ids = table["image_id"].to_pylist()
    names = table["file_name"].to_pylist()
    dsets = table["dataset"].to_pylist()
    uris = table["uri"].to_pylist()
    heights, widths = table["height"].to_pylist(), table["width"].to_pylist()
    images, annotations, skipped = [], [], []
    counter = iter(range(1, 1 << 62))

    def next_id() -> int:
        return next(counter)

    if progress:
        progress(0, len(ids))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for s in range(0, len(ids), batch_size):
            chunk = range(s, min(s + batch_size, len(ids)))
            datas = list(pool.map(_read(project), [uris[i] for i in chunk]))
            ok = [i for i, d in zip(chunk, datas, strict=True) if d is not None]
            recs, bad = a.predict_bytes([d for d in datas if d is not None])
            bad_set = {ok[b] for b in bad}
            skipped.extend(ids[i] for i in chunk if i not in ok or i in bad_set)
            good = [i for i in ok if i not in bad_set]
            for i, rec in zip(good, recs, strict=True):
                image = {"id": len(images) + 1, "file_name": f"{dsets[i]}/{names[i]}",
                         "dataset": dsets[i], "alray_image_id": ids[i]}
                size = (int(heights[i]), int(widths[i]))
                image["height"], image["width"] = size
                annotations.extend(_annotations(a, rec, image["id"], size, image, next_id))
                images.append(image)
            if progress:
                progress(len(chunk))
    coco = {
        "info": {
            "description": f"alray {family} pre-labels",
            "family": family,
            "model_version": a.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "skipped_images": skipped,
        },
        "images": images,
        "annotations": annotations,
        "categories": _categories(a),
    }
    parent, base = posixpath.split(out.replace("\\", "/"))
    Store(parent or ".").write_bytes(json.dumps(coco).encode(), base)
    return {"out": out, "family": family, "version": a.version, "images": len(images),
            "annotations": len(annotations), "skipped": skipped}


def _read(project: Any) -> Callable[[str], bytes | None]:
    def read(uri: str) -> bytes | None:
        try:
            return project.read_image_bytes(uri)
        except OSError:
            return None

    return read
