"""The project store on an S3-compatible server (moto) on loopback: the same code path as a
bucket on a cluster, with images both on local disk and in the bucket."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow.fs as pafs
import pytest
from _s3 import moto_s3
from PIL import Image

from alray._fs import Store
from alray.masks import decode_rle
from alray.project import Project, list_projects

pytest.importorskip("moto.server")

BUCKET = "alray-test"


@pytest.fixture(scope="module")
def s3():
    """(endpoint query string, pyarrow S3 filesystem) of a moto server with one bucket."""
    with moto_s3(BUCKET) as server:
        yield server["query"], server["fs"]


def png(size, color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def upload(fs: pafs.S3FileSystem, key: str, data: bytes) -> None:
    with fs.open_output_stream(f"{BUCKET}/{key}") as f:
        f.write(data)


def test_project_in_s3_with_local_and_s3_images(s3, tmp_path):
    query, fs = s3
    store = f"s3://{BUCKET}/stores/one?{query}"

    local = tmp_path / "imgs"
    (local / "cam1").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (10 + i, 8)).save(local / "cam1" / f"l{i}.png")
    (local / "cam1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    upload(fs, "imgs/cam2/s0.png", png((7, 5)))
    upload(fs, "imgs/cam2/deep/s1.png", png((9, 4)))
    upload(fs, "imgs/cam3/with space.png", png((3, 3)))
    upload(fs, "imgs/cam3/.hidden.png", png((3, 3)))
    upload(fs, "imgs/cam3/notes.txt", b"hello")

    p = Project.create("P", store=store)
    assert p.store.uri == f"s3://{BUCKET}/stores/one/P?{query}"
    r1 = p.add_images(str(local))
    assert (r1.added, len(r1.problems)) == (3, 1)
    assert "corrupt PNG" in r1.problems[0]["reason"]

    r2 = p.add_images(f"s3://{BUCKET}/imgs?{query}")
    assert r2.added == 3 and r2.problems == [] and r2.ignored == 1
    assert r2.datasets == {"cam2": 2, "cam3": 1}
    again = p.add_images(f"s3://{BUCKET}/imgs?{query}")
    assert (again.added, again.already_present, again.ignored) == (0, 3, 1)

    rows = {f"{r['dataset']}/{r['file_name']}": r for r in p.images().to_pylist()}
    assert set(rows) == {
        "cam1/l0.png",
        "cam1/l1.png",
        "cam1/l2.png",
        "cam2/s0.png",
        "cam2/deep/s1.png",
        "cam3/with space.png",
    }
    assert (rows["cam2/deep/s1.png"]["width"], rows["cam2/deep/s1.png"]["height"]) == (9, 4)
    spaced = rows["cam3/with space.png"]
    assert spaced["uri"].startswith(f"s3://{BUCKET}/imgs/cam3/with%20space.png?")
    assert p.read_image_bytes(spaced["uri"]) == png((3, 3))
    assert p.read_image_bytes(rows["cam1/l0.png"]["uri"]).startswith(b"\x89PNG")

    # labels
    coco = {
        "images": [
            {"id": 1, "file_name": "s0.png", "width": 7, "height": 5},
            {"id": 2, "file_name": "cam1/l1.png", "width": 11, "height": 8},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 3, 2]},
            {
                "id": 2,
                "image_id": 2,
                "category_id": 2,
                "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]],
            },
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bike"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    report = p.import_labels(coco=str(tmp_path / "coco.json"))
    assert report.images["detector"] == 2 and report.images["instance_segmentor"] == 1
    (tmp_path / "l.csv").write_text("image,label\ncam2/deep/s1.png,car\n")
    p.import_labels(csv=str(tmp_path / "l.csv"))

    counts = {c["dataset"]: c for c in p.counts()}
    assert {k: c["images"] for k, c in counts.items()} == {"cam1": 3, "cam2": 2, "cam3": 1}
    assert counts["cam2"]["families"]["detector"] == {"labeled": 1, "unlabeled": 1}
    assert counts["cam2"]["families"]["classifier"] == {"labeled": 1, "unlabeled": 1}
    assert counts["cam1"]["families"]["semantic_segmentor"] == {"labeled": 1, "unlabeled": 2}
    assert [r["file_name"] for r in p.unlabeled("detector", ["cam2"]).to_pylist()] == [
        "deep/s1.png"
    ]

    # everything is in the bucket, and a fresh object reads the same
    keys = [
        i.path for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/stores/one", recursive=True))
    ]
    assert f"{BUCKET}/stores/one/P/project.json" in keys
    assert any(k.startswith(f"{BUCKET}/stores/one/P/labels/detector/part-") for k in keys)
    assert not any(".tmp-" in k for k in keys)
    assert list_projects(store) == ["P"]
    fresh = Project.open("P", store=store)
    assert fresh.info()["name"] == "P"
    assert fresh.images().equals(p.images())
    assert fresh.labels("detector").equals(p.labels("detector"))
    [seg] = fresh.labels("instance_segmentor").to_pylist()
    mask = decode_rle({"size": seg["rle_size"], "counts": seg["rle_counts"]})
    assert mask.shape == (8, 11) and int(mask.sum()) == 4 * 3
    assert np.array_equal(np.argwhere(mask)[[0, -1]], [[1, 1], [3, 4]])


def test_s3_store_basics(s3):
    query, fs = s3
    s = Store(f"s3://{BUCKET}/basics?{query}")
    assert s.list("nothing") == [] and not s.exists("x.json")
    s.write_json({"a": 1}, "d", "x.json")
    s.write_bytes(b"0123456789", "d", "y.bin")
    s.write_bytes(b"new", "d", "y.bin")
    assert s.read_json("d", "x.json") == {"a": 1}
    assert s.read_bytes("d", "y.bin") == b"new"
    assert s.list("d") == ["x.json", "y.bin"]
    assert s.list_dirs() == ["d"]
    sub = s.sub("d")
    assert sub.uri == f"s3://{BUCKET}/basics/d?{query}"
    assert sorted(os.path.basename(f) for f in Store(sub.uri).walk_files()) == ["x.json", "y.bin"]
    s.delete("d", "y.bin")
    assert s.list("d") == ["x.json"]


def test_s3_image_list_and_missing_objects(s3, tmp_path):
    query, fs = s3
    upload(fs, "listed/a.png", png((4, 2)))
    f = tmp_path / "list.csv"
    f.write_text(
        "uri,dataset\n"
        f"s3://{BUCKET}/listed/a.png?{query},web\n"
        f"s3://{BUCKET}/listed/missing.png?{query},web\n"
    )
    p = Project.create("L", store=str(tmp_path / "store"))
    report = p.add_images(list_file=str(f))
    assert report.added == 1
    [problem] = report.problems
    assert "missing.png" in problem["path"] and problem["reason"].startswith("unreadable")
    [row] = p.images().to_pylist()
    assert (row["dataset"], row["file_name"], row["width"], row["height"]) == ("web", "a.png", 4, 2)
