"""Built-in nets (TorchScript, output convention, MC dropout), preprocessing, device choice."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from alray import preprocess
from alray.assistants import outputs_to_records, select_device
from alray.families import FAMILIES, validate_record
from alray.models import build_model, load_script, save_script, to_script

torch.set_num_threads(1)
N_CLASSES = {"classifier": 3, "tagger": 4, "detector": 3, "instance_segmentor": 3,
             "semantic_segmentor": 3, "attributor": 5}


def _net(family):
    if family == "attributor":
        return build_model(family, 3, num_attributes=5)
    return build_model(family, N_CLASSES[family])


def _bias_objectness(net):
    """Make an untrained detector see objects, so records are not empty."""
    if hasattr(net, "obj"):
        torch.nn.init.constant_(net.obj.bias, 3.0)
        net.score_threshold = 0.0


@pytest.mark.parametrize("family", FAMILIES)
def test_torchscript_round_trip_gives_the_family_record(family):
    torch.manual_seed(0)
    net = _net(family).eval()
    _bias_objectness(net)
    scripted = load_script(save_script(to_script(net)))
    x = torch.rand(2, 3, 48, 64)  # not square: input size is configurable
    with torch.no_grad():
        eager, script = net(x), scripted(x)
        recs = outputs_to_records(family, script, 2, (48, 64))
    for r in recs:
        validate_record(family, r, num_classes=N_CLASSES[family])
    if family in ("detector", "instance_segmentor", "attributor"):
        assert len(recs[0]["boxes"]) > 0
        torch.testing.assert_close(eager[0]["probs"], script[0]["probs"])
        assert (recs[0]["boxes"][:, 2] <= 64).all() and (recs[0]["boxes"][:, 3] <= 48).all()
    else:
        torch.testing.assert_close(eager, script)
    if family == "semantic_segmentor":
        assert recs[0]["probs"].shape == (3, 48, 64)
    if family == "instance_segmentor":
        assert recs[0]["masks"].shape[1:] == (48, 64) and recs[0]["masks"].dtype == bool
    if family == "attributor":
        assert recs[0]["class_probs"].shape[1] == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_mc_samples_differ_and_keep_the_objects(family):
    torch.manual_seed(0)
    net = _net(family).eval()
    _bias_objectness(net)
    scripted = to_script(net)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        det = outputs_to_records(family, scripted(x), 2, (32, 32))
        mc = outputs_to_records(family, scripted.forward_mc(x, 4), 2, (32, 32))
    p = mc[0]["probs"]
    k_axis = {"classifier": 0, "tagger": 0, "semantic_segmentor": 0}.get(family, 1)
    assert p.shape[k_axis] == 4
    assert not np.allclose(np.take(p, 0, k_axis), np.take(p, 1, k_axis))
    if "boxes" in det[0]:
        np.testing.assert_allclose(mc[0]["boxes"], det[0]["boxes"])


def test_build_model_refuses_bad_arguments():
    with pytest.raises(ValueError, match="unknown family"):
        build_model("captioner", 2)
    with pytest.raises(ValueError, match="num_attributes"):
        build_model("attributor", 2)


def _png(w=40, h=20, color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


def test_prepare_image_and_to_tensor():
    arr, orig = preprocess.prepare_image(_png(), (16, 24))
    assert arr.shape == (16, 24, 3) and arr.dtype == np.uint8 and orig == (20, 40)
    x = preprocess.to_tensor(arr[None])
    assert x.shape == (1, 3, 16, 24) and x.dtype == torch.float32
    assert x[0, 0].max().item() == pytest.approx(1.0) and x[0, 1].max().item() == 0.0
    xn = preprocess.to_tensor(arr[None], mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert xn[0, 0, 0, 0].item() == pytest.approx(1.0) and xn[0, 1, 0, 0].item() == -1.0
    # a float tensor is taken as prepared
    assert preprocess.to_tensor(x) is x


def test_grey_palette_and_alpha_images_become_rgb():
    for mode in ("L", "P", "RGBA", "I;16"):
        buf = io.BytesIO()
        Image.new(mode, (10, 10)).save(buf, "PNG")
        arr, _ = preprocess.prepare_image(buf.getvalue(), 8)
        assert arr.shape == (8, 8, 3)


def test_corrupt_bytes_raise_image_decode_error():
    with pytest.raises(preprocess.ImageDecodeError, match="cannot decode"):
        preprocess.prepare_image(b"not an image", 8)
    truncated = _png(64, 64)[:60]
    with pytest.raises(preprocess.ImageDecodeError):
        preprocess.prepare_image(truncated, 8)
    batch, sizes, bad = preprocess.prepare_images([_png(), b"junk", _png(8, 8)], 8)
    assert batch.shape == (2, 8, 8, 3) and bad == [1] and sizes.tolist() == [[20, 40], [8, 8]]


def test_input_size_validation():
    assert preprocess.as_size(32) == (32, 32) and preprocess.as_size([16, 24]) == (16, 24)
    with pytest.raises(ValueError):
        preprocess.as_size((1, 2, 3))
    with pytest.raises(ValueError):
        preprocess.as_size(4)


def test_select_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    assert select_device("cuda") == torch.device("cuda")
    assert select_device("CPU").type == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


def test_mirrored_targets_equal_targets_of_mirrored_labels():
    from alray.models.losses import Objects, batch_targets, encode_objects, flip_targets

    h, w = 32, 48

    def objs(mirror: bool) -> Objects:
        boxes = np.array([[3, 4, 15, 20], [21, 2, 45, 30]], np.float32)
        masks = np.zeros((2, h, w), bool)
        masks[0, 4:20, 3:15] = True
        masks[1, 2:30, 21:45] = True
        masks[1, 5:9, 22:24] = False
        if mirror:
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
            masks = masks[:, :, ::-1].copy()
        return Objects(boxes, np.array([0, 1]), masks, np.array([[1, 0], [0, 1]], np.float32))

    cpu = torch.device("cpu")
    kw = {"num_attributes": 2, "with_masks": True}
    plain = batch_targets(encode_objects([objs(False), objs(True)], (h, w), **kw), np.arange(2),
                          cpu)
    mirrored = batch_targets(encode_objects([objs(True), objs(True)], (h, w), **kw), np.arange(2),
                             cpu)
    flipped = flip_targets(plain, torch.tensor([True, False]), w)
    for k in plain:
        torch.testing.assert_close(flipped[k].float(), mirrored[k].float(), msg=k)
