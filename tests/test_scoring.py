"""Distributed scoring and ranking on a real local Ray: every family, failures, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from alray import families, ranks, scoring
from alray.assistants import load_assistant, save_version, script_bytes
from alray.models import build_model
from alray.preprocess import prepare_image
from alray.project import Project, read_uri
from alray.settings import load_settings
from alray.synthetic import generate

pytestmark = pytest.mark.ray

SIZE = 32
CLASSES = {
    "classifier": ["circle", "square", "triangle"],
    "tagger": ["red", "green", "blue"],
    "detector": ["circle", "square", "triangle"],
    "instance_segmentor": ["circle", "square", "triangle"],
    "semantic_segmentor": ["background", "circle", "square", "triangle"],
    "attributor": ["red", "green", "blue", "large"],
}


def _add_model(project: Project, family: str, seed: int = 0) -> int:
    torch.manual_seed(seed)
    meta = {"classes": CLASSES[family], "input_size": [SIZE, SIZE], "source": "test"}
    if family == "attributor":  # classes are the attributes; objects have their own classes
        net = build_model(family, num_classes=3, num_attributes=len(CLASSES[family]))
        meta["object_classes"] = ["circle", "square", "triangle"]
    else:
        net = build_model(family, num_classes=len(CLASSES[family]))
    meta = save_version(project, family, script_bytes(net.eval()), meta)
    return meta["version"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("scoring")
    generate(str(root / "images"), 60, size=SIZE, seed=3)
    p = Project.create("scoring", store=str(root / "store"))
    p.add_images(str(root / "images"))
    for fam in CLASSES:
        _add_model(p, fam)
    return p


@pytest.fixture()
def settings():
    return load_settings(batch_size=8)


def _plain_scores(project: Project, family: str, heuristic: str = "margin") -> dict[str, float]:
    """The same model and heuristic in one process, no Ray: the reference."""
    a = load_assistant(project, family, device="cpu")
    m = project.unlabeled(family)
    arrays, sizes = zip(
        *(prepare_image(read_uri(u), a.input_size) for u in m["uri"].to_pylist()), strict=True
    )
    records = a.predict(np.stack(arrays), np.array(sizes))
    scores = families.image_scores(family, records, heuristic)
    return dict(zip(m["image_id"].to_pylist(), scores.tolist(), strict=True))


def test_full_ranking_matches_a_plain_loop(project, settings):
    r = scoring.rank(project, "classifier", settings=settings)
    t = r.table
    assert t.num_rows == project.unlabeled("classifier").num_rows == 60
    assert t["rank"].to_pylist() == list(range(1, 61))
    scores = t["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0)
    plain = _plain_scores(project, "classifier")
    got = dict(zip(t["image_id"].to_pylist(), scores.tolist(), strict=True))
    assert got.keys() == plain.keys()
    np.testing.assert_allclose([got[k] for k in plain], list(plain.values()), rtol=1e-6, atol=1e-9)
    assert r.meta["model_version"] == 1 and r.meta["heuristic"] == "margin"


def test_identical_inputs_identical_rankings_and_top_n(project, settings):
    a = scoring.rank(project, "classifier", heuristic="entropy", settings=settings).table
    b = scoring.rank(project, "classifier", heuristic="entropy", settings=settings).table
    assert a.equals(b)
    top = scoring.rank(project, "classifier", heuristic="entropy", n=7, settings=settings).table
    assert top.num_rows == 7
    assert top["image_id"].to_pylist() == a["image_id"].to_pylist()[:7]
    assert top["rank"].to_pylist() == list(range(1, 8))


def test_dataset_filter(project, settings):
    ds = project.datasets()[:2]
    t = scoring.rank(project, "classifier", datasets=ds, settings=settings).table
    assert set(t["dataset"].to_pylist()) <= set(ds)
    assert t.num_rows == project.unlabeled("classifier", ds).num_rows
    with pytest.raises(ValueError, match="unknown dataset"):
        scoring.rank(project, "classifier", datasets=["nope"], settings=settings)


def test_none_is_alphabetical_and_random_is_seeded(project, settings):
    t = scoring.rank(project, "classifier", heuristic="none", settings=settings).table
    names = t["file_name"].to_pylist()
    assert names == sorted(names)
    assert t["score"].null_count == t.num_rows
    r1 = scoring.rank(project, "classifier", heuristic="random", seed=1, settings=settings).table
    r2 = scoring.rank(project, "classifier", heuristic="random", seed=1, settings=settings).table
    r3 = scoring.rank(project, "classifier", heuristic="random", seed=2, settings=settings).table
    assert r1.equals(r2)
    assert r1["image_id"].to_pylist() != r3["image_id"].to_pylist()
    top = scoring.rank(project, "classifier", heuristic="random", seed=1, n=5, settings=settings)
    assert top.table["image_id"].to_pylist() == r1["image_id"].to_pylist()[:5]


def test_bad_requests_say_what_to_fix(project, settings):
    with pytest.raises(ValueError, match="unknown heuristic"):
        scoring.rank(project, "classifier", heuristic="vibes", settings=settings)
    with pytest.raises(ValueError, match="unknown family"):
        scoring.rank(project, "segmentor", settings=settings)
    with pytest.raises(ValueError, match="reduction"):
        scoring.rank(project, "detector", reduction="median", settings=settings)


@pytest.mark.parametrize("family", list(CLASSES))
def test_every_family_ranks(project, settings, family):
    r = scoring.rank(project, family, n=10, settings=settings)
    assert r.table.num_rows == 10
    s = r.table["score"].to_numpy()
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) <= 0)


def test_bald_uses_monte_carlo_dropout(project, settings):
    r = scoring.rank(project, "classifier", heuristic="bald", mc_samples=4, settings=settings)
    assert r.meta["mc_samples"] == 4
    assert r.table["score"].to_numpy().max() > 0  # dropout samples differ


def test_saved_version_and_labeled_images_left_out(tmp_path, ray_session, settings):
    generate(str(tmp_path / "images"), 20, size=SIZE, seed=5, datasets=("A",))
    p = Project.create("saved", store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p, "classifier")
    r = scoring.rank(p, "classifier", save=True, settings=settings)
    assert r.version == 1 and ranks.list_versions(p, "classifier") == [1]
    first = r.table["file_name"].to_pylist()[0]
    (tmp_path / "l.csv").write_text(f"image,label\n{first},circle\n")
    p.import_labels(csv=str(tmp_path / "l.csv"))
    t, meta = ranks.current(p, "classifier")
    assert meta["version"] == 1 and meta["model_version"] == 1
    assert first not in t["file_name"].to_pylist() and t.num_rows == 19
    assert t["rank"].to_pylist()[0] == 2  # ranks are the stored ones


def test_corrupt_and_vanished_images_are_skipped_and_reported(tmp_path, ray_session, settings):
    generate(str(tmp_path / "images"), 16, size=SIZE, seed=6, datasets=("A",))
    p = Project.create("broken", store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p, "classifier")
    uris = sorted(p.images()["uri"].to_pylist())
    with open(uris[0], "r+b") as f:  # header intact, pixels garbage: only decoding can tell
        f.seek(60)
        f.write(os.urandom(200))
        f.truncate(300)
    os.remove(uris[1])
    r = scoring.rank(p, "classifier", settings=settings)
    assert r.meta["skipped_count"] >= 1
    skipped = {s["uri"] for s in r.meta["skipped"]}
    assert uris[1] in skipped
    assert r.table.num_rows == 16 - r.meta["skipped_count"]


def test_a_killed_replica_is_replaced_and_the_ranking_is_the_same(tmp_path, ray_session):
    import ray._private.state as state

    generate(str(tmp_path / "images"), 120, size=SIZE, seed=7, datasets=("A",))
    p = Project.create("killed", store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "images"))
    _add_model(p, "classifier")
    s = load_settings(batch_size=4)
    calm = scoring.rank(p, "classifier", settings=s).table
    killed: list[int] = []

    def kill_once(done: int, total: int | None) -> None:
        if killed or total is not None:
            return
        for a in state.actors().values():
            if "Scorer" in a["ActorClassName"] and a["State"] == "ALIVE" and a.get("Pid"):
                os.kill(a["Pid"], signal.SIGKILL)
                killed.append(a["Pid"])
                return

    stormy = scoring.rank(p, "classifier", settings=s, progress=kill_once).table
    assert killed, "no scorer replica was found to kill"
    assert stormy.equals(calm)


def test_export_formats(project, settings, tmp_path):
    t = scoring.rank(project, "classifier", n=5, settings=settings).table
    assert pq.read_table(ranks.export(t, str(tmp_path / "r.parquet"))).equals(t)
    ranks.export(t, str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == t.to_pylist()
    ranks.export(t, str(tmp_path / "r.csv"))
    assert (tmp_path / "r.csv").read_text().splitlines()[0].replace('"', "") == (
        "image_id,file_name,dataset,score,rank"
    )
    with pytest.raises(ValueError, match="csv"):
        ranks.export(t, str(tmp_path / "r.xlsx"))


def test_cli_rank(project, tmp_path):
    """`alray rank` as a user runs it: its own Ray, a table or JSON, the file written."""
    env = {**os.environ, "ALRAY_BATCH_SIZE": "16", "ALRAY_PROGRESS_BARS": "0"}
    base = [sys.executable, "-m", "alray", "--store", project.store_uri, "rank", project.name]
    out = tmp_path / "top.csv"
    cmd = [*base, "--family", "classifier", "--n", "5", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert len(printed["ranks"]) == 5 and printed["meta"]["model_version"] == 1
    assert len(out.read_text().strip().splitlines()) == 6
    bad = subprocess.run(
        [*base, "--family", "classifier", "--heuristic", "vibes"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode != 0 and "unknown heuristic" in bad.stderr
    assert "Traceback" not in bad.stderr
