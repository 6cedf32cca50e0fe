"""COCO pre-label export: loads back, has boxes / masks / tags / categories with scores, and
re-imports into the project it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alray.assistants import register_torchscript
from alray.masks import decode_rle
from alray.predictions import export_coco
from alray.project import Project
from alray.synthetic import generate

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")
SHAPES = ["circle", "cross", "square", "triangle"]


class Boxes(nn.Module):
    """A fixed box and mask per image, class probabilities from the mean colour."""

    def __init__(self, c: int, masks: bool, attributes: bool = False):
        super().__init__()
        self.fc = nn.Linear(3, c)
        self.masks = masks
        self.attributes = attributes

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        out: list[dict[str, Tensor]] = []
        h, w = x.shape[-2], x.shape[-1]
        for i in range(x.shape[0]):
            logits = self.fc(x[i].mean((1, 2))).unsqueeze(0)
            probs = torch.sigmoid(logits) if self.attributes else torch.softmax(logits, 1)
            rec = {"boxes": torch.tensor([[4.0, 8.0, 20.0, 24.0]]), "probs": probs}
            if self.masks:
                m = torch.zeros(1, h, w)
                m[0, 8:24, 4:20] = 1.0
                rec["masks"] = m
            out.append(rec)
        return out


class Dense(nn.Module):
    def __init__(self, c: int, kind: str):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        if self.kind == "semantic":
            return torch.softmax(y * 20, 1)
        v = F.adaptive_avg_pool2d(y, 1).flatten(1)
        return torch.sigmoid(v * 10) if self.kind == "tags" else torch.softmax(v, 1)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred")
    coco = generate(str(d / "imgs"), 24, seed=5, corrupt=1)
    p = Project.create("pred", store=str(d / "store"))
    p.add_images(str(d / "imgs"))
    # label half of the images, so unlabeled-only has something to leave out
    with open(coco) as f:
        doc = json.load(f)
    keep = {i["id"] for i in doc["images"][:12]}
    doc["images"] = [i for i in doc["images"] if i["id"] in keep]
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    half = d / "half.json"
    half.write_text(json.dumps(doc))
    p.import_labels(coco=str(half))
    p.tmp = d
    return p


def _register(p: Project, family: str, module: nn.Module, classes: list[str]) -> None:
    torch.manual_seed(0)
    path = p.tmp / f"{family}.pt"
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    register_torchscript(p, family, str(path), classes, 32)


def _export(p, family, **kw):
    out = p.tmp / f"{family}.json"
    summary = export_coco(p, family, str(out), **kw)
    return summary, json.loads(out.read_text())


def test_detector_and_instance_export_boxes_masks_scores(project):
    _register(project, "detector", Boxes(4, masks=False), SHAPES)
    _register(project, "instance_segmentor", Boxes(4, masks=True), SHAPES)
    for family in ("detector", "instance_segmentor"):
        summary, coco = _export(project, family)
        assert summary["images"] == len(coco["images"]) == 24  # the corrupt file is no image
        assert [c["name"] for c in coco["categories"]] == SHAPES
        for ann in coco["annotations"]:
            # box 4..20 × 8..24 at input 32 → twice that on the 64×64 images
            assert ann["bbox"] == [8.0, 16.0, 32.0, 32.0]
            assert 1 <= ann["category_id"] <= 4 and 0 < ann["score"] <= 1
            assert len(ann["class_scores"]) == 4
            if family == "instance_segmentor":
                m = decode_rle(ann["segmentation"])
                assert m.shape == (64, 64) and m[16:48, 8:40].all() and m.sum() == ann["area"]
        assert coco["info"]["model_version"] == 1


def test_unlabeled_only_and_datasets(project):
    summary, coco = _export(project, "detector", unlabeled_only=True)
    assert summary["images"] == 12
    labeled = set(project.labeled_ids("detector").to_pylist())
    assert not {i["alray_image_id"] for i in coco["images"]} & labeled
    summary, coco = _export(project, "detector", datasets=["B"])
    assert {i["dataset"] for i in coco["images"]} == {"B"}
    assert all(i["file_name"].startswith("B/") for i in coco["images"])


def test_classifier_tagger_semantic_attributor_exports(project):
    _register(project, "classifier", Dense(4, "probs"), SHAPES)
    _register(project, "tagger", Dense(3, "tags"), ["red", "green", "blue"])
    _register(project, "semantic_segmentor", Dense(3, "semantic"), ["background", "x", "y"])
    _register(project, "attributor", Boxes(2, masks=False, attributes=True), ["big", "red"])
    _, coco = _export(project, "classifier")
    assert len(coco["annotations"]) == 24
    assert all("bbox" not in a and 0.25 <= a["score"] <= 1 for a in coco["annotations"])
    _, coco = _export(project, "tagger")
    assert coco["annotations"] == [] and coco["categories"] == []
    for img in coco["images"]:
        assert set(img["tag_scores"]) == {"red", "green", "blue"}
        assert img["tags"] == [t for t, s in img["tag_scores"].items() if s >= 0.5]
    assert any(img["tags"] for img in coco["images"])
    _, coco = _export(project, "semantic_segmentor")
    assert [c["name"] for c in coco["categories"]] == ["x", "y"]
    for ann in coco["annotations"]:
        assert ann["category_id"] in (1, 2)
        m = decode_rle(ann["segmentation"])
        assert m.shape == (64, 64) and m.sum() == ann["area"] > 0
    _, coco = _export(project, "attributor")
    ann = coco["annotations"][0]
    assert set(ann["attribute_scores"]) == {"big", "red"} and ann["category_id"] == 1


def test_export_reimports_as_labels(project):
    _, coco = _export(project, "instance_segmentor")
    fresh = Project.create("again", store=project.store_uri)
    fresh.add_images(str(project.tmp / "imgs"))
    report = fresh.import_labels(coco=str(project.tmp / "instance_segmentor.json"))
    assert report.images["instance_segmentor"] == 24
    assert report.images["detector"] == 24


def test_trained_model_export_and_cli(project, capsys):
    from alray.cli import main
    from alray.cli import models as _models  # noqa: F401  (registers the commands)
    from alray.training import train

    # only 12 images are labeled; train a tiny model on them and export through the CLI
    meta = train(project, "tagger", epochs=1, seed=0, input_size=32, device="cpu")
    out = project.tmp / "cli.json"
    rc = main(["--store", project.store_uri, "predict", "pred", "--family", "tagger",
               "--unlabeled-only", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["version"] == meta["version"] and summary["images"] == 12
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 12 and "tag_scores" in coco["images"][0]


def test_predict_without_a_model_says_what_to_do(tmp_path):
    p = Project.create("empty", store=str(tmp_path))
    with pytest.raises(ValueError, match="alray train"):
        export_coco(p, "detector", str(tmp_path / "x.json"))
    assert not np.any([f.name == "x.json" for f in tmp_path.iterdir()])
