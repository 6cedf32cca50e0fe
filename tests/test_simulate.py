"""Learning-curve backtests: curve arithmetic, every family end to end on tiny generated data
(shape of the outputs, not the science: whether margin beats random is measured by hand, see
the README), the same initial set for every heuristic, and the CLI."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from alray.families import FAMILIES
from alray.project import Project
from alray.simulate import (
    aulc,
    initial_sets,
    labels_to_reach,
    simulate,
    summarize,
    temporary_project,
)
from alray.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")

N_IMAGES = 60
SIZE = 32
TINY = {"initial": 12, "step": 6, "rounds": 2, "seeds": 1, "epochs": 1, "input_size": SIZE}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    coco = generate(str(d / "imgs"), N_IMAGES, size=SIZE, seed=3)
    p = Project.create("sim", store=str(d / "store"))
    p.add_images(str(d / "imgs"))
    p.import_labels(coco=coco)
    return p, str(d / "imgs"), coco


# ------------------------------------------------------------------------------- arithmetic
def test_aulc_is_the_mean_height_of_the_curve():
    assert aulc([10, 20, 30], [0.5, 0.7, 0.7]) == pytest.approx(0.65)
    assert aulc([10, 30], [0.4, 0.4]) == pytest.approx(0.4)
    assert aulc([10], [0.3]) == 0.3
    # uneven steps weigh by labeled count
    assert aulc([0, 10, 40], [0.0, 1.0, 1.0]) == pytest.approx((5 + 30) / 40)


def test_labels_to_reach_interpolates_and_says_never():
    assert labels_to_reach([100, 200], [0.5, 0.9], 0.7) == pytest.approx(150)
    assert labels_to_reach([100, 200], [0.8, 0.9], 0.7) == 100
    assert labels_to_reach([100, 200], [0.5, 0.6], 0.7) is None


def test_initial_sets_are_seeded_and_hold_two_classes():
    pool = np.arange(50)
    a, b = initial_sets(pool, 5, 2), initial_sets(pool, 5, 2)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    assert a[0].tolist() != a[1].tolist()
    classes = np.array([0] * 48 + [1, 1])  # a random draw of 5 is almost always all 0
    for s in initial_sets(pool, 5, 4, classes=classes):
        assert len(np.unique(classes[s])) == 2


def test_summary_compares_with_random_per_seed():
    rows = []
    for seed, bump in ((0, 0.1), (1, -0.05)):
        for h, extra in (("margin", bump), ("random", 0.0)):
            for r, (x, y) in enumerate(((10, 0.5), (20, 0.6), (30, 0.7))):
                rows.append(
                    {
                        "heuristic": h,
                        "seed": seed,
                        "round": r,
                        "labeled": x,
                        "metric": y + (extra if r else 0.0),
                    }
                )
    s = summarize(rows, ["margin", "random"], full=0.8)
    assert s["margin"]["wins_vs_random"] == "1/2"
    assert s["margin"]["aulc_vs_random"] == pytest.approx(s["margin"]["aulc"] - s["random"]["aulc"])
    assert s["random"]["aulc_vs_random"] is None
    # 95 % of 0.8 = 0.76: random never gets there, margin's mean curve (0.725 at 30) neither
    assert s["random"]["labels_to_95"] is None
    assert set(s["margin"]) >= {
        "aulc",
        "aulc_std",
        "labels_to_95",
        "labels_vs_random",
        "final_metric",
        "aulc_per_seed",
    }


def test_bad_requests_say_what_to_change(shapes):
    p, _, _ = shapes
    with pytest.raises(ValueError, match="cannot be simulated"):
        simulate(p, "classifier", heuristics=["none"], out="unused")
    with pytest.raises(ValueError, match="unknown heuristic"):
        simulate(p, "classifier", heuristics=["nope"], out="unused")
    with pytest.raises(ValueError, match="lower --initial"):
        simulate(p, "classifier", initial=40, step=20, rounds=3, input_size=SIZE, out="unused")


# ---------------------------------------------------------------------------- end to end
def _read_csv(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_complete_curves(ray_session, shapes, tmp_path, family):
    p, _, _ = shapes
    heur = ["margin", "random"]
    sim = simulate(p, family, heuristics=heur, out=str(tmp_path / "out"), **TINY)
    for name in ("curve.csv", "picks.csv", "curve.png", "summary.csv", "summary.json"):
        assert os.path.getsize(tmp_path / "out" / name) > 0, name

    rows = _read_csv(sim.files["curve"])
    assert len(rows) == len(heur) * TINY["seeds"] * (TINY["rounds"] + 1)
    for h in heur:
        mine = [r for r in rows if r["heuristic"] == h]
        assert [int(r["labeled"]) for r in mine] == [12, 18, 24]
        for r in mine:
            assert 0.0 <= float(r["metric"]) <= 1.0, r
    assert sim.full_metric is not None and 0.0 <= sim.full_metric <= 1.0

    picks = _read_csv(sim.files["picks"])
    for h in heur:  # no image is labeled twice
        ids = [r["image_id"] for r in picks if r["heuristic"] == h]
        assert len(ids) == len(set(ids)) == 24

    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert doc["family"] == family and doc["metric"] == sim.metric
    assert [s["heuristic"] for s in doc["heuristics"]] == heur
    for s in doc["heuristics"]:
        assert {"aulc", "labels_to_95", "aulc_vs_random", "labels_vs_random"} <= set(s)
        assert 0.0 <= s["aulc"] <= 1.0
    assert doc["heuristics"][0]["wins_vs_random"] in ("0/1", "1/1")
    assert doc["config"]["test_images"] + doc["config"]["pool"] == N_IMAGES


@pytest.mark.ray
@pytest.mark.slow
def test_every_heuristic_starts_from_the_same_images_per_seed(ray_session, shapes, tmp_path):
    p, _, _ = shapes
    sim = simulate(
        p,
        "classifier",
        heuristics=["margin", "entropy", "random"],
        out=str(tmp_path / "o"),
        full_data=False,
        **{**TINY, "seeds": 2, "rounds": 1},
    )
    assert sim.full_metric is None and sim.summary["margin"]["labels_to_95"] is None
    start: dict[tuple[str, int], set[str]] = {}
    for r in sim.picks:
        if r["round"] == 0:
            start.setdefault((r["heuristic"], r["seed"]), set()).add(r["image_id"])
    for seed in (0, 1):
        sets = [start[(h, seed)] for h in ("margin", "entropy", "random")]
        assert sets[0] == sets[1] == sets[2] and len(sets[0]) == TINY["initial"]
    assert start[("margin", 0)] != start[("margin", 1)]
    # round 0 is one model per seed: every heuristic reports its metric, and picks from it
    first = {(r["heuristic"], r["seed"]): r["metric"] for r in sim.curve if r["round"] == 0}
    for seed in (0, 1):
        assert first[("margin", seed)] == first[("entropy", seed)] == first[("random", seed)]


def test_temporary_project_imports_a_folder_and_goes_away(shapes):
    _, imgs, coco = shapes
    with temporary_project(imgs, coco=coco) as p:
        store = p.store_uri
        assert p.labels("classifier").num_rows == N_IMAGES
    assert not os.path.exists(store)
    with pytest.raises(ValueError, match="exactly one"), temporary_project(imgs):
        pass


@pytest.mark.ray
@pytest.mark.slow
def test_cli_simulates_a_folder_with_csv_labels(ray_session, shapes, tmp_path):
    from typer.testing import CliRunner

    from alray.cli import app

    _, imgs, coco = shapes
    with open(coco) as f:
        doc = json.load(f)
    files = {i["id"]: i["file_name"] for i in doc["images"]}
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,label\n"
        + "".join(
            f"{files[a['image_id']]},{cats[a['category_id']]}\n"
            for a in doc["annotations"]
            if "bbox" not in a
        )
    )
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app,
        [
            "simulate",
            "--images",
            imgs,
            "--csv",
            str(labels),
            "--family",
            "classifier",
            "--heuristics",
            "margin,random",
            "--initial",
            "12",
            "--step",
            "6",
            "--rounds",
            "1",
            "--seeds",
            "2",
            "--full-runs",
            "1",
            "--epochs",
            "1",
            "--input-size",
            str(SIZE),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "AULC" in res.output and "margin" in res.output
    assert (out / "curve.png").exists()
    doc = json.loads((out / "summary.json").read_text())
    assert doc["config"]["seeds"] == [0, 1] and len(doc["config"]["full_data_runs"]) == 1

    res = CliRunner().invoke(
        app, ["simulate", "--images", imgs, "--family", "classifier", "--out", str(out)]
    )
    assert res.exit_code != 0
