"""The standard validation metric of each family, in plain numpy.

=====================  ===========================================  ========================
family                 metric                                       function
=====================  ===========================================  ========================
classifier             accuracy                                     :func:`accuracy`
tagger                 macro per-label F1 (threshold 0.5)           :func:`per_label_f1`
detector               box mAP@0.5                                  :func:`box_map50`
instance_segmentor     mask mAP@0.5                                 :func:`mask_map50`
semantic_segmentor     mIoU                                         :func:`miou`
attributor             macro per-attribute F1 over matched objects  :func:`attribute_f1`
=====================  ===========================================  ========================

AP is the area under the precision/recall curve with precision made monotone (all-point
interpolation, as in PASCAL VOC 2010+); predictions are matched to ground truth greedily by
descending score, each ground truth at most once, IoU ≥ 0.5, same class.

>>> accuracy([0, 1, 1], [0, 1, 0])
0.6666666666666666
>>> box_map50([{"boxes": [[0, 0, 10, 10]], "labels": [0], "scores": [0.9]}],
...           [{"boxes": [[0, 0, 10, 11]], "labels": [0]}], num_classes=1)
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRIC_NAMES: dict[str, str] = {
    "classifier": "accuracy",
    "tagger": "macro_f1",
    "detector": "map50",
    "instance_segmentor": "mask_map50",
    "semantic_segmentor": "miou",
    "attributor": "attribute_f1",
}


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of equal labels (nan for no samples)."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    return float((t == p).mean()) if t.size else float("nan")


def f1_per_label(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """F1 of each label column of boolean ``(N, L)`` arrays; nan where a label has neither
    a true nor a predicted positive (F1 is undefined there).

    >>> f1_per_label(np.array([[1, 0], [1, 0]]), np.array([[1, 0], [0, 0]])).tolist()
    [0.6666666666666666, nan]
    """
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"y_true and y_pred must both be (N, L); got {t.shape} and {p.shape}")
    tp = (t & p).sum(0).astype(np.float64)
    denom = t.sum(0) + p.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def per_label_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over labels that occur (true or predicted); nan if none does."""
    f = f1_per_label(y_true, y_pred)
    return float(np.nanmean(f)) if np.isfinite(f).any() else float("nan")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(len(a), len(b))`` of xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boolean masks ``(Ma, H, W)`` and ``(Mb, H, W)``."""
    a = np.asarray(a, dtype=bool).reshape(len(a), -1).astype(np.float32)
    b = np.asarray(b, dtype=bool).reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0).astype(np.float64)


def average_precision(scores: np.ndarray, matched: np.ndarray, n_gt: int) -> float:
    """All-point-interpolated AP of detections (``matched`` = true positive) against n_gt."""
    if n_gt == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.asarray(matched, dtype=np.float64)[order]
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(tp) + 1)
    # monotone precision envelope, then area under the step curve
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [recall[-1]]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def _match(iou: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """Greedy matching by descending score; returns, per prediction, the gt index or -1."""
    out = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.size == 0:
        return out
    taken = np.zeros(iou.shape[1], dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(np.argmax(cand))
        if cand[j] >= thr:
            out[i] = j
            taken[j] = True
    return out


def _map(
    preds: Sequence[dict], gts: Sequence[dict], num_classes: int, key: str, thr: float
) -> float:
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} prediction images vs {len(gts)} ground-truth images")
    per_class_scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    per_class_tp: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, dtype=np.int64)
    iou_fn = box_iou if key == "boxes" else mask_iou
    for pr, gt in zip(preds, gts, strict=True):
        pl = np.asarray(pr["labels"], dtype=np.int64).reshape(-1)
        ps = np.asarray(pr["scores"], dtype=np.float64).reshape(-1)
        gl = np.asarray(gt["labels"], dtype=np.int64).reshape(-1)
        n_gt += np.bincount(gl, minlength=num_classes)[:num_classes]
        for c in np.union1d(pl, gl):
            pi, gi = np.flatnonzero(pl == c), np.flatnonzero(gl == c)
            if not len(pi):
                continue
            if len(gi):
                iou = iou_fn(np.asarray(pr[key])[pi], np.asarray(gt[key])[gi])
                tp = _match(iou, ps[pi], thr) >= 0
            else:
                tp = np.zeros(len(pi), dtype=bool)
            per_class_scores[c].append(ps[pi])
            per_class_tp[c].append(tp)
    aps = []
    for c in range(num_classes):
        if n_gt[c] == 0:
            continue  # classes absent from the ground truth do not count
        s = np.concatenate(per_class_scores[c]) if per_class_scores[c] else np.zeros(0)
        t = np.concatenate(per_class_tp[c]) if per_class_tp[c] else np.zeros(0, bool)
        aps.append(average_precision(s, t, int(n_gt[c])))
    return float(np.mean(aps)) if aps else float("nan")


def box_map50(
    preds: Sequence[dict], gts: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> float:
    """Box mAP at IoU 0.5. ``preds[i]``: ``boxes (M,4)`` xyxy, ``labels (M,)``, ``scores (M,)``;
    ``gts[i]``: ``boxes``, ``labels``. Mean over classes that have ground truth."""
    return _map(preds, gts, num_classes, "boxes", iou_threshold)


def mask_map50(
    preds: Sequence[dict], gts: Sequence[dict], num_classes: int, iou_threshold: float = 0.5
) -> float:
    """Mask mAP at IoU 0.5: like :func:`box_map50` with boolean ``masks (M,H,W)`` instead of
    boxes (predicted and true masks of one image share H, W)."""
    return _map(preds, gts, num_classes, "masks", iou_threshold)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix ``(C, C)`` (rows true, columns predicted) of integer label maps."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def miou(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean IoU over classes that occur in truth or prediction, from label maps ``(N, H, W)``.

    >>> miou(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 0]]), 2)
    0.5833333333333333
    """
    return miou_from_confusion(confusion(y_true, y_pred, num_classes))


def miou_from_confusion(cm: np.ndarray) -> float:
    """Mean IoU of an accumulated confusion matrix (classes with an empty union left out)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else float("nan")


def attribute_f1(
    preds: Sequence[dict], gts: Sequence[dict], num_attributes: int, iou_threshold: float = 0.5,
    threshold: float = 0.5,
) -> float:
    """Macro per-attribute F1 over ground-truth objects.

    Each true object is matched to the best-overlapping prediction (IoU ≥ 0.5, greedy by
    score); its predicted attributes are that prediction's ``probs >= threshold``, or none when
    unmatched (a missed object misses its attributes). ``preds[i]``: ``boxes``, ``probs (M,A)``,
    ``scores (M,)``; ``gts[i]``: ``boxes``, ``attributes (G,A)`` boolean.
    """
    ys, ps = [], []
    for pr, gt in zip(preds, gts, strict=True):
        ga = np.asarray(gt["attributes"], dtype=bool).reshape(-1, num_attributes)
        if not len(ga):
            continue
        pred_attr = np.zeros_like(ga)
        pb = np.asarray(pr["boxes"]).reshape(-1, 4)
        if len(pb):
            scores = np.asarray(pr["scores"], dtype=np.float64).reshape(-1)
            match = _match(box_iou(pb, gt["boxes"]), scores, iou_threshold)
            probs = np.asarray(pr["probs"]).reshape(-1, num_attributes)
            for i, j in enumerate(match):
                if j >= 0:
                    pred_attr[j] = probs[i] >= threshold
        ys.append(ga)
        ps.append(pred_attr)
    if not ys:
        return float("nan")
    return per_label_f1(np.concatenate(ys), np.concatenate(ps))
