"""Metrics on hand-made cases whose values can be worked out on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alray import metrics


def test_accuracy():
    assert metrics.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert math.isnan(metrics.accuracy([], []))
    with pytest.raises(ValueError):
        metrics.accuracy([0, 1], [0])


def test_per_label_f1():
    t = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0]], bool)
    p = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], bool)
    f = metrics.f1_per_label(t, p)
    # label 0: tp 1, fn 1 → 2/3; label 1: perfect → 1; label 2: tp 0, fn 1 → 0
    np.testing.assert_allclose(f, [2 / 3, 1.0, 0.0])
    assert metrics.per_label_f1(t, p) == pytest.approx((2 / 3 + 1 + 0) / 3)
    # a label nobody has nor predicts is left out of the mean
    t2 = np.array([[1, 0]], bool)
    assert metrics.per_label_f1(t2, t2) == 1.0


def test_box_iou():
    iou = metrics.box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_average_precision():
    # two ground truths; detections by score: TP, FP, TP → P/R points (1, .5), (.67, 1)
    ap = metrics.average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2)
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    assert metrics.average_precision(np.array([]), np.array([]), 3) == 0.0
    assert math.isnan(metrics.average_precision(np.array([0.5]), np.array([0]), 0))


def _gt(boxes, labels):
    return {"boxes": np.array(boxes, float), "labels": np.array(labels)}


def _pr(boxes, labels, scores):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels),
            "scores": np.array(scores, float)}


def test_box_map50_perfect_missed_and_wrong_class():
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    assert metrics.box_map50([_pr([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [0.9, 0.8])],
                             gts, 2) == 1.0
    # class 1 detected with the wrong class: AP(0) = 1, AP(1) = 0
    assert metrics.box_map50([_pr([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [0.9, 0.8])],
                             gts, 2) == pytest.approx(0.5)
    # IoU below 0.5 is a miss
    assert metrics.box_map50([_pr([[0, 0, 10, 10], [26, 20, 36, 30]], [0, 1], [0.9, 0.8])],
                             gts, 2) == pytest.approx(0.5)
    # a duplicate detection is a false positive ranked after the true one: AP stays 1
    assert metrics.box_map50([_pr([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]],
                                  [0, 0, 1], [0.9, 0.5, 0.8])], gts, 2) == 1.0
    # a high-scoring false positive halves precision at the first recall point
    ap = metrics.box_map50([_pr([[50, 50, 60, 60], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])],
                           [_gt([[0, 0, 10, 10]], [0])], 1)
    assert ap == pytest.approx(0.5)
    # classes absent from the ground truth do not count; no predictions at all → 0
    assert metrics.box_map50([_pr([], [], [])], [_gt([[0, 0, 1, 1]], [0])], 3) == 0.0


def test_mask_map50():
    m = np.zeros((1, 10, 10), bool)
    m[0, 2:6, 2:6] = True
    half = np.zeros_like(m)
    half[0, 2:6, 2:4] = True  # IoU 0.5 exactly counts
    gt = [{"masks": m, "labels": [0], "boxes": np.zeros((1, 4))}]
    assert metrics.mask_map50([{"masks": m, "labels": [0], "scores": [1.0]}], gt, 1) == 1.0
    assert metrics.mask_map50([{"masks": half, "labels": [0], "scores": [1.0]}], gt, 1) == 1.0
    quarter = np.zeros_like(m)
    quarter[0, 2:4, 2:4] = True
    assert metrics.mask_map50([{"masks": quarter, "labels": [0], "scores": [1.0]}], gt, 1) == 0.0


def test_miou():
    t = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])
    p = np.array([[0, 0, 1, 0], [0, 0, 2, 2]])
    # class 0: tp 4, union 5 → .8; class 1: tp 1, union 2 → .5; class 2: 1
    assert metrics.miou(t, p, 3) == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    # a class in neither truth nor prediction is left out
    assert metrics.miou(np.zeros((2, 2)), np.zeros((2, 2)), 4) == 1.0


def test_attribute_f1_uses_matched_objects():
    gts = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float),
            "attributes": np.array([[1, 0], [0, 1]], bool)}]
    preds = [{"boxes": np.array([[0, 0, 10, 10]], float), "probs": np.array([[0.9, 0.1]]),
              "scores": np.array([0.9])}]
    # the second object is missed: its attribute 1 is a false negative → F1(a1) = 0
    assert metrics.attribute_f1(preds, gts, 2) == pytest.approx((1.0 + 0.0) / 2)
    preds[0]["boxes"] = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    preds[0]["probs"] = np.array([[0.9, 0.1], [0.2, 0.7]])
    preds[0]["scores"] = np.array([0.9, 0.8])
    assert metrics.attribute_f1(preds, gts, 2) == 1.0


def test_metric_names_cover_every_family():
    from alray.families import FAMILIES

    assert set(metrics.METRIC_NAMES) == set(FAMILIES)
