"""Families: records → probability rows → one score per image."""

from __future__ import annotations

import numpy as np
import pytest

from alray import families
from alray.families import FAMILIES, image_score, image_scores, reduce_scores, rows


def test_family_names_match_the_project():
    from alray.project import FAMILIES as PROJECT_FAMILIES

    assert tuple(FAMILIES) == tuple(PROJECT_FAMILIES)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def test_rows_shapes_deterministic_and_mc():
    rng = np.random.default_rng(0)
    c, m, k, a, t = 4, 3, 5, 6, 7
    cases = {
        "classifier": ({"probs": _softmax(rng.normal(size=c))}, (1, c)),
        "tagger": ({"probs": rng.random(t)}, (t, 2)),
        "detector": ({"boxes": np.zeros((m, 4)), "probs": _softmax(rng.normal(size=(m, c)))},
                     (m, c)),
        "instance_segmentor": ({"boxes": np.zeros((m, 4)),
                                "probs": _softmax(rng.normal(size=(m, c))),
                                "masks": np.zeros((m, 8, 8), bool)}, (m, c)),
        "semantic_segmentor": ({"probs": _softmax(rng.normal(size=(c, 8, 9)), 0)}, (72, c)),
        "attributor": ({"boxes": np.zeros((m, 4)), "probs": rng.random((m, a))}, (m * a, 2)),
    }
    mc_probs = {
        "classifier": _softmax(rng.normal(size=(k, c))),
        "tagger": rng.random((k, t)),
        "detector": _softmax(rng.normal(size=(m, k, c))),
        "instance_segmentor": _softmax(rng.normal(size=(m, k, c))),
        "semantic_segmentor": _softmax(rng.normal(size=(k, c, 8, 9)), 1),
        "attributor": rng.random((m, k, a)),
    }
    for fam, (rec, shape) in cases.items():
        r = rows(fam, rec)
        assert r.shape == shape, fam
        np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-9)
        mc = dict(rec, probs=mc_probs[fam])
        assert families.is_mc(fam, mc) and not families.is_mc(fam, rec)
        r = rows(fam, mc)
        assert r.shape == (shape[0], k, shape[1]), fam
        np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-9)


def test_multilabel_rows_keep_each_label_and_sample():
    p = np.array([[0.9, 0.2], [0.7, 0.4], [0.8, 0.3]])  # (K=3, T=2)
    r = rows("tagger", {"probs": p})
    assert r.shape == (2, 3, 2)
    np.testing.assert_allclose(r[1, :, 0], [0.2, 0.4, 0.3])
    att = np.stack([p, p[:, ::-1]])  # (M=2, K=3, A=2)
    r = rows("attributor", {"boxes": np.zeros((2, 4)), "probs": att})
    assert r.shape == (4, 3, 2)
    np.testing.assert_allclose(r[3, :, 0], p[:, 0])  # object 1, attribute 1 = p[:, 0]


def test_semantic_rows_are_subsampled_with_a_stride():
    p = np.full((3, 200, 300), 1 / 3)
    r = rows("semantic_segmentor", {"probs": p})
    assert r.shape[0] <= families.MAX_PIXEL_ROWS and r.shape[1] == 3
    assert families.pixel_stride(64, 64) == 1


def test_image_score_margin_values():
    assert image_score("classifier", {"probs": np.array([0.5, 0.5])}) == pytest.approx(1.0)
    assert image_score("classifier", {"probs": np.array([1.0, 0.0])}) == pytest.approx(0.0)
    # tagger: per-tag margin 1 - |2p - 1|, mean over tags
    s = image_score("tagger", {"probs": np.array([0.5, 1.0])})
    assert s == pytest.approx(0.5)
    s = image_score("tagger", {"probs": np.array([0.5, 1.0])}, reduction="max")
    assert s == pytest.approx(1.0)


def test_empty_images_score_the_configured_value():
    rec = {"boxes": np.zeros((0, 4)), "probs": np.zeros((0, 3))}
    assert image_score("detector", rec) == 0.0
    assert image_score("detector", rec, empty_score=0.7) == 0.7
    scores = image_scores("detector", [rec, rec], empty_score=2.0)
    assert scores.tolist() == [2.0, 2.0]


def test_batch_scores_equal_single_scores_for_every_family():
    rng = np.random.default_rng(1)
    recs = {
        "classifier": [{"probs": _softmax(rng.normal(size=3))} for _ in range(5)],
        "tagger": [{"probs": rng.random(4)} for _ in range(5)],
        "detector": [{"boxes": np.zeros((m, 4)), "probs": _softmax(rng.normal(size=(m, 3)))}
                     for m in (0, 2, 1, 3, 0)],
        "semantic_segmentor": [{"probs": _softmax(rng.normal(size=(3, 6, 6)), 0)}
                               for _ in range(3)],
        "attributor": [{"boxes": np.zeros((m, 4)), "probs": rng.random((m, 2))}
                       for m in (1, 0, 2)],
    }
    for fam, rs in recs.items():
        for heuristic in ("margin", "entropy", "least_confidence"):
            for red in ("mean", "max", "sum"):
                batch = image_scores(fam, rs, heuristic, red)
                single = [image_score(fam, r, heuristic, red) for r in rs]
                np.testing.assert_allclose(batch, single, atol=1e-12, err_msg=f"{fam} {heuristic}")


def test_bald_needs_mc_records_and_is_zero_when_samples_agree():
    same = {"probs": np.tile([0.6, 0.4], (4, 1))}
    differ = {"probs": np.array([[0.9, 0.1], [0.1, 0.9], [0.8, 0.2], [0.2, 0.8]])}
    assert image_score("classifier", same, "bald") == pytest.approx(0.0, abs=1e-12)
    assert image_score("classifier", differ, "bald") > 0.2


def test_none_heuristic_scores_nothing():
    assert image_scores("classifier", [{"probs": np.array([0.5, 0.5])}], "none").tolist() == [0.0]


def test_reduce_scores():
    out = reduce_scores(np.array([1.0, 3.0, 5.0, 2.0]), [2, 0, 2], "max", empty_score=-1)
    assert out.tolist() == [3.0, -1.0, 5.0]
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_scores(np.array([1.0]), [1], "median")


def test_validate_record_explains_mismatches():
    with pytest.raises(ValueError, match="missing boxes"):
        families.validate_record("detector", {"probs": np.ones((1, 2)) / 2})
    with pytest.raises(ValueError, match="expected 3"):
        families.validate_record("classifier", {"probs": np.ones(2) / 2}, num_classes=3)
    with pytest.raises(ValueError, match="sum to 1"):
        families.validate_record("classifier", {"probs": np.array([0.9, 0.9])})
    with pytest.raises(ValueError, match="logits"):
        families.validate_record("tagger", {"probs": np.array([3.0, -2.0])})
    families.validate_record("tagger", {"probs": np.array([0.9, 0.9])})
    with pytest.raises(ValueError, match="unknown family"):
        families.get_family("captioner")
