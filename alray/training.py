"""Train a family's built-in model on a project's labels and store it as the next version.

``train`` loads the labeled images (decoded once with :mod:`alray.preprocess`, kept in memory
as uint8), holds out a validation split, trains from scratch, measures the family's standard
metric (:mod:`alray.metrics`) on the held-out images and saves version N+1 (TorchScript +
meta). On CPU the same seed gives the same weights and metric. ``train_on_ray`` runs the same
in a Ray task (on a GPU when the cluster has one) and streams progress back to the caller.

>>> import tempfile
>>> from alray.project import Project
>>> from alray.synthetic import generate
>>> d = tempfile.mkdtemp()
>>> coco = generate(f"{d}/imgs", 40, seed=0)
>>> p = Project.create("demo", store=f"{d}/store")
>>> _ = p.add_images(f"{d}/imgs"); _ = p.import_labels(coco=coco)
>>> meta = train(p, "classifier", epochs=1)
>>> meta["version"], meta["metric"]["name"]
(1, 'accuracy')
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from PIL import Image

from alray import metrics, preprocess
from alray.assistants import outputs_to_records, save_version, script_bytes, select_device
from alray.families import IMAGE_FAMILIES, OBJECT_FAMILIES, check_family
from alray.masks import decode_rle
from alray.models import build_model
from alray.models.losses import (
    DenseTargets,
    Objects,
    batch_targets,
    centernet_loss,
    encode_objects,
    flip_targets,
    hflip,
    translate,
)

Progress = Callable[..., None]  # advance(n, total=None)

#: fewest labeled images a family trains on (some are held out for validation)
MIN_LABELED_IMAGES = 10
#: images per optimiser step. The classifier takes 16: with 32, a few hundred labels give it
#: only ~750 steps, too few to find the shapes, and one training in three ended near chance
#: (measured on the demo data: 200-400 labels, 7 trainings, worst 0.42-0.57 → 0.85 with 16)
BATCH_SIZES = {
    "classifier": 16,
    "tagger": 32,
    "semantic_segmentor": 32,
    "detector": 32,
    "instance_segmentor": 32,
    "attributor": 32,
}
#: images seen in training by default (epochs = this / training images, within bounds). The
#: classifier's is the largest: on sets rich in hard images (what uncertainty ranking labels),
#: 24,000 left 2 trainings in 4 near chance on the demo data; 40,000 fit them all (0.93-0.94)
DEFAULT_SAMPLES = {
    "classifier": 40_000,
    "tagger": 24_000,
    "semantic_segmentor": 16_000,
    "detector": 30_000,
    "instance_segmentor": 30_000,
    "attributor": 30_000,
}
LEARNING_RATE = 3e-3
BACKGROUND = "background"


class NotEnoughLabels(ValueError):
    """Too few labels to train: the message says how many more are needed."""


@dataclass
class LabeledSet:
    """A family's labeled images decoded at the input size, with targets in input pixels."""

    family: str
    input_size: tuple[int, int]
    image_ids: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    classes: list[str]
    y: np.ndarray | None = None  # classifier (N,), tagger (N, T), semantic (N, H, W)
    objects: list[Objects] | None = None
    object_classes: list[str] = field(default_factory=list)  # attributor's object categories
    skipped: list[str] = field(default_factory=list)  # ids undecodable (or with no class)
    annotations: int = 0


# ------------------------------------------------------------------------------ loading labels
def _group_rows(labels: pa.Table) -> dict[str, list[dict]]:
    cols = {c: labels[c].to_pylist() for c in
            ("image_id", "label", "bbox", "rle_size", "rle_counts", "attributes")}
    out: dict[str, list[dict]] = {}
    for i, iid in enumerate(cols["image_id"]):
        out.setdefault(iid, []).append({c: cols[c][i] for c in cols})
    return out


def _need(family: str, what: str, found: str, more: str) -> NotEnoughLabels:
    return NotEnoughLabels(f"{family} needs {what}; found {found}. {more}")


def check_enough_labels(family: str, rows: dict[str, list[dict]]) -> None:
    """Raise :class:`NotEnoughLabels` saying how many more labels a family needs."""
    n = len(rows)
    if family == "classifier":
        classes = sorted({r["label"] for rs in rows.values() for r in rs if r["label"]})
        if len(classes) < 2:
            found = f"{len(classes)} ({', '.join(classes)})" if classes else "0"
            more = 2 - len(classes)
            raise _need(family, "labeled images of at least 2 classes", found,
                        f"Label images of at least {more} more class{'es' if more > 1 else ''}.")
    elif family == "tagger":
        if not any(r["label"] for rs in rows.values() for r in rs):
            raise _need(family, "images labeled with at least 1 tag", "none",
                        "Label some images with tags.")
    elif family == "attributor":
        if not any(r["attributes"] for rs in rows.values() for r in rs):
            raise _need(family, "objects labeled with at least 1 attribute", "none",
                        "Label attributes on some objects.")
    else:
        has_geometry = [r for rs in rows.values() for r in rs
                        if r["label"] and (r["bbox"] is not None or r["rle_counts"] is not None)]
        if not has_geometry:
            what = "masks" if family.endswith("segmentor") else "boxes"
            raise _need(family, f"labeled {what} of at least 1 class", "none",
                        f"Label some {what}.")
    if n < MIN_LABELED_IMAGES:
        raise _need(
            family, f"at least {MIN_LABELED_IMAGES} labeled images (some are held out to "
            "validate)", str(n), f"Label {MIN_LABELED_IMAGES - n} more image"
            f"{'s' if MIN_LABELED_IMAGES - n > 1 else ''}.",
        )


def _mask_at(r: dict, orig: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """An annotation's mask (or its filled box) at the input size."""
    if r["rle_counts"] is not None:
        m = decode_rle({"size": r["rle_size"], "counts": r["rle_counts"]})
    else:
        m = np.zeros(orig, bool)
        x1, y1, x2, y2 = (int(round(v)) for v in r["bbox"])
        m[max(y1, 0):y2, max(x1, 0):x2] = True
    if m.shape != tuple(size):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(
            (size[1], size[0]), Image.NEAREST)) > 127
    return m


def load_labeled(
    project: Any, family: str, input_size: int | tuple[int, int] = 64, *, workers: int = 4
) -> LabeledSet:
    """Decode a family's labeled images at the input size and build their targets.

    Images that fail to decode are skipped and listed in ``skipped``. Raises
    :class:`NotEnoughLabels` when there is too little to train on.
    """
    check_family(family)
    size = preprocess.as_size(input_size)
    rows = _group_rows(project.labels(family))
    # an image whose only row has no label / geometry is labeled "empty" (no objects, no tags)
    check_enough_labels(family, rows)
    manifest = project.images(columns=["image_id", "uri"])
    manifest = manifest.filter(pc.is_in(manifest["image_id"], pa.array(list(rows), pa.string())))
    ids, uris = manifest["image_id"].to_pylist(), manifest["uri"].to_pylist()

    def load(uri: str):
        try:
            return preprocess.prepare_image(project.read_image_bytes(uri), size)
        except (preprocess.ImageDecodeError, OSError):
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(load, uris))
    if family == "classifier":  # an image whose rows name no class has nothing to learn
        decoded = [d if any(r["label"] for r in rows[i]) else None
                   for i, d in zip(ids, decoded, strict=True)]
    keep = [i for i, d in enumerate(decoded) if d is not None]
    skipped = [ids[i] for i, d in enumerate(decoded) if d is None]
    ids = [ids[i] for i in keep]
    arrays = [decoded[i][0] for i in keep]
    origs = [decoded[i][1] for i in keep]
    images = np.stack(arrays) if arrays else np.zeros((0, *size, 3), np.uint8)
    data = LabeledSet(family, size, ids, images, [], skipped=skipped,
                      annotations=sum(len(rows[i]) for i in ids))
    per_image = [rows[i] for i in ids]
    labels = sorted({r["label"] for rs in per_image for r in rs if r["label"]})
    if family == "classifier":
        data.classes = labels
        index = {c: k for k, c in enumerate(labels)}
        # an image with several rows keeps its first label (the importer writes one)
        data.y = np.array([index[next(r["label"] for r in rs if r["label"])] for rs in per_image])
    elif family == "tagger":
        data.classes = labels
        index = {c: k for k, c in enumerate(labels)}
        y = np.zeros((len(ids), len(labels)), np.float32)
        for i, rs in enumerate(per_image):
            for r in rs:
                if r["label"]:
                    y[i, index[r["label"]]] = 1
        data.y = y
    elif family == "semantic_segmentor":
        data.classes = [BACKGROUND, *(c for c in labels if c != BACKGROUND)]
        index = {c: k for k, c in enumerate(data.classes)}
        y = np.zeros((len(ids), *size), np.uint8 if len(data.classes) < 256 else np.int64)
        for i, rs in enumerate(per_image):
            for r in rs:  # later masks paint over earlier ones
                if r["label"] and (r["rle_counts"] is not None or r["bbox"] is not None):
                    y[i][_mask_at(r, origs[i], size)] = index[r["label"]]
        data.y = y
    else:
        attrs = sorted({a for rs in per_image for r in rs for a in (r["attributes"] or [])})
        data.classes = attrs if family == "attributor" else labels
        data.object_classes = labels if family == "attributor" else []
        cindex = {c: k for k, c in enumerate(labels)}
        aindex = {a: k for k, a in enumerate(attrs)}
        objs = []
        for i, rs in enumerate(per_image):
            oh, ow = origs[i]
            sx, sy = size[1] / ow, size[0] / oh
            geo = [r for r in rs if r["label"] and r["bbox"] is not None]
            boxes = np.array([r["bbox"] for r in geo], np.float32).reshape(-1, 4)
            boxes *= np.array([sx, sy, sx, sy], np.float32)
            o = Objects(boxes, np.array([cindex[r["label"]] for r in geo], np.int64))
            if family == "instance_segmentor":
                o.masks = (np.stack([_mask_at(r, (oh, ow), size) for r in geo]) if geo
                           else np.zeros((0, *size), bool))
            if family == "attributor":
                a = np.zeros((len(geo), len(attrs)), np.float32)
                for g, r in enumerate(geo):
                    for name in r["attributes"] or []:
                        a[g, aindex[name]] = 1
                o.attrs = a
            objs.append(o)
        data.objects = objs
    return data


# ------------------------------------------------------------------------------------ split
def split_indices(
    n: int, val_fraction: float, seed: int, strata: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation split; stratified by ``strata`` (class) when given, so
    every class with two or more images is in both parts.

    >>> tr, va = split_indices(10, 0.2, seed=0)
    >>> len(tr), len(va)
    (8, 2)
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    if strata is None:
        perm = rng.permutation(n)
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    val = []
    for c in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == c))
        k = int(round(val_fraction * len(idx)))
        k = min(max(k, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.extend(idx[:k].tolist())
    val_idx = np.sort(np.asarray(val, np.int64))
    if not len(val_idx):  # every class has one image: fall back to a plain split
        return split_indices(n, val_fraction, seed)
    return np.setdiff1d(np.arange(n), val_idx), val_idx


# ------------------------------------------------------------------------------------ fitting
@contextmanager
def _deterministic(seed: int):
    """Seed torch for the duration of training (the caller's RNG state is restored).

    On CPU the ops used here are deterministic for a fixed thread count, so a seed fixes the
    model; ``torch.use_deterministic_algorithms`` is not switched on: it costs a second of
    imports per process and only matters on GPUs, where training trades exact repeatability
    for speed.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def make_model(data: LabeledSet) -> torch.nn.Module:
    """The built-in net for a labeled set's family and label names."""
    if data.family == "attributor":
        return build_model("attributor", len(data.object_classes),
                           num_attributes=len(data.classes))
    return build_model(data.family, len(data.classes))


def encode_targets(data: LabeledSet) -> DenseTargets | None:
    """Dense targets of the object families (None for the others)."""
    if data.family not in OBJECT_FAMILIES:
        return None
    return encode_objects(
        data.objects, data.input_size,
        num_attributes=len(data.classes) if data.family == "attributor" else 0,
        with_masks=data.family == "instance_segmentor",
    )


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice averaged over the classes present in the batch: it weighs small objects
    like large ones, where per-pixel cross-entropy is dominated by the background (what mIoU
    rewards)."""
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(target, p.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * onehot).sum((0, 2, 3))
    total = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + 1) / (total + 1)
    return 1 - dice[present].mean()


def can_flip(data: LabeledSet) -> bool:
    """Mirroring keeps CenterNet targets exact only when the width is a multiple of 4."""
    return data.family not in OBJECT_FAMILIES or data.input_size[1] % 4 == 0


def batch_loss(
    model: torch.nn.Module, family: str, x: torch.Tensor, data: LabeledSet,
    dense: DenseTargets | None, idx: np.ndarray, device: torch.device,
    flip: np.ndarray | None = None,
) -> torch.Tensor:
    """The training loss of one batch (images ``idx`` of ``data``), the images where ``flip``
    is true mirrored left-right together with their targets."""
    f = torch.from_numpy(flip if flip is not None else np.zeros(len(idx), bool)).to(device)
    out = model.dense(hflip(x, f))
    if family == "classifier":
        return F.cross_entropy(out["logits"], torch.from_numpy(data.y[idx]).to(device))
    if family == "tagger":
        return F.binary_cross_entropy_with_logits(
            out["logits"], torch.from_numpy(data.y[idx]).to(device))
    if family == "semantic_segmentor":
        target = hflip(torch.from_numpy(data.y[idx].astype(np.int64)).to(device), f)
        return F.cross_entropy(out["logits"], target) + dice_loss(out["logits"], target)
    t = flip_targets(batch_targets(dense, idx, device), f, data.input_size[1])
    return centernet_loss(out, t)


def fit(
    model: torch.nn.Module,
    data: LabeledSet,
    train_idx: np.ndarray,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int | None = None,
    lr: float = LEARNING_RATE,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    augment: bool = True,
) -> torch.nn.Module:
    """Train ``model`` in place: AdamW + one-cycle schedule, shuffled batches and, with
    ``augment``, random left-right mirroring plus, for the image-level families, random shifts
    of up to 1/8 of the image; all drawn from ``seed``. ``batch_size`` defaults to the
    family's :data:`BATCH_SIZES`."""
    device = torch.device(device)
    batch_size = batch_size or BATCH_SIZES[data.family]
    model.to(device).train()
    dense = encode_targets(data)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / batch_size))
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total,
                                                pct_start=0.15)
    rng = np.random.default_rng(seed)
    augment = augment and can_flip(data)
    # image-level labels do not move with the image: small shifts are free extra examples, and
    # without them the nets memorise a few hundred labels instead of learning the shapes
    shift = round(min(data.input_size) / 8) if augment and data.family in IMAGE_FAMILIES else 0
    if progress:
        progress(0, total)
    for _ in range(epochs):
        order = train_idx[rng.permutation(len(train_idx))]
        for s in range(steps_per_epoch):
            idx = np.sort(order[s * batch_size:(s + 1) * batch_size])
            if len(idx) < 2 and steps_per_epoch > 1:
                continue  # batch norm needs two images; a lone leftover is skipped
            flip = rng.random(len(idx)) < 0.5 if augment else None
            x = preprocess.to_tensor(data.images[idx], device=device, channels_last=True)
            if shift:
                x = translate(x, torch.from_numpy(rng.integers(-shift, shift + 1, (len(idx), 2))))
            loss = batch_loss(model, data.family, x, data, dense, idx, device, flip)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if progress:
                progress(1)
    return model.eval()


def predict_records(
    model: torch.nn.Module, data: LabeledSet, idx: np.ndarray, device: torch.device,
    batch_size: int = 64,
) -> list[dict]:
    """Records of images ``idx`` by an eager model (the same code path as its TorchScript)."""
    model.eval()
    out: list[dict] = []
    with torch.no_grad():
        for s in range(0, len(idx), batch_size):
            b = idx[s:s + batch_size]
            raw = model(preprocess.to_tensor(data.images[b], device=device))
            out.extend(outputs_to_records(data.family, raw, len(b), data.input_size))
    return out


def evaluate(
    model: torch.nn.Module, data: LabeledSet, idx: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[str, float]:
    """``(metric name, value)`` of a model on images ``idx`` (in input pixels)."""
    fam = data.family
    name = metrics.METRIC_NAMES[fam]
    device = torch.device(device)
    recs = predict_records(model, data, idx, device)
    if fam == "classifier":
        pred = np.array([r["probs"].argmax() for r in recs])
        return name, metrics.accuracy(data.y[idx], pred)
    if fam == "tagger":
        pred = np.stack([r["probs"] >= 0.5 for r in recs])
        return name, metrics.per_label_f1(data.y[idx] > 0.5, pred)
    if fam == "semantic_segmentor":
        c = len(data.classes)
        cm = np.zeros((c, c), np.int64)
        for r, i in zip(recs, idx, strict=True):
            cm += metrics.confusion(data.y[i], r["probs"].argmax(0), c)
        return name, metrics.miou_from_confusion(cm)
    gts, preds = [], []
    for r, i in zip(recs, idx, strict=True):
        o = data.objects[i]
        if fam == "attributor":
            gts.append({"boxes": o.boxes, "attributes": o.attrs})
            preds.append({"boxes": r["boxes"], "probs": r["probs"], "scores": r["scores"]})
            continue
        label = r["probs"].argmax(-1) if len(r["probs"]) else np.zeros(0, np.int64)
        conf = r["scores"] * (r["probs"].max(-1) if len(r["probs"]) else 1.0)
        pr = {"boxes": r["boxes"], "labels": label, "scores": conf}
        gt = {"boxes": o.boxes, "labels": o.labels}
        if fam == "instance_segmentor":
            pr["masks"], gt["masks"] = r["masks"], o.masks
        preds.append(pr)
        gts.append(gt)
    if fam == "attributor":
        return name, metrics.attribute_f1(preds, gts, len(data.classes))
    if fam == "instance_segmentor":
        return name, metrics.mask_map50(preds, gts, len(data.classes))
    return name, metrics.box_map50(preds, gts, len(data.classes))


def default_epochs(family: str, n_train: int) -> int:
    """Epochs for about ``DEFAULT_SAMPLES[family]`` images seen, between 3 and 100."""
    return int(min(100, max(3, math.ceil(DEFAULT_SAMPLES[family] / max(n_train, 1)))))


def train(
    project: Any,
    family: str,
    *,
    epochs: int | None = None,
    seed: int = 0,
    input_size: int | tuple[int, int] = 64,
    val_fraction: float = 0.2,
    progress: Progress | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    lr: float = LEARNING_RATE,
) -> dict:
    """Train the family's built-in model on the project's labels; store and return the new
    version's meta (``version``, ``metric``, ``label_count``, ``classes``, ...).

    ``progress(n, total=None)`` is called once with the total number of steps, then per step.
    Raises :class:`NotEnoughLabels` (a ``ValueError``) when labels are too few.
    """
    check_family(family)
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    t0 = time.perf_counter()
    dev = select_device(device)
    data = load_labeled(project, family, input_size)
    if len(data.image_ids) < MIN_LABELED_IMAGES:
        raise NotEnoughLabels(
            f"{family} needs at least {MIN_LABELED_IMAGES} readable labeled images; "
            f"{len(data.image_ids)} decode ({len(data.skipped)} could not be read). "
            f"Label {MIN_LABELED_IMAGES - len(data.image_ids)} more."
        )
    strata = data.y if family == "classifier" else None
    train_idx, val_idx = split_indices(len(data.image_ids), val_fraction, seed, strata)
    batch_size = batch_size or BATCH_SIZES[family]
    n_epochs = epochs if epochs is not None else default_epochs(family, len(train_idx))
    t_load = time.perf_counter() - t0
    with _deterministic(seed):
        model = make_model(data)
        fit(model, data, train_idx, epochs=n_epochs, seed=seed, batch_size=batch_size, lr=lr,
            device=dev, progress=progress)
        metric_name, value = evaluate(model, data, val_idx, dev)
    model_bytes = script_bytes(model.cpu())
    meta = {
        "classes": data.classes,
        "input_size": list(data.input_size),
        "mean": None,
        "std": None,
        "metric": {"name": metric_name, "value": None if math.isnan(value) else float(value),
                   "split": "validation", "images": int(len(val_idx))},
        "label_count": len(data.image_ids),
        "annotation_count": int(data.annotations),
        "source": "trained",
        "mc": "forward_mc",
        "training": {
            "epochs": n_epochs,
            "seed": seed,
            "batch_size": batch_size,
            "learning_rate": lr,
            "train_images": int(len(train_idx)),
            "val_images": int(len(val_idx)),
            "skipped_images": data.skipped,
            "device": str(dev),
            "load_seconds": round(t_load, 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "images_per_second": round(n_epochs * len(train_idx) /
                                       max(time.perf_counter() - t0, 1e-9), 1),
        },
    }
    if family == "attributor":
        meta["object_classes"] = data.object_classes
    return save_version(project, family, model_bytes, meta)


# ------------------------------------------------------------------------------------ on Ray
def _train_task(project_name: str, store_uri: str, family: str, threads: int,
                queue: Any, kwargs: dict) -> dict:
    from alray.project import Project

    torch.set_num_threads(max(1, threads))
    progress = None
    if queue is not None:
        def progress(n: int = 1, total: int | None = None) -> None:
            # a full or gone queue must never stop training
            with contextlib.suppress(Exception):
                queue.put_nowait((n, total))

    return train(Project.open(project_name, store=store_uri), family, progress=progress,
                 **kwargs)


def train_on_ray(
    project_name: str,
    store_uri: str,
    family: str,
    *,
    progress: Progress | None = None,
    num_cpus: int | None = None,
    **kwargs: Any,
) -> dict:
    """Run :func:`train` in a Ray task and return the new version's meta.

    Attaches to the configured Ray (``ALRAY_RAY_ADDRESS``) or starts a local one. The task
    takes one GPU when the cluster has any (device ``auto`` then picks it), else ``num_cpus``
    CPUs (default: all but one, at least one, so Ray keeps a CPU for its own work).
    ``progress`` receives the task's steps as they happen.
    """
    import ray

    from alray._ray import ensure_ray

    check_family(family)
    ensure_ray()
    res = ray.cluster_resources()
    gpus = res.get("GPU", 0) >= 1
    if num_cpus is None:
        num_cpus = max(1, min(8, int(res.get("CPU", 1)) - 1))
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": 0}
    if gpus:
        opts["num_gpus"] = 1
    queue = None
    if progress is not None:
        from ray.util.queue import Queue

        queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
    task = ray.remote(_train_task).options(**opts)
    ref = task.remote(project_name, store_uri, family, num_cpus, queue, kwargs)
    try:
        while True:
            done, _ = ray.wait([ref], timeout=0.25)
            if queue is not None:
                _drain(queue, progress)
            if done:
                break
        return ray.get(ref)
    finally:
        if queue is not None:
            _drain(queue, progress)
            queue.shutdown()


def _drain(queue: Any, progress: Progress) -> None:
    try:
        items = queue.get_nowait_batch(queue.qsize()) if queue.qsize() else []
    except Exception:
        return
    for n, total in items:
        progress(n, total)


__all__ = [
    "MIN_LABELED_IMAGES",
    "LabeledSet",
    "NotEnoughLabels",
    "check_enough_labels",
    "default_epochs",
    "evaluate",
    "fit",
    "load_labeled",
    "split_indices",
    "train",
    "train_on_ray",
]
