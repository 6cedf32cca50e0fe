"""The project store on real files: image registration, list files, label import, atomic writes,
settings and masks. Every image is generated here with PIL."""

from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from alray import _fs
from alray._fs import Store
from alray._images import parse_header
from alray.masks import decode_rle, encode_rle, mask_to_box, polygons_to_mask
from alray.project import (
    FAMILIES,
    LabelImportError,
    Project,
    ProjectError,
    image_id_for,
    list_projects,
)
from alray.settings import Settings, SettingsError, load_settings


# helpers ---------------------------------------------------------------------------------------
def make_image(path, size=(8, 6), fmt="PNG", color=(10, 120, 200)):
    """Write a real image file of ``size`` (w, h) in ``fmt``; returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


def image_bytes(size=(8, 6), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, format=fmt)
    return buf.getvalue()


def rle_string(counts: list[int]) -> str:
    """pycocotools' rleToString: the compressed form of uncompressed RLE counts."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def by_name(table: pa.Table) -> dict[str, dict]:
    return {f"{r['dataset']}/{r['file_name']}": r for r in table.to_pylist()}


@pytest.fixture
def store(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def tree(tmp_path):
    """A folder of images in every format, with the awkward cases next to them."""
    root = tmp_path / "imgs"
    make_image(root / "A" / "a1.png", (8, 6))
    make_image(root / "A" / "sub" / "a2.jpg", (16, 9), "JPEG")
    make_image(root / "B" / "b1.gif", (5, 7), "GIF")
    make_image(root / "B" / "b2.bmp", (11, 3), "BMP")
    make_image(root / "B" / "b3.webp", (13, 4), "WEBP")
    make_image(root / "top.png", (4, 4))
    (root / "A" / "data.dat").write_bytes(image_bytes((9, 9)))  # a PNG with a wrong extension
    (root / "A" / "notes.txt").write_text("not an image")
    (root / "A" / "garbage.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    jpeg = image_bytes((20, 10), "JPEG")
    (root / "A" / "trunc.jpg").write_bytes(jpeg[: jpeg.index(b"\xff\xc0")])  # cut before SOF0
    make_image(root / ".hidden.png")
    make_image(root / "A" / ".git" / "h.png")
    outside = make_image(tmp_path / "outside" / "o.png")
    os.symlink(outside, root / "B" / "link_out.png")
    os.symlink(root / "A" / "a1.png", root / "B" / "link_in.png")
    return root


# images from a folder ----------------------------------------------------------------------------
def test_add_folder_registers_every_image_and_reports_the_rest(tree, store):
    p = Project.create("P", store=store)
    report = p.add_images(str(tree))

    rows = by_name(p.images())
    assert set(rows) == {
        "A/a1.png",
        "A/sub/a2.jpg",
        "A/data.dat",
        "B/b1.gif",
        "B/b2.bmp",
        "B/b3.webp",
        "B/link_in.png",
        "imgs/top.png",  # files directly in the folder: dataset named after it
    }
    sizes = {k: (r["width"], r["height"]) for k, r in rows.items()}
    assert sizes == {
        "A/a1.png": (8, 6),
        "A/sub/a2.jpg": (16, 9),
        "A/data.dat": (9, 9),
        "B/b1.gif": (5, 7),
        "B/b2.bmp": (11, 3),
        "B/b3.webp": (13, 4),
        "B/link_in.png": (8, 6),
        "imgs/top.png": (4, 4),
    }
    a2 = rows["A/sub/a2.jpg"]
    assert a2["uri"] == os.path.join(os.path.realpath(tree), "A", "sub", "a2.jpg")
    assert a2["image_id"] == image_id_for("A", "sub/a2.jpg")
    assert report.added == 8
    assert report.datasets == {"A": 3, "B": 4, "imgs": 1}
    assert report.ignored == 1  # notes.txt

    problems = {os.path.basename(pr["path"]): pr["reason"] for pr in report.problems}
    assert set(problems) == {"garbage.jpg", "trunc.jpg", "link_out.png"}
    assert "not an image" in problems["garbage.jpg"]
    assert "corrupt JPEG" in problems["trunc.jpg"]
    assert "outside" in problems["link_out.png"]
    # the problems are kept in the project for later
    assert p.store.list("reports")


def test_add_folder_with_a_given_dataset(tree, store):
    p = Project.create("P", store=store)
    p.add_images(str(tree / "A"), dataset="cams")
    assert set(by_name(p.images())) == {"cams/a1.png", "cams/sub/a2.jpg", "cams/data.dat"}
    assert p.datasets() == ["cams"]


def test_readding_is_idempotent(tree, store):
    p = Project.create("P", store=store)
    first = p.add_images(str(tree))
    again = p.add_images(str(tree))
    assert again.added == 0
    assert again.already_present == first.added
    assert p.images().num_rows == first.added
    assert len(p.store.list("images", suffix=".parquet")) == 1  # nothing new written


def test_image_ids_are_stable_across_projects(tree, tmp_path):
    p1 = Project.create("P1", store=str(tmp_path / "s1"))
    p2 = Project.create("P2", store=str(tmp_path / "s2"))
    p1.add_images(str(tree))
    p2.add_images(str(tree))
    ids1 = p1.images().column("image_id").to_pylist()
    assert ids1 == p2.images().column("image_id").to_pylist()
    assert len(set(ids1)) == len(ids1)


def test_add_folder_errors(tmp_path, store):
    p = Project.create("P", store=store)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        p.add_images(str(tmp_path / "nope"))
    with pytest.raises(ProjectError, match="exactly one"):
        p.add_images(str(tmp_path), list_file="x.csv")
    with pytest.raises(ProjectError, match="invalid dataset name"):
        p.add_images(str(tmp_path), dataset="../x")


def test_unreadable_subfolder_and_lookalike_text_do_not_stop_the_add(tree, store, monkeypatch):
    (tree / "A" / "cars.txt").write_text("BMW and Mercedes are car brands, this is no bitmap")
    import alray._images as images

    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "sub":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    p = Project.create("P", store=store)
    report = p.add_images(str(tree))
    assert "A/sub/a2.jpg" not in by_name(p.images())
    assert report.added == 7 and report.ignored == 2  # notes.txt, cars.txt
    reasons = {os.path.basename(pr["path"]): pr["reason"] for pr in report.problems}
    assert reasons["sub"] == "unreadable folder: Permission denied"


def test_headers_are_read_without_pillow_for_common_formats():
    for fmt, size in (("PNG", (7, 5)), ("JPEG", (33, 17)), ("GIF", (3, 9)), ("BMP", (6, 2))):
        h = parse_header(image_bytes(size, fmt))
        assert (h.width, h.height) == size
        assert h.format == {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "BMP": "bmp"}[fmt]
    h = parse_header(image_bytes((12, 8), "WEBP"))
    assert (h.format, h.width, h.height) == ("webp", 12, 8)


# images from a list ------------------------------------------------------------------------------
@pytest.fixture
def listed(tmp_path):
    """Images beside a list folder, and one outside it."""
    lists = tmp_path / "lists"
    make_image(lists / "imgs" / "cam1" / "x.png", (10, 5))
    make_image(lists / "imgs" / "cam2" / "y.png", (3, 3))
    make_image(tmp_path / "outside.png", (2, 2))
    absolute = make_image(tmp_path / "elsewhere" / "z.png", (6, 4))
    entries = [
        {"uri": "imgs/cam1/x.png", "dataset": ""},
        {"uri": "imgs/cam2/y.png", "dataset": "named"},
        {"uri": "../outside.png", "dataset": ""},
        {"uri": absolute, "dataset": ""},
    ]
    return lists, entries


def _check_listed(p: Project, report, lists):
    rows = by_name(p.images())
    assert set(rows) == {"imgs/cam1/x.png", "named/imgs/cam2/y.png", "elsewhere/z.png"}
    assert rows["imgs/cam1/x.png"]["uri"] == os.path.join(str(lists), "imgs", "cam1", "x.png")
    assert (rows["elsewhere/z.png"]["width"], rows["elsewhere/z.png"]["height"]) == (6, 4)
    assert report.added == 3
    [problem] = report.problems
    assert problem["path"] == "../outside.png"
    assert "outside the list's folder" in problem["reason"]


def test_add_from_csv_list(listed, store):
    lists, entries = listed
    f = lists / "images.csv"
    with open(f, "w", newline="") as fh:
        w = csv.DictWriter(fh, ["uri", "dataset"])
        w.writeheader()
        w.writerows(entries)
    p = Project.create("P", store=store)
    _check_listed(p, p.add_images(list_file=str(f)), lists)
    assert p.add_images(list_file=str(f)).already_present == 3


def test_add_from_parquet_list(listed, store):
    lists, entries = listed
    f = lists / "images.parquet"
    pq.write_table(pa.Table.from_pylist(entries), f)
    p = Project.create("P", store=store)
    _check_listed(p, p.add_images(list_file=str(f)), lists)


def test_list_without_uri_column(tmp_path, store):
    f = tmp_path / "bad.csv"
    f.write_text("file,dataset\na.png,x\n")
    p = Project.create("P", store=store)
    with pytest.raises(ProjectError, match="'uri'") as e:
        p.add_images(list_file=str(f))
    assert "file, dataset" in str(e.value)  # says what it found
    with pytest.raises(ProjectError, match="no such file"):
        p.add_images(list_file=str(tmp_path / "missing.csv"))


# labels ------------------------------------------------------------------------------------------
W, H = 20, 10


@pytest.fixture
def labeled(tmp_path, store):
    """A project with datasets A (a1..a6) and B (b1, b2), every image W x H."""
    root = tmp_path / "imgs"
    for name in ("a1", "a2", "a3", "a4", "a5", "a6"):
        make_image(root / "A" / f"{name}.png", (W, H))
    for name in ("b1", "b2"):
        make_image(root / "B" / f"{name}.png", (W, H))
    p = Project.create("P", store=store)
    p.add_images(str(root))
    return p


def write_coco(path, images, annotations, categories=((1, "cat"), (2, "dog"))):
    doc = {
        "images": images,
        "annotations": [{"id": i + 1, **a} for i, a in enumerate(annotations)],
        "categories": [{"id": i, "name": n} for i, n in categories],
    }
    path.write_text(json.dumps(doc))
    return str(path)


def coco_images(*names):
    return [{"id": i + 1, "file_name": n, "width": W, "height": H} for i, n in enumerate(names)]


def labels_of(p: Project, family: str) -> dict[str, list[dict]]:
    """Labels of a family by 'dataset/file_name'."""
    names = {r["image_id"]: f"{r['dataset']}/{r['file_name']}" for r in p.images().to_pylist()}
    out: dict[str, list[dict]] = {}
    for r in p.labels(family).to_pylist():
        out.setdefault(names[r["image_id"]], []).append(r)
    return out


def test_coco_import_feeds_each_family(labeled, tmp_path):
    p = labeled
    mask = np.zeros((H, W), bool)
    mask[2:5, 3:9] = True
    rle = encode_rle(mask)
    mask2 = np.zeros((H, W), bool)
    mask2[0, :] = True
    mask2[6:9, 15:20] = True
    compressed = {"size": [H, W], "counts": rle_string(encode_rle(mask2)["counts"])}
    images = coco_images("a1.png", "a2.png", "a3.png", "a4.png", "A/a5.png", "a6.png")
    images[3]["tags"] = ["outdoor", "day"]
    anns = [
        {"image_id": 1, "category_id": 1},  # image-level → classifier
        {"image_id": 2, "category_id": 2, "bbox": [2, 3, 10, 5], "attributes": ["striped"]},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4], "attributes": {"big": False}},
        {"image_id": 3, "category_id": 1, "segmentation": [[5, 5, 15, 5, 15, 8, 5, 8]]},
        {"image_id": 5, "category_id": 2, "segmentation": rle, "bbox": [3, 2, 6, 3]},
        {"image_id": 6, "category_id": 1, "segmentation": compressed},
    ]
    report = p.import_labels(coco=write_coco(tmp_path / "c.json", images, anns))
    assert report.problems == []
    assert report.images == {
        "tagger": 1,
        "classifier": 1,
        "detector": 4,
        "attributor": 1,
        "instance_segmentor": 3,
        "semantic_segmentor": 3,
    }

    assert [r["label"] for r in labels_of(p, "classifier")["A/a1.png"]] == ["cat"]
    assert set(labels_of(p, "classifier")) == {"A/a1.png"}
    assert sorted(r["label"] for r in labels_of(p, "tagger")["A/a4.png"]) == ["day", "outdoor"]

    det = labels_of(p, "detector")
    assert set(det) == {"A/a2.png", "A/a3.png", "A/a5.png", "A/a6.png"}  # masks give boxes
    boxes = sorted((r["label"], r["bbox"]) for r in det["A/a2.png"])
    assert boxes == [("cat", [0.0, 0.0, 4.0, 4.0]), ("dog", [2.0, 3.0, 12.0, 8.0])]  # xyxy
    attrs = {r["label"]: r["attributes"] for r in labels_of(p, "attributor")["A/a2.png"]}
    assert attrs == {"dog": ["striped"], "cat": []}

    inst = labels_of(p, "instance_segmentor")
    sem = labels_of(p, "semantic_segmentor")
    assert set(inst) == set(sem) == {"A/a3.png", "A/a5.png", "A/a6.png"}

    def decoded(rows):
        [r] = rows
        return decode_rle({"size": r["rle_size"], "counts": r["rle_counts"]})

    poly = decoded(inst["A/a3.png"])
    expected = np.zeros((H, W), bool)
    expected[5:9, 5:16] = True  # the polygon's edges are inside it
    assert (poly == expected).all()
    assert inst["A/a3.png"][0]["bbox"] == [5.0, 5.0, 16.0, 9.0]  # derived from the mask
    assert (decoded(inst["A/a5.png"]) == mask).all()
    assert (decoded(sem["A/a5.png"]) == mask).all()
    assert inst["A/a5.png"][0]["bbox"] == [3.0, 2.0, 9.0, 5.0]
    assert (decoded(inst["A/a6.png"]) == mask2).all()
    assert sem["A/a6.png"][0]["label"] == "cat"


def test_csv_labels_with_and_without_header(labeled, tmp_path):
    p = labeled
    (tmp_path / "h.csv").write_text("image,label\na1.png,cat\nB/b1.png,dog\n")
    (tmp_path / "n.csv").write_text("a2.png,dog\n\nA/a3.png, cat \n")
    assert p.import_labels(csv=str(tmp_path / "h.csv")).images == {"classifier": 2}
    assert p.import_labels(csv=str(tmp_path / "n.csv")).annotations == {"classifier": 2}
    got = {k: [r["label"] for r in v] for k, v in labels_of(p, "classifier").items()}
    assert got == {
        "A/a1.png": ["cat"],
        "B/b1.png": ["dog"],
        "A/a2.png": ["dog"],
        "A/a3.png": ["cat"],
    }


def test_class_per_folder_labels(tmp_path, store):
    root = tmp_path / "pets"
    make_image(root / "cat" / "c1.png")
    make_image(root / "cat" / "deep" / "c2.jpg", fmt="JPEG")
    make_image(root / "dog" / "d1.png")
    (root / "dog" / "readme.txt").write_text("x")
    p = Project.create("P", store=store)
    p.add_images(str(root), dataset="pets")
    report = p.import_labels(image_folder=str(root))
    assert report.images == {"classifier": 3}
    got = {k: [r["label"] for r in v] for k, v in labels_of(p, "classifier").items()}
    assert got == {
        "pets/cat/c1.png": ["cat"],
        "pets/cat/deep/c2.jpg": ["cat"],
        "pets/dog/d1.png": ["dog"],
    }


def _bad_coco(tmp_path):
    images = coco_images("a1.png", "a2.png", "nowhere.png", "a3.png", "a4.png")
    anns = [
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 3]},  # valid
        {"image_id": 3, "category_id": 1},  # unknown image
        {"image_id": 2, "category_id": 1, "bbox": [15, 5, 10, 5]},  # x2 = 25 > 20
        {"image_id": 4, "category_id": 99},  # unknown category
        {"image_id": 5, "category_id": 2, "segmentation": encode_rle(np.ones((5, 5), bool))},
    ]
    return write_coco(tmp_path / "bad.json", images, anns)


def test_invalid_labels_import_nothing(labeled, tmp_path):
    p = labeled
    with pytest.raises(LabelImportError) as e:
        p.import_labels(coco=_bad_coco(tmp_path))
    problems = e.value.problems
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "unknown image" in text and "nowhere.png" in text
    assert "outside the 20x10 image" in text
    assert "unknown category_id 99" in text and "1=cat" in text
    assert "mask size [5, 5]" in text and "does not match the 20x10 image" in text
    assert "nothing was imported" in str(e.value)
    for family in FAMILIES:
        assert p.labels(family).num_rows == 0
    assert all(c["families"]["detector"]["labeled"] == 0 for c in p.counts())


def test_skip_invalid_imports_the_valid_labels(labeled, tmp_path):
    p = labeled
    report = p.import_labels(coco=_bad_coco(tmp_path), skip_invalid=True)
    assert len(report.problems) == 4
    assert report.images == {"detector": 1}
    assert list(labels_of(p, "detector")) == ["A/a1.png"]
    assert p.store.list("reports")


def test_reimport_replaces_an_images_labels_for_that_family(labeled, tmp_path):
    p = labeled
    first = write_coco(
        tmp_path / "1.json",
        coco_images("a1.png", "a2.png"),
        [
            {"image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]},
            {"image_id": 1, "category_id": 2, "bbox": [5, 5, 2, 2]},
            {"image_id": 2, "category_id": 2, "bbox": [1, 1, 2, 2]},
        ],
    )
    p.import_labels(coco=first)
    (tmp_path / "c.csv").write_text("a1.png,cat\n")
    p.import_labels(csv=str(tmp_path / "c.csv"))
    second = write_coco(
        tmp_path / "2.json",
        coco_images("a1.png"),
        [{"image_id": 1, "category_id": 2, "bbox": [3, 3, 4, 4]}],
    )
    p.import_labels(coco=second)
    p.import_labels(coco=second)  # twice: still no duplicates

    det = labels_of(p, "detector")
    assert [(r["label"], r["bbox"]) for r in det["A/a1.png"]] == [("dog", [3.0, 3.0, 7.0, 7.0])]
    assert [(r["label"], r["bbox"]) for r in det["A/a2.png"]] == [("dog", [1.0, 1.0, 3.0, 3.0])]
    assert [r["label"] for r in labels_of(p, "classifier")["A/a1.png"]] == ["cat"]


def test_ambiguous_base_name_asks_for_dataset(tmp_path, store):
    root = tmp_path / "imgs"
    make_image(root / "A" / "x.png")
    make_image(root / "B" / "x.png")
    p = Project.create("P", store=store)
    p.add_images(str(root))
    (tmp_path / "l.csv").write_text("x.png,cat\n")
    with pytest.raises(LabelImportError, match="dataset/file_name"):
        p.import_labels(csv=str(tmp_path / "l.csv"))
    (tmp_path / "l.csv").write_text("B/x.png,cat\n")
    p.import_labels(csv=str(tmp_path / "l.csv"))
    assert list(labels_of(p, "classifier")) == ["B/x.png"]


def test_malformed_coco_parts(labeled, tmp_path):
    p = labeled
    images = coco_images("a1.png", "a2.png")
    images[0]["tags"] = "night"  # a single tag as a string
    anns = [{"image_id": 2, "category_id": 1, "segmentation": {"size": [H, W], "counts": "a"}}]
    path = write_coco(tmp_path / "c.json", images, anns)
    with pytest.raises(LabelImportError) as e:
        p.import_labels(coco=path)
    assert e.value.problems == ["annotation 1: compressed RLE counts end in the middle of a number"]
    p.import_labels(coco=path, skip_invalid=True)
    assert [r["label"] for r in labels_of(p, "tagger")["A/a1.png"]] == ["night"]
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["categories"].append({"name": "no id"})
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="every category needs an 'id' and a 'name'"):
        p.import_labels(coco=path)


def test_label_source_errors(labeled, tmp_path):
    p = labeled
    with pytest.raises(ProjectError, match="no such file"):
        p.import_labels(coco=str(tmp_path / "missing.json"))
    with pytest.raises(ProjectError, match="exactly one"):
        p.import_labels()
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        p.import_labels(coco=str(tmp_path / "x.json"))


def test_counts_and_unlabeled(labeled, tmp_path):
    p = labeled
    (tmp_path / "l.csv").write_text("a1.png,cat\na2.png,dog\nb1.png,cat\n")
    p.import_labels(csv=str(tmp_path / "l.csv"))
    counts = {c["dataset"]: c for c in p.counts()}
    assert set(counts) == {"A", "B"}
    assert counts["A"]["images"] == 6 and counts["B"]["images"] == 2
    assert counts["A"]["families"]["classifier"] == {"labeled": 2, "unlabeled": 4}
    assert counts["B"]["families"]["classifier"] == {"labeled": 1, "unlabeled": 1}
    assert counts["A"]["families"]["detector"] == {"labeled": 0, "unlabeled": 6}

    names = lambda t: sorted(t.column("file_name").to_pylist())  # noqa: E731
    assert names(p.unlabeled("classifier")) == ["a3.png", "a4.png", "a5.png", "a6.png", "b2.png"]
    assert names(p.unlabeled("classifier", ["B"])) == ["b2.png"]
    assert p.unlabeled("detector").num_rows == 8
    with pytest.raises(ProjectError, match="datasets: A, B"):
        p.unlabeled("classifier", ["C"])
    with pytest.raises(ProjectError, match="unknown family"):
        p.unlabeled("painter")


def test_projects_are_listed_reopened_and_checked(labeled, store):
    assert list_projects(store) == ["P"]
    again = Project.open("P", store=store)
    assert again.images().equals(labeled.images())
    with pytest.raises(ProjectError, match="Projects there: P"):
        Project.open("Q", store=store)
    with pytest.raises(ProjectError, match="already exists"):
        Project.create("P", store=store)
    assert Project.create("P", store=store, exist_ok=True).name == "P"
    with pytest.raises(ProjectError, match="invalid project name"):
        Project.create("../evil", store=store)


# atomic writes -----------------------------------------------------------------------------------
def test_a_crash_mid_write_leaves_the_previous_state(tree, tmp_path, store, monkeypatch):
    p = Project.create("P", store=store)
    p.add_images(str(tree / "A"))
    before = p.images()

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        p.add_images(str(tree / "B"))
    monkeypatch.undo()

    assert Project.open("P", store=store).images().equals(before)
    leftovers = [n for n in os.listdir(p.store.path("images")) if ".tmp-" in n]
    assert leftovers == []  # the failed write cleaned up after itself

    # a process killed between writing and renaming leaves a temp file: readers skip it
    images_dir = p.store.path("images")
    with open(os.path.join(images_dir, "part-999.parquet.tmp-deadbeef"), "wb") as f:
        f.write(b"half a parquet file")
    with open(os.path.join(images_dir, "part-999.tmp-deadbeef.parquet"), "wb") as f:
        f.write(b"PAR1 half")
    assert Project.open("P", store=store).images().equals(before)
    assert p.add_images(str(tree / "B")).added == 3  # link_in leaves B: refused
    assert p.images().num_rows == before.num_rows + 3


def test_write_bytes_replaces_a_file_whole(tmp_path):
    s = Store(str(tmp_path / "s"))
    s.write_bytes(b"x" * 10_000, "a", "f.bin")
    s.write_bytes(b"short", "a", "f.bin")
    assert s.read_bytes("a", "f.bin") == b"short"
    assert s.list("a") == ["f.bin"]
    s.write_json({"k": [1, 2]}, "a", "j.json")
    assert s.read_json("a", "j.json") == {"k": [1, 2]}


def test_store_sub_keeps_the_uri_query():
    s = Store(
        "s3://bucket/root?endpoint_override=127.0.0.1:9&scheme=http",
        _fs.pafs.LocalFileSystem(),
        "/r",
    )
    sub = s.sub("P", "images")
    assert sub.uri == "s3://bucket/root/P/images?endpoint_override=127.0.0.1:9&scheme=http"
    assert sub.root == "/r/P/images"


# settings ----------------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith("ALRAY_"):
            monkeypatch.delenv(k)
    return monkeypatch


def test_settings_defaults(clean_env):
    s = load_settings()
    assert s.store == "./alray-store"
    assert s.ray_address is None
    assert s.device == "auto"
    assert s.batch_size == 64
    assert s.scorer_min_replicas == 1 and s.scorer_max_replicas is None
    assert isinstance(s, Settings)


def test_settings_from_environment(clean_env):
    clean_env.setenv("ALRAY_BATCH_SIZE", "8")
    clean_env.setenv("ALRAY_DEVICE", "cpu")
    clean_env.setenv("ALRAY_STORE", "s3://b/p")
    s = load_settings()
    assert (s.batch_size, s.device, s.store) == (8, "cpu", "s3://b/p")
    assert load_settings(batch_size=4).batch_size == 4  # explicit values win


@pytest.mark.parametrize(
    "var, value", [("ALRAY_BATCH_SIZE", "0"), ("ALRAY_BATCH_SIZE", "many"), ("ALRAY_DEVICE", "tpu")]
)
def test_bad_settings_name_the_variable(clean_env, var, value):
    clean_env.setenv(var, value)
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert var in str(e.value)
    assert repr(value) in str(e.value)


def test_max_replicas_below_min_is_refused(clean_env):
    with pytest.raises(SettingsError, match="scorer_max_replicas"):
        load_settings(scorer_min_replicas=3, scorer_max_replicas=2)
    clean_env.setenv("ALRAY_SCORER_MIN_REPLICAS", "2")
    clean_env.setenv("ALRAY_SCORER_MAX_REPLICAS", "1")
    with pytest.raises(SettingsError, match="below"):
        load_settings()


# masks -------------------------------------------------------------------------------------------
masks = arrays(bool, array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12))


@settings(max_examples=150, deadline=None)
@given(masks)
def test_rle_round_trip(mask):
    rle = encode_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert sum(rle["counts"]) == mask.size
    assert all(c > 0 for c in rle["counts"][1:])
    back = decode_rle(rle)
    assert back.shape == mask.shape and (back == mask).all()
    compressed = {"size": rle["size"], "counts": rle_string(rle["counts"])}
    assert (decode_rle(compressed) == mask).all()
    assert (decode_rle({**compressed, "counts": compressed["counts"].encode()}) == mask).all()


def test_compressed_rle_known_strings():
    # worked by hand from pycocotools' rleToString: 100 = 0b11_00100 → 'T' (4|0x20) then '3';
    # from the 4th count on, the difference to the count two before is stored: 7 - 5 = 2 → '2'
    m = decode_rle({"size": [5, 23], "counts": "T3532"})
    np.testing.assert_array_equal(
        np.flatnonzero(m.ravel(order="F")), [*range(100, 105), *range(108, 115)]
    )
    # a negative difference: 1 - 10 = -9 → 23 with the sign bit 0x10 → 'G'
    m = decode_rle({"size": [4, 4], "counts": "2:3G"})
    np.testing.assert_array_equal(np.flatnonzero(m.ravel(order="F")), [*range(2, 12), 15])
    assert rle_string([100, 5, 3, 7]) == "T3532" and rle_string([2, 10, 3, 1]) == "2:3G"


def test_bad_rle_is_refused():
    with pytest.raises(ValueError, match="sum to 5"):
        decode_rle({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros(4, bool))


def test_polygon_rectangle_to_mask_and_box():
    m = polygons_to_mask([[2, 1, 6, 1, 6, 3, 2, 3]], height=5, width=8)
    expected = np.zeros((5, 8), bool)
    expected[1:4, 2:7] = True
    np.testing.assert_array_equal(m, expected)
    assert mask_to_box(m) == [2.0, 1.0, 7.0, 4.0]
    assert mask_to_box(np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError, match="even number"):
        polygons_to_mask([[1, 2, 3]], 4, 4)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.data())
def test_polygon_rectangles_cover_their_pixels(h, w, data):
    x1 = data.draw(st.integers(0, w - 1))
    y1 = data.draw(st.integers(0, h - 1))
    x2 = data.draw(st.integers(x1, w - 1))
    y2 = data.draw(st.integers(y1, h - 1))
    if x2 == x1 or y2 == y1:
        return
    m = polygons_to_mask([[x1, y1, x2, y1, x2, y2, x1, y2]], h, w)
    assert mask_to_box(m) == [x1, y1, x2 + 1, y2 + 1]
    assert m.sum() == (x2 - x1 + 1) * (y2 - y1 + 1)
