"""Training every family on generated shapes: metric far above chance on held-out images,
MC dropout, too-few-labels errors, reproducibility, and training through Ray and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alray.assistants import latest_version, list_versions, load_assistant
from alray.families import FAMILIES, image_scores
from alray.project import Project
from alray.synthetic import generate
from alray.training import NotEnoughLabels, load_labeled, split_indices, train

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")

N_IMAGES = 800
# epochs per family: enough to clear the bar below in well under a minute on 2 CPU cores
EPOCHS = {"classifier": 20, "tagger": 4, "detector": 12, "instance_segmentor": 12,
          "semantic_segmentor": 12, "attributor": 10}
# chance: classifier 4 classes ≈ 0.28 (majority); tagger F1 of guessing ≈ 0.4; detector and
# instance mAP of an untrained net ≈ 0; semantic mIoU of "all background" ≈ 0.16;
# attributor F1 with no detections = 0
BARS = {"classifier": 0.6, "tagger": 0.85, "detector": 0.35, "instance_segmentor": 0.35,
        "semantic_segmentor": 0.3, "attributor": 0.55}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    # one thread: on a shared 2-core machine two OpenMP threads spin-wait for each other and
    # run many times slower than one
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    coco = generate(str(d / "imgs"), N_IMAGES, seed=0)
    p = Project.create("shapes", store=str(d / "store"))
    p.add_images(str(d / "imgs"))
    p.import_labels(coco=coco)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_learns_far_above_chance(shapes, family):
    meta = train(shapes, family, epochs=EPOCHS[family], seed=0, device="cpu")
    value = meta["metric"]["value"]
    print(f"{family}: {meta['metric']['name']} = {value:.3f} "
          f"({meta['training']['seconds']} s)")
    assert value >= BARS[family], meta["metric"]
    assert meta["label_count"] == N_IMAGES and meta["source"] == "trained"
    assert meta["training"]["val_images"] == N_IMAGES // 5
    assert latest_version(shapes, family)["version"] == meta["version"]
    # the stored TorchScript predicts the family's record for new images
    a = load_assistant(shapes, family, device="cpu")
    data = load_labeled(shapes, family, 64)
    recs = a.predict(data.images[:4])
    assert len(recs) == 4 and all("probs" in r for r in recs)


@pytest.mark.slow
def test_mc_dropout_samples_differ_and_bald_finds_ambiguous_images(shapes):
    if latest_version(shapes, "classifier") is None:
        train(shapes, "classifier", epochs=EPOCHS["classifier"], seed=0, device="cpu")
    a = load_assistant(shapes, "classifier", device="cpu")
    data = load_labeled(shapes, "classifier", 64)
    _, val = split_indices(len(data.image_ids), 0.2, 0, data.y)
    recs = a.predict_mc(data.images[val], 10)
    probs = np.stack([r["probs"] for r in recs])  # (N, K, C)
    assert probs.shape == (len(val), 10, 4)
    assert (probs.std(1).max(-1) > 1e-3).mean() > 0.5  # samples differ for most images
    bald = image_scores("classifier", recs, "bald")
    margin = image_scores("classifier", recs, "margin")
    assert (bald > 0).all()
    # ambiguous images (high margin score) carry more bald than confident ones
    order = np.argsort(margin)
    q = len(order) // 4
    print(f"bald: ambiguous quarter {bald[order[-q:]].mean():.3f}, "
          f"confident quarter {bald[order[:q]].mean():.3f}")
    assert bald[order[-q:]].mean() > 1.1 * bald[order[:q]].mean()
    # wrongly classified images are among the uncertain ones
    wrong = probs.mean(1).argmax(1) != data.y[val]
    assert margin[wrong].mean() > margin[~wrong].mean()


def _small_project(tmp_path, n, classes, name="small", tags=True):
    coco = generate(str(tmp_path / "imgs"), n, seed=1, datasets=None)
    with open(coco) as f:
        doc = json.load(f)
    cat = {c["name"]: c["id"] for c in doc["categories"]}
    for k, ann in enumerate(a for a in doc["annotations"] if "bbox" not in a):
        ann["category_id"] = cat[classes[k % len(classes)]]
    doc["annotations"] = [a for a in doc["annotations"] if "bbox" not in a]
    if not tags:
        for img in doc["images"]:
            img.pop("tags")
    path = tmp_path / "small.json"
    path.write_text(json.dumps(doc))
    p = Project.create(name, store=str(tmp_path / "store"))
    p.add_images(str(tmp_path / "imgs"))
    p.import_labels(coco=str(path))
    return p


def test_too_few_labels_say_how_many_more(tmp_path):
    p = _small_project(tmp_path, 12, ["circle"], tags=False)
    with pytest.raises(NotEnoughLabels) as e:
        train(p, "classifier", epochs=1)
    assert str(e.value) == (
        "classifier needs labeled images of at least 2 classes; found 1 (circle). "
        "Label images of at least 1 more class."
    )
    with pytest.raises(ValueError, match="tagger needs images labeled with at least 1 tag; "
                                         "found none"):
        train(p, "tagger", epochs=1)
    with pytest.raises(ValueError, match="detector needs labeled boxes"):
        train(p, "detector", epochs=1)
    with pytest.raises(ValueError, match="semantic_segmentor needs labeled masks"):
        train(p, "semantic_segmentor", epochs=1)
    assert list_versions(p) == []


def test_too_few_images_say_how_many_more(tmp_path):
    p = _small_project(tmp_path, 7, ["circle", "square"])
    with pytest.raises(ValueError, match=r"at least 10 labeled images .* found 7\. "
                                         r"Label 3 more images\."):
        train(p, "classifier", epochs=1)


def test_same_seed_same_model_on_cpu(tmp_path):
    p = _small_project(tmp_path, 40, ["circle", "square", "cross"])
    runs = [train(p, "classifier", epochs=2, seed=s, device="cpu", input_size=32)
            for s in (7, 7, 8)]
    weights = []
    for m in runs:
        a = load_assistant(p, "classifier", m["version"], device="cpu")
        weights.append({k: v.clone() for k, v in a.module.state_dict().items()})
    assert [m["version"] for m in runs] == [1, 2, 3]
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=0, atol=0)
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert runs[0]["metric"] == runs[1]["metric"]
    assert runs[0]["training"]["seed"] == 7 and runs[0]["input_size"] == [32, 32]


def test_split_is_stratified_and_deterministic():
    y = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3])
    tr, va = split_indices(len(y), 0.2, 0, y)
    assert set(np.unique(y[tr])) == {0, 1, 2, 3} and set(np.unique(y[va])) == {0, 1, 2}
    tr2, va2 = split_indices(len(y), 0.2, 0, y)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
    assert not set(tr) & set(va) and len(tr) + len(va) == len(y)


@pytest.mark.ray
def test_train_on_ray_and_the_cli(ray_session, tmp_path, capsys):
    from alray.cli import main
    from alray.cli import models as _models  # noqa: F401  (registers the commands)
    from alray.training import train_on_ray

    p = _small_project(tmp_path, 30, ["circle", "square"], name="viaray")
    steps = []
    meta = train_on_ray("viaray", p.store_uri, "classifier", epochs=2, input_size=32,
                        device="cpu", progress=lambda n=1, total=None: steps.append((n, total)))
    assert meta["version"] == 1 and meta["metric"]["name"] == "accuracy"
    assert steps[0] == (0, 4) and sum(n for n, _ in steps) == 4  # 24 images: 2 batches of 16 × 2
    rc = main(["--store", p.store_uri, "train", "viaray", "--family", "tagger", "--epochs", "1",
               "--input-size", "32", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["family"] == "tagger" and out["version"] == 1
    rc = main(["--store", p.store_uri, "train", "viaray", "--family", "detector"])
    assert rc == 1
    assert "detector needs labeled boxes" in capsys.readouterr().err


@pytest.mark.ray
def test_jobs_train_entry_point(ray_session, tmp_path, capsys):
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("jobs_train", root / "jobs" / "train.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    p = _small_project(tmp_path, 20, ["circle", "cross"], name="viajob")
    rc = job.main(["viajob", "--family", "classifier", "--store", p.store_uri, "--epochs", "1",
                   "--seed", "3", "--input-size", "32"])
    assert rc == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["version"] == 1 and meta["training"]["seed"] == 3
    assert job.main(["viajob", "--family", "attributor", "--store", p.store_uri]) == 1
    assert "attributor needs objects labeled with at least 1 attribute" in capsys.readouterr().err


def test_ensure_ray_picks_the_cluster(monkeypatch):
    import ray

    from alray import _ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    for var in ("ALRAY_RAY_ADDRESS", "RAY_ADDRESS", "ALRAY_NUM_CPUS"):
        monkeypatch.delenv(var, raising=False)
    _ray.ensure_ray()
    assert calls[-1]["include_dashboard"] is False and calls[-1]["num_cpus"] is None
    monkeypatch.setenv("ALRAY_NUM_CPUS", "3")
    _ray.ensure_ray()
    assert calls[-1]["num_cpus"] == 3
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # set by `ray job submit`
    _ray.ensure_ray()
    assert calls[-1]["address"] == "auto"
    monkeypatch.setenv("ALRAY_RAY_ADDRESS", "ray://head:10001")
    _ray.ensure_ray()
    assert calls[-1]["address"] == "ray://head:10001"
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    n = len(calls)
    _ray.ensure_ray()
    assert len(calls) == n  # already connected: nothing to do
