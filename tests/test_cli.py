"""The real ``alray`` command line, run as a subprocess on generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from alray.project import Project


def _cmd(store, args, debug: bool) -> list[str]:
    flags = ["--debug"] if debug else []
    return [sys.executable, "-m", "alray", *flags, "--store", str(store), *args]


def _env() -> dict[str, str]:
    # no ALRAY_ settings and no cluster from the caller's shell: the CLI runs on its own
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALRAY_") and k != "RAY_ADDRESS"}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run(store, *args: str, ok: bool = True, debug: bool = False) -> subprocess.CompletedProcess:
    """``python -m alray [--debug] --store STORE ARGS…``; checks the exit status."""
    r = subprocess.run(
        _cmd(store, args, debug), capture_output=True, text=True, env=_env(), timeout=180
    )
    if ok:
        assert r.returncode == 0, f"{args} failed: {r.stderr}"
    return r


def run_many(store, *commands: tuple[str, ...], debug: bool = False):
    """Independent commands at once (each CLI start imports the whole library)."""
    procs = [
        subprocess.Popen(
            _cmd(store, args, debug),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for args in commands
    ]
    out = []
    for args, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
    return out


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one ``error:`` line and no traceback; return that line."""
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    return errors[0]


@pytest.fixture
def world(tmp_path):
    """Images in three datasets (pets/ is class-per-folder), a list file, label files."""
    imgs = tmp_path / "imgs"
    for ds, names in {"A": ["a1", "a2", "a3"], "B": ["b1", "b2"]}.items():
        (imgs / ds).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (16, 12), (40, 80, 120)).save(imgs / ds / f"{n}.png")
    (imgs / "pets" / "cat").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(imgs / "pets" / "cat" / "k1.png")
    more = tmp_path / "more"
    (more / "C").mkdir(parents=True)
    Image.new("RGB", (5, 5)).save(more / "C" / "c1.jpg")
    Image.new("RGB", (6, 5)).save(more / "C" / "c2.jpg")
    (more / "list.csv").write_text("uri\nC/c1.jpg\nC/c2.jpg\n")

    coco = {
        "images": [{"id": 1, "file_name": "a1.png"}, {"id": 2, "file_name": "B/b1.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 16, 12]},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    bad = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}
    (tmp_path / "bad.json").write_text(json.dumps(dict(coco, annotations=[bad])))
    short = {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 2]}
    (tmp_path / "short.json").write_text(json.dumps(dict(coco, annotations=[short])))
    (tmp_path / "labels.csv").write_text("image,label\na2.png,cat\nb2.png,dog\n")
    return tmp_path


def test_cli_project_workflow(world):
    store = world / "store"
    imgs = str(world / "imgs")
    added = json.loads(run(store, "project", "create", "P", "--images", imgs, "--json").stdout)
    assert (added["added"], added["datasets"]) == (6, {"A": 3, "B": 2, "pets": 1})

    # every write is a new uniquely named object, so these may run at once
    again, listed, coco, csv_, folder = run_many(
        store,
        ("images", "add", "P", "--images", imgs, "--json"),
        ("images", "add", "P", "--list", str(world / "more" / "list.csv")),
        ("labels", "import", "P", "--coco", str(world / "coco.json"), "--json"),
        ("labels", "import", "P", "--csv", str(world / "labels.csv")),
        ("labels", "import", "P", "--image-folder", f"{imgs}/pets", "--json"),
    )
    for r in (again, listed, coco, csv_, folder):
        assert r.returncode == 0, r.stderr
    again = json.loads(again.stdout)
    assert (again["added"], again["already_present"]) == (0, 6)
    assert "added 2 image(s)" in listed.stdout
    assert json.loads(coco.stdout)["images"] == {"detector": 2}
    assert "classifier" in csv_.stdout
    assert json.loads(folder.stdout)["images"] == {"classifier": 1}

    show, projects = run_many(
        store, ("project", "show", "P", "--json"), ("project", "list", "--json")
    )
    assert json.loads(projects.stdout) == ["P"]
    counts = {d["dataset"]: d for d in json.loads(show.stdout)["datasets"]}
    assert {k: d["images"] for k, d in counts.items()} == {"A": 3, "B": 2, "C": 2, "pets": 1}
    assert counts["A"]["families"]["detector"] == {"labeled": 1, "unlabeled": 2}
    assert counts["A"]["families"]["classifier"] == {"labeled": 1, "unlabeled": 2}
    assert counts["B"]["families"]["classifier"] == {"labeled": 1, "unlabeled": 1}
    assert counts["pets"]["families"]["classifier"] == {"labeled": 1, "unlabeled": 0}
    assert counts["C"]["families"]["detector"] == {"labeled": 0, "unlabeled": 2}


def test_cli_errors_are_one_line(world):
    store = world / "store"
    p = Project.create("P", store=str(store))
    p.add_images(str(world / "imgs"))

    unknown, coco_missing, list_missing, invalid, both, debug, skipped = run_many(
        store,
        ("images", "add", "Nope", "--images", str(world)),
        ("labels", "import", "P", "--coco", "missing.json"),
        ("images", "add", "P", "--list", "missing.csv"),
        ("labels", "import", "P", "--coco", str(world / "bad.json")),
        ("images", "add", "P", "--images", "x", "--list", "y.csv"),
        ("--debug", "project", "show", "Nope"),
        ("labels", "import", "P", "--coco", str(world / "short.json"), "--skip-invalid"),
    )
    line = one_line_error(unknown)
    assert "no project 'Nope'" in line and "Projects there: P" in line
    assert "no such file: missing.json" in one_line_error(coco_missing)
    assert "no such file: missing.csv" in one_line_error(list_missing)
    line = one_line_error(invalid)
    assert "1 problem(s)" in line and "nothing was imported" in line
    assert "box [10.0, 10.0, 30.0, 30.0] (xyxy) is outside the 16x12 image" in invalid.stderr
    assert "exactly one of --images DIR or --list FILE" in one_line_error(both)
    assert p.labels("detector").num_rows == 0

    # --skip-invalid reports what it skipped, brackets and all (no rich markup eaten)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 1 invalid label(s)" in skipped.stderr
    assert "bbox must be [x, y, width, height], got [1, 2]" in skipped.stderr

    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ProjectError" in debug.stderr
