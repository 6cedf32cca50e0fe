"""The synthetic generator: seeded, exact labels for every family, importable."""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from alray.masks import decode_rle, mask_to_box
from alray.synthetic import COLOURS, SHAPES, generate


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_same_seed_same_images_and_labels(tmp_path):
    a = generate(str(tmp_path / "a"), 12, seed=3)
    b = generate(str(tmp_path / "b"), 12, seed=3)
    c = generate(str(tmp_path / "c"), 12, seed=4)
    ja, jb, jc = _load(a), _load(b), _load(c)
    assert ja["annotations"] == jb["annotations"] and ja["images"] == jb["images"]
    assert ja["annotations"] != jc["annotations"]
    for img in ja["images"]:
        fa = (tmp_path / "a" / img["file_name"]).read_bytes()
        assert fa == (tmp_path / "b" / img["file_name"]).read_bytes()


def test_labels_are_exact_and_cover_every_family(tmp_path):
    path = generate(str(tmp_path), 60, seed=0, datasets=("A", "B"))
    coco = _load(path)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(cats.values()) == sorted(SHAPES)
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for img in coco["images"]:
        assert img["file_name"].startswith(img["dataset"] + "/")
        arr = np.asarray(Image.open(tmp_path / img["file_name"]))
        assert arr.shape == (64, 64, 3)
        anns = by_image[img["id"]]
        image_level = [a for a in anns if "bbox" not in a]
        objects = [a for a in anns if "bbox" in a]
        assert len(image_level) == 1 and objects  # one classifier label, at least one object
        colours = set()
        for a in objects:
            m = decode_rle(a["segmentation"])
            assert m.shape == (64, 64) and m.sum() == a["area"] > 0
            x1, y1, x2, y2 = mask_to_box(m)
            assert a["bbox"] == [x1, y1, x2 - x1, y2 - y1]
            colour = [t for t in a["attributes"] if t in COLOURS]
            assert len(colour) == 1
            assert ("large" in a["attributes"]) != ("small" in a["attributes"])
            colours.add(colour[0])
        assert img["tags"] == sorted(colours)
        # the classifier label is the shape of the largest visible object
        largest = max(objects, key=lambda a: a["area"])
        assert image_level[0]["category_id"] == largest["category_id"]
    # masks of one image do not overlap (later shapes cover earlier ones)
    for anns in by_image.values():
        masks = [decode_rle(a["segmentation"]) for a in anns if "bbox" in a]
        assert (np.sum(masks, 0) <= 1).all()


def test_some_images_are_hard(tmp_path):
    coco = _load(generate(str(tmp_path), 200, seed=1))
    attrs = [a for ann in coco["annotations"] for a in ann.get("attributes", [])]
    assert "occluded" in attrs and "small" in attrs


def test_no_datasets_jpeg_and_corrupt_files(tmp_path):
    path = generate(str(tmp_path), 5, datasets=None, image_format="jpeg", corrupt=2, size=48)
    coco = _load(path)
    assert all("/" not in i["file_name"] and i["file_name"].endswith(".jpg")
               for i in coco["images"])
    assert all(i["width"] == 48 for i in coco["images"])
    files = sorted(os.listdir(tmp_path))
    assert sum(f.startswith("corrupt_") for f in files) == 2


def test_generated_labels_import_into_a_project_for_all_families(tmp_path):
    from alray.families import FAMILIES
    from alray.project import Project

    coco = generate(str(tmp_path / "imgs"), 30, seed=0)
    p = Project.create("syn", store=str(tmp_path / "store"))
    assert p.add_images(str(tmp_path / "imgs")).added == 30
    report = p.import_labels(coco=coco)
    for fam in FAMILIES:
        assert report.images.get(fam) == 30, fam
    assert p.datasets() == ["A", "B", "C"]
