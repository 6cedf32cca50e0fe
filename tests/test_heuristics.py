"""Tests for alray.heuristics: known values, properties, validation, multi-label, reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from alray import heuristics as H

NAMES = ("margin", "least_confidence", "ratio", "entropy", "variance")
ALL_SCORED = (*NAMES, "bald", "random")


def _ln(x: float) -> float:
    return math.log(x)


# ------------------------------------------------------------------ known values by hand

P = np.array([[0.7, 0.2, 0.1]])

KNOWN = {
    "margin": 1 - (0.7 - 0.2),  # 0.5
    "least_confidence": 1 - 0.7,  # 0.3
    "ratio": 0.2 / 0.7,  # 2/7
    "entropy": -(0.7 * _ln(0.7) + 0.2 * _ln(0.2) + 0.1 * _ln(0.1)),  # 0.80182 nats
    # Var = (sum p^2 - 1/C) / C = (0.54 - 1/3) / 3; max (C-1)/C^2 = 2/9 -> 1 - 0.31 = 0.69
    "variance": 0.69,
}


@pytest.mark.parametrize("name", NAMES)
def test_known_values(name):
    got = H.score(name, P)
    assert got.dtype == np.float64 and got.shape == (1,)
    assert got[0] == pytest.approx(KNOWN[name], abs=1e-12)


def test_known_value_literals():
    assert H.score("margin", P)[0] == pytest.approx(0.5)
    assert H.score("least_confidence", P)[0] == pytest.approx(0.3)
    assert H.score("ratio", P)[0] == pytest.approx(2 / 7)
    assert H.score("entropy", P)[0] == pytest.approx(0.801819, abs=1e-6)
    assert H.score("variance", P)[0] == pytest.approx(0.69)


def test_bald_known_values():
    # Two confident samples that disagree: H(mean=[.5,.5]) - mean(0, 0) = ln 2.
    assert H.score("bald", np.array([[[1.0, 0.0], [0.0, 1.0]]]))[0] == pytest.approx(_ln(2))
    # [[.8,.2],[.4,.6]]: H([.6,.4]) - (H([.8,.2]) + H([.4,.6])) / 2
    h = lambda *q: -sum(x * _ln(x) for x in q)  # noqa: E731
    expected = h(0.6, 0.4) - (h(0.8, 0.2) + h(0.4, 0.6)) / 2  # 0.086305
    got = H.score("bald", np.array([[[0.8, 0.2], [0.4, 0.6]]]))[0]
    assert got == pytest.approx(expected) and got == pytest.approx(0.086305, abs=1e-6)


def test_default_and_registry():
    assert H.DEFAULT_HEURISTIC == "margin"
    assert set(H.HEURISTICS) == {*ALL_SCORED, "none"}
    assert isinstance(H.get("bald"), H.BALD)
    for name, cls in H.HEURISTICS.items():
        assert cls.name == name and issubclass(cls, H.Heuristic)


def test_ties_and_extremes():
    p = np.array([[0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(H.score("margin", p), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(H.score("ratio", p), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(H.score("entropy", p)[1], 0.0)  # 0 ln 0 = 0, no NaN


@pytest.mark.parametrize("c", [2, 3, 10, 33, 200])  # both top-2 paths (column loop, partition)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top2_paths_match_sort(c, dtype):
    rng = np.random.default_rng(c)
    p = rng.random((3001, c)).astype(dtype)
    p[::7, 1] = p[::7, 0]  # exact ties
    p /= p.sum(axis=1, keepdims=True, dtype=dtype)
    s = np.sort(p, axis=1).astype(np.float64)
    np.testing.assert_array_equal(H.score("margin", p), 1 - (s[:, -1] - s[:, -2]))
    np.testing.assert_array_equal(H.score("least_confidence", p), 1 - s[:, -1])
    np.testing.assert_allclose(H.score("ratio", p), s[:, -2] / s[:, -1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunk_boundaries_and_layouts(dtype):
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(10), size=70_001).astype(dtype)  # spans several chunks
    s = np.sort(p, axis=1).astype(np.float64)
    expected = 1 - (s[:, -1] - s[:, -2])
    np.testing.assert_array_equal(H.score("margin", p), expected)
    np.testing.assert_array_equal(H.score("margin", np.asfortranarray(p)), expected)
    np.testing.assert_array_equal(H.score("margin", p[::-1])[::-1], expected)
    q = p.astype(np.float64)
    np.testing.assert_allclose(H.score("entropy", p), -(q * np.log(q)).sum(axis=1), rtol=1e-12)
    bad = p.copy()
    bad[-1, 0] = np.nan  # the last chunk is checked too
    with pytest.raises(ValueError, match="NaN \\(first in row 70000\\)"):
        H.score("margin", bad)


def test_integer_one_hot_input_and_empty():
    assert H.score("margin", np.array([[0, 1, 0]]))[0] == 0.0
    assert H.score("entropy", np.zeros((0, 4))).shape == (0,)


def test_logits_are_softmaxed_stably():
    x = np.array([[1000.0, 999.0, -5.0], [0.0, 0.0, 0.0]])
    z = np.exp(x - x.max(axis=1, keepdims=True))
    p = z / z.sum(axis=1, keepdims=True)
    for name in NAMES:
        np.testing.assert_allclose(H.score(name, x, logits=True), H.score(name, p), atol=1e-12)
    assert H.score("margin", x, logits=True)[1] == pytest.approx(1.0)
    # logits of any sign are fine when told; the same numbers as probs are rejected
    with pytest.raises(ValueError, match="negative"):
        H.score("margin", np.array([[-1.0, 2.0]]))


# ------------------------------------------------------------------ hypothesis properties


@st.composite
def prob_rows(draw, max_c: int = 8, max_n: int = 6):
    c = draw(st.integers(2, max_c))
    n = draw(st.integers(1, max_n))
    w = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(0, 1)))
    w[:, 0] += 1e-3  # never an all-zero row
    return w / w.sum(axis=1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(prob_rows())
def test_one_hot_least_and_uniform_most_informative(p):
    n, c = p.shape
    one_hot = np.zeros((1, c))
    one_hot[0, 0] = 1.0
    uniform = np.full((1, c), 1.0 / c)
    for name in NAMES:
        s = H.score(name, p)
        lo, hi = H.score(name, one_hot)[0], H.score(name, uniform)[0]
        assert lo < hi
        assert np.all(s >= lo - 1e-9) and np.all(s <= hi + 1e-9), name
    # bald: identical (one-hot or uniform) samples carry no disagreement; never above H(mean)
    k = np.stack([p, p[::-1]], axis=1)
    b = H.score("bald", k)
    assert np.all(b >= 0) and np.all(b <= H.score("entropy", k.mean(axis=1)) + 1e-9)
    assert H.score("bald", np.stack([one_hot, one_hot], axis=1))[0] == 0.0
    assert H.score("bald", np.stack([uniform, uniform], axis=1))[0] == pytest.approx(0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(prob_rows(), st.randoms(use_true_random=False))
def test_invariant_under_class_permutation(p, rnd):
    perm = list(range(p.shape[1]))
    rnd.shuffle(perm)
    q = p[:, perm]
    for name in NAMES:
        np.testing.assert_allclose(H.score(name, q), H.score(name, p), rtol=1e-12, atol=1e-12)
    k = np.stack([p, p[::-1]], axis=1)
    np.testing.assert_allclose(
        H.score("bald", k[:, :, perm]), H.score("bald", k), rtol=1e-12, atol=1e-12
    )


@settings(max_examples=40, deadline=None)
@given(prob_rows(), st.integers(1, 4))
def test_identical_samples_equal_single_prediction(p, k):
    samples = np.repeat(p[:, None, :], k, axis=1)
    for name in NAMES:
        np.testing.assert_allclose(H.score(name, samples), H.score(name, p), atol=1e-12)
    if k >= 2:
        np.testing.assert_allclose(H.score("bald", samples), 0.0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(prob_rows(), st.integers(0, 2**32 - 1))
def test_random_reproducible_per_seed(p, seed):
    a = H.score("random", p, seed=seed)
    assert a.dtype == np.float64 and a.shape == (p.shape[0],)
    assert np.all((a >= 0) & (a < 1))
    np.testing.assert_array_equal(a, H.score("random", p, seed=seed))
    assert not np.array_equal(a, H.score("random", p, seed=seed + 1))


def test_mc_samples_average_first():
    s = np.array([[[0.9, 0.1], [0.5, 0.5]]])  # mean [0.7, 0.3]
    assert H.score("margin", s)[0] == pytest.approx(1 - 0.4)
    assert H.score("least_confidence", s)[0] == pytest.approx(0.3)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (np.array([[0.5, np.nan], [0.5, 0.5]]), r"NaN \(first in row 0\)"),
        (np.array([[0.5, 0.5], [np.inf, 0.5]]), r"infinite values \(first in row 1\)"),
        (np.array([[0.5, 0.5], [1.2, -0.2]]), r"negative values \(first in row 1"),
        (np.array([[0.5, 0.5], [0.5, 0.6]]), r"sum to 1 within 0\.001 \(row 1 sums to 1\.1\)"),
        (np.array([[0.5, 0.5012]]), r"sum to 1 within"),
        (np.array([0.5, 0.5]), r"2-D \(N, C\) or 3-D \(N, K, C\).*\(2,\)"),
        (np.ones((1, 1, 1, 2)) / 2, r"2-D \(N, C\) or 3-D"),
        (np.ones((3, 1)), r"at least 2 classes"),
        (np.ones((3, 0, 2)), r"at least one sample"),
        (np.array([["a", "b"]]), r"numeric array"),
        (np.array([[[0.5, 0.5], [0.2, 0.9]]]), r"row 0 sums to 1\.1"),
    ],
)
def test_validation_errors(probs, match):
    with pytest.raises(ValueError, match=match):
        H.score("margin", probs)


def test_sum_within_tolerance_accepted():
    assert H.score("margin", np.array([[0.5, 0.5009]])).shape == (1,)
    # float32 rounding right at the tolerance must not turn into a crash in the diagnosis
    edge = np.array([[0.5, 0.501]], dtype=np.float32)
    try:
        H.score("margin", edge)
    except ValueError as e:
        assert "sum to 1" in str(e)


def test_bald_needs_samples():
    with pytest.raises(ValueError, match=r"bald needs \(N, K, C\).*K >= 2.*\(2, 3\)"):
        H.score("bald", np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"K >= 2"):
        H.score("bald", np.full((2, 1, 3), 1 / 3))


def test_unknown_names():
    with pytest.raises(ValueError, match=r"unknown heuristic 'foo'; known: margin, .*bald"):
        H.score("foo", P)
    with pytest.raises(ValueError, match=r"unknown heuristic"):
        H.get(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown reduction 'median'; known: mean, max, sum"):
        H.score("margin", P, reduction="median")


def test_none_heuristic_has_no_score():
    with pytest.raises(ValueError, match=r"'none' gives no score.*ranking\.alphabetical"):
        H.score("none", P)
    with pytest.raises(ValueError, match=r"'none' gives no score"):
        H.get("none")(P)
    with pytest.raises(ValueError, match=r"'none' gives no score"):
        H.score_multilabel("none", np.array([[0.5]]))


def test_logits_must_be_finite():
    with pytest.raises(ValueError, match=r"logits contain NaN or infinite values \(first in row 1"):
        H.score("margin", np.array([[1.0, 2.0], [np.nan, 0.0]]), logits=True)


def test_every_heuristic_validates():
    bad = np.array([[[0.5, np.nan], [0.5, 0.5]]])
    for name in ALL_SCORED:
        with pytest.raises(ValueError, match="NaN"):
            H.score(name, bad)


# ------------------------------------------------------------------ reductions


def test_reduce_counts():
    s = [0.25, 0.75, 0.5, 1.0]
    np.testing.assert_allclose(H.reduce(s, [2, 0, 2], "mean"), [0.5, 0.0, 0.75])
    np.testing.assert_allclose(H.reduce(s, [2, 0, 2], "max"), [0.75, 0.0, 1.0])
    np.testing.assert_allclose(H.reduce(s, [2, 0, 2], "sum"), [1.0, 0.0, 1.5])
    np.testing.assert_allclose(H.reduce(s, [0, 4, 0], "max", empty=-1), [-1, 1.0, -1])
    np.testing.assert_allclose(H.reduce([], [0, 0], "sum", empty=7), [7, 7])
    assert H.reduce([], [], "mean").shape == (0,)


def test_reduce_segment_ids_any_order():
    s = [0.25, 0.75, 0.5, 1.0]
    ids = [2, 0, 2, 0]
    np.testing.assert_allclose(H.reduce(s, segment_ids=ids, how="sum"), [1.75, 0.0, 0.75])
    np.testing.assert_allclose(
        H.reduce(s, segment_ids=ids, how="max", n_images=4, empty=-2), [1.0, -2, 0.5, -2]
    )


def test_reduce_matches_loop_on_random_segments():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, size=500)
    s = rng.random(counts.sum())
    for how, fn in (("mean", np.mean), ("max", np.max), ("sum", np.sum)):
        got = H.reduce(s, counts, how, empty=-1.0)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        want = [fn(s[a:b]) if b > a else -1.0 for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": [1, 1]}, r"counts sum to 2 but there are 3 scores"),
        ({"counts": [4, -1]}, r"counts must be >= 0"),
        ({"counts": [1.5, 1.5]}, r"1-D integer"),
        ({}, r"exactly one of counts or segment_ids"),
        ({"counts": [3], "segment_ids": [0, 0, 0]}, r"exactly one"),
        ({"segment_ids": [0, 5, 1], "n_images": 2}, r"segment id 5 out of range"),
        ({"segment_ids": [0, -1, 1]}, r"segment_ids must be >= 0"),
        ({"counts": [3], "how": "median"}, r"unknown reduction"),
    ],
)
def test_reduce_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        H.reduce([0.1, 0.2, 0.3], **kwargs)


def test_score_with_reduction():
    p = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])  # margins 1, 0.5, 0
    np.testing.assert_allclose(H.score("margin", p, reduction="mean"), [0.5])
    np.testing.assert_allclose(H.score("margin", p, reduction="sum", counts=[1, 2]), [1, 0.5])
    np.testing.assert_allclose(H.score("margin", p, counts=[0, 3]), [0.0, 0.5])  # mean default
    np.testing.assert_allclose(
        H.score("margin", np.zeros((0, 2)), reduction="max", empty=0.25), [0.25]
    )
    r = H.score("random", p, reduction="mean", counts=[1, 0, 2], seed=5)
    assert r.shape == (3,)
    np.testing.assert_array_equal(r, H.score("random", p, counts=[1, 0, 2], seed=5))
    with pytest.raises(ValueError, match="counts sum to 2"):
        H.score("margin", p, counts=[1, 1])


# ------------------------------------------------------------------ multi-label


def test_multilabel_rows():
    rows = H.multilabel_rows(np.array([[0.75, 0.0]]))
    np.testing.assert_allclose(rows, [[[0.75, 0.25], [0.0, 1.0]]])


def test_multilabel_scores_and_reductions():
    p = np.array([[0.5, 1.0, 0.75], [0.0, 0.0, 0.0]])
    # per-label margin of [p, 1-p] is 1 - |2p - 1|: [1, 0, 0.5] and [0, 0, 0]
    per_label = H.score_multilabel("margin", p, reduction=None)
    np.testing.assert_allclose(per_label, [[1, 0, 0.5], [0, 0, 0]])
    np.testing.assert_allclose(H.score_multilabel("margin", p), [0.5, 0.0])
    np.testing.assert_allclose(H.score_multilabel("margin", p, reduction="max"), [1.0, 0.0])
    np.testing.assert_allclose(H.score_multilabel("margin", p, reduction="sum"), [1.5, 0.0])
    np.testing.assert_allclose(H.score_multilabel("entropy", np.array([[0.5]])), [_ln(2)])
    # rows with no labels score `empty`
    np.testing.assert_allclose(H.score_multilabel("margin", np.zeros((2, 0)), empty=3), [3, 3])


def test_multilabel_objects_per_image():
    # attributor: 3 objects over 2 images (+ one image without objects)
    p = np.array([[0.5, 1.0], [0.75, 0.75], [0.0, 1.0]])  # per-object mean: .5, .5, 0
    got = H.score_multilabel("margin", p, counts=[2, 0, 1], reduction="max", empty=-1)
    np.testing.assert_allclose(got, [1.0, -1.0, 0.0])  # max over labels then over objects
    with pytest.raises(ValueError, match="counts needs a reduction"):
        H.score_multilabel("margin", p, counts=[3], reduction=None)


def test_multilabel_samples_and_logits():
    s = np.array([[[1.0, 0.5], [0.0, 0.5]]])  # (N=1, K=2, T=2): label 0 disagrees
    np.testing.assert_allclose(
        H.score_multilabel("bald", s, reduction=None), [[_ln(2), 0.0]], atol=1e-12
    )
    np.testing.assert_allclose(H.score_multilabel("margin", s, reduction=None), [[1.0, 1.0]])
    x = np.array([[0.0, 50.0, -800.0]])
    np.testing.assert_allclose(
        H.score_multilabel("margin", x, logits=True, reduction=None), [[1.0, 0.0, 0.0]], atol=1e-12
    )
    with pytest.raises(ValueError, match=r"bald needs \(N, K, T\).*got shape \(1, 2\)"):
        H.score_multilabel("bald", np.array([[0.5, 0.5]]))


def test_multilabel_validation_and_random():
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\] \(row 1"):
        H.score_multilabel("margin", np.array([[0.5], [1.5]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        H.score_multilabel("margin", np.array([[0.5], [np.nan]]))
    with pytest.raises(ValueError, match=r"2-D \(N, T\) or 3-D"):
        H.score_multilabel("margin", np.array([0.5]))
    r = H.score_multilabel("random", np.full((4, 3), 0.5), seed=1)
    assert r.shape == (4,)
    np.testing.assert_array_equal(r, H.score_multilabel("random", np.full((4, 3), 0.5), seed=1))
