"""Bring your own model: user TorchScript models of every family register, load and predict;
outputs that do not match the family are refused with a message saying what was expected."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alray.assistants import (
    latest_version,
    list_versions,
    load_assistant,
    register_torchscript,
)
from alray.families import FAMILIES, image_scores
from alray.project import Project

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")


class UserClassifier(nn.Module):
    """What a user might write: conv, pooling, dropout, softmax (no forward_mc)."""

    def __init__(self, c: int, sigmoid: bool = False, extra: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, c + extra)
        self.sigmoid = sigmoid

    def forward(self, x: Tensor) -> Tensor:
        v = self.drop(F.relu(self.conv(x)).mean((2, 3)))
        logits = self.fc(v)
        return torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, 1)


class UserLogits(UserClassifier):
    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.relu(self.conv(x)).mean((2, 3))) * 10


class UserSemantic(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.conv(x), 1)


class UserDetector(nn.Module):
    """Two fixed boxes per image; class (or attribute) probabilities from the image."""

    def __init__(self, c: int, masks: bool = False, attributes: bool = False):
        super().__init__()
        self.fc = nn.Linear(3, c)
        self.drop = nn.Dropout(0.5)
        self.masks = masks
        self.attributes = attributes

    def forward(self, x: Tensor) -> list[dict[str, Tensor]]:
        h, w = x.shape[-2], x.shape[-1]
        out: list[dict[str, Tensor]] = []
        for i in range(x.shape[0]):
            v = x[i].mean((1, 2)).unsqueeze(0).expand(2, 3)
            logits = self.fc(self.drop(v * torch.tensor([[1.0], [2.0]])))
            boxes = torch.tensor([[2.0, 2.0, w / 2, h / 2], [w / 2, h / 2, w - 1.0, h - 1.0]])
            rec = {"boxes": boxes, "scores": torch.tensor([0.9, 0.6])}
            rec["probs"] = torch.sigmoid(logits) if self.attributes else torch.softmax(logits, 1)
            if self.masks:
                m = torch.zeros(2, h, w)
                m[0, 2: h // 2, 2: w // 2] = 1.0
                m[1, h // 2: h - 1, w // 2: w - 1] = 1.0
                rec["masks"] = m
            out.append(rec)
        return out


USER_MODELS = {
    "classifier": lambda: UserClassifier(3),
    "tagger": lambda: UserClassifier(3, sigmoid=True),
    "semantic_segmentor": lambda: UserSemantic(3),
    "detector": lambda: UserDetector(3),
    "instance_segmentor": lambda: UserDetector(3, masks=True),
    "attributor": lambda: UserDetector(3, attributes=True),
}
CLASSES = ["a", "b", "c"]


def _save(module: nn.Module, path) -> str:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    return str(path)


@pytest.fixture
def project(tmp_path):
    return Project.create("byo", store=str(tmp_path / "store"))


@pytest.mark.parametrize("family", FAMILIES)
def test_user_models_register_and_predict(project, tmp_path, family):
    path = _save(USER_MODELS[family](), tmp_path / "m.pt")
    meta = register_torchscript(project, family, path, CLASSES, (24, 32),
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert meta["version"] == 1 and meta["source"] == "torchscript"
    assert meta["input_size"] == [24, 32] and meta["classes"] == CLASSES
    assert latest_version(project, family)["version"] == 1
    a = load_assistant(project, family, device="cpu")
    batch = np.random.default_rng(0).integers(0, 255, (3, 24, 32, 3), dtype=np.uint8)
    recs = a.predict(batch, sizes=[(48, 64)] * 3)
    assert len(recs) == 3
    if "boxes" in recs[0]:
        # boxes come back in original image pixels (twice the input size here)
        np.testing.assert_allclose(recs[0]["boxes"][1], [32, 24, 62, 46])
    assert a.supports_mc == (family != "semantic_segmentor")  # that one has no dropout
    mc = a.predict_mc(batch, 4)
    scores = image_scores(family, mc, "bald")
    assert scores.shape == (3,) and (scores >= 0).all()
    if family != "semantic_segmentor":  # its user model has no dropout
        assert scores.max() > 0


def test_registered_versions_number_up_and_list(project, tmp_path):
    path = _save(USER_MODELS["classifier"](), tmp_path / "m.pt")
    for _ in range(2):
        register_torchscript(project, "classifier", path, CLASSES, 16)
    register_torchscript(project, "tagger", _save(USER_MODELS["tagger"](), tmp_path / "t.pt"),
                         CLASSES, 16)
    metas = list_versions(project)
    assert [(m["family"], m["version"]) for m in metas] == [
        ("classifier", 1), ("classifier", 2), ("tagger", 1)]
    assert metas[2]["tags"] == CLASSES
    # a folder without meta.json (a crash mid-write) is never listed, and is skipped
    project.store.write_bytes(b"partial", "models", "classifier", "v0003", "model.pt")
    assert latest_version(project, "classifier")["version"] == 2
    assert register_torchscript(project, "classifier", path, CLASSES, 16)["version"] == 4


@pytest.mark.parametrize(
    "family, module, classes, match",
    [
        ("classifier", lambda: UserClassifier(3, extra=2), CLASSES,
         r"expected a Tensor \(B, 3\).*got Tensor \(2, 5\)"),
        ("classifier", lambda: UserLogits(3), CLASSES, "probabilities|sum to 1"),
        ("tagger", lambda: UserLogits(3), CLASSES, "logits"),
        ("detector", lambda: UserClassifier(3), CLASSES, "list of 2 dicts"),
        ("classifier", lambda: UserDetector(3), CLASSES, "must return a Tensor"),
        ("instance_segmentor", lambda: UserDetector(3), CLASSES, "masks"),
        ("semantic_segmentor", lambda: UserSemantic(4), CLASSES, "4 classes on axis 0"),
        ("attributor", lambda: UserDetector(3), ["x", "y"], "3 attributes"),
    ],
)
def test_mismatched_models_are_refused(project, tmp_path, family, module, classes, match):
    path = _save(module(), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=match) as e:
        register_torchscript(project, family, path, classes, 16)
    assert "expected" in str(e.value)
    assert list_versions(project, family) == []


def test_not_torchscript_and_bad_arguments_are_refused(project, tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="not a TorchScript model"):
        register_torchscript(project, "classifier", str(bad), CLASSES, 16)
    with pytest.raises(ValueError, match="cannot read"):
        register_torchscript(project, "classifier", str(tmp_path / "nope.pt"), CLASSES, 16)
    good = _save(USER_MODELS["classifier"](), tmp_path / "m.pt")
    with pytest.raises(ValueError, match="unique"):
        register_torchscript(project, "classifier", good, ["a", "a", "b"], 16)
    with pytest.raises(ValueError, match="mean must be 3"):
        register_torchscript(project, "classifier", good, CLASSES, 16, mean=(0.5,))
    with pytest.raises(ValueError, match="unknown family"):
        register_torchscript(project, "captioner", good, CLASSES, 16)
    with pytest.raises(ValueError, match="no classifier model"):
        load_assistant(project, "classifier")


def test_cli_models_add_and_list(project, tmp_path, capsys):
    from alray.cli import main
    from alray.cli import models as _models  # noqa: F401  (registers the commands)

    store = project.store_uri
    path = _save(USER_MODELS["detector"](), tmp_path / "det.pt")
    rc = main(["--store", store, "models", "add", "byo", "--family", "detector",
               "--torchscript", path, "--classes", "a,b,c", "--input-size", "32", "32",
               "--mean", "0.5", "0.5", "0.5", "--std", "0.2", "0.2", "0.2"])
    assert rc == 0
    capsys.readouterr()
    assert main(["--store", store, "models", "list", "byo", "--json"]) == 0
    metas = json.loads(capsys.readouterr().out)
    assert metas[0]["family"] == "detector" and metas[0]["mean"] == [0.5, 0.5, 0.5]
    assert main(["--store", store, "models", "list", "byo"]) == 0
    assert "detector" in capsys.readouterr().out
    rc = main(["--store", store, "models", "add", "byo", "--family", "detector",
               "--torchscript", path, "--classes", "a,b", "--input-size", "32", "32"])
    assert rc == 1
    assert "expected" in capsys.readouterr().err
