"""Tests for alray.ranking: order, top-k, streaming accumulator, rank-change statistics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alray import ranking as R


def test_rank_score_descending_ties_by_id():
    scores = [0.5, 0.9, 0.5, 0.1, 0.5]
    ids = [30, 99, 10, 1, 20]
    order = R.rank(scores, ids)
    np.testing.assert_array_equal(order, [1, 2, 4, 0, 3])
    np.testing.assert_array_equal(R.assign_ranks(5), [1, 2, 3, 4, 5])


@pytest.mark.parametrize("dtype", [None, object])
def test_rank_string_ids(dtype):
    ids = np.array(["img-b", "img-a", "img-c"], dtype=dtype)
    np.testing.assert_array_equal(R.rank([0.3, 0.3, 0.9], ids), [2, 1, 0])
    np.testing.assert_array_equal(R.top_k([0.3, 0.3, 0.9, 0.3], [*ids, "a"], 2), [2, 3])


def test_nan_scores_rank_last():
    scores = [np.nan, 0.1, np.nan, 0.5]
    ids = [0, 1, 2, 3]
    np.testing.assert_array_equal(R.rank(scores, ids), [3, 1, 0, 2])
    for k in range(5):
        np.testing.assert_array_equal(R.top_k(scores, ids, k), R.rank(scores, ids)[:k])


def test_input_errors():
    with pytest.raises(ValueError, match="3 scores but 2 image ids"):
        R.rank([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="1-D"):
        R.top_k(np.ones((2, 2)), np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        R.top_k([1.0], [1], -1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        R.TopK(-1)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 3), min_size=0, max_size=60),
    st.integers(0, 70),
    st.booleans(),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_top_k_equals_rank_prefix_with_ties(levels, k, string_ids, duplicate_ids, rnd):
    n = len(levels)
    scores = np.array(levels, dtype=np.float64) / 4  # few distinct values: many ties
    ids = list(range(n))
    rnd.shuffle(ids)
    if duplicate_ids:
        ids = [i // 3 for i in ids]
    ids = np.array([f"id{i:03d}" for i in ids]) if string_ids else np.array(ids, dtype=np.int64)
    np.testing.assert_array_equal(R.top_k(scores, ids, k), R.rank(scores, ids)[:k])


def test_top_k_large_with_boundary_ties():
    rng = np.random.default_rng(0)
    n = 200_000
    scores = rng.integers(0, 50, size=n) / 50.0  # ~4000 per value: ties at every boundary
    ids = rng.permutation(n)
    for k in (1, 999, 1000, 4000, 12_345):
        np.testing.assert_array_equal(R.top_k(scores, ids, k), R.rank(scores, ids)[:k])


def _chunks(rng, n_chunks):
    for _ in range(n_chunks):
        m = int(rng.integers(0, 300))
        scores = rng.integers(0, 20, size=m) / 20.0
        ids = rng.choice(10**9, size=m, replace=False)
        yield scores, ids


def test_topk_streaming_equals_top_k_of_concatenation():
    rng = np.random.default_rng(7)
    chunks = list(_chunks(rng, 80))
    k = 100
    acc = R.TopK(k)
    for scores, ids in chunks:
        acc.add(scores, ids, path=np.array([f"p{i}" for i in ids]), box=np.ones((len(ids), 4)))
        assert acc.size <= 2 * k  # memory bounded however much is streamed
    res = acc.result()
    all_s = np.concatenate([c[0] for c in chunks])
    all_i = np.concatenate([c[1] for c in chunks])
    want = R.top_k(all_s, all_i, k)
    np.testing.assert_array_equal(res["image_id"], all_i[want])
    np.testing.assert_array_equal(res["score"], all_s[want])
    np.testing.assert_array_equal(res["path"], [f"p{i}" for i in all_i[want]])
    assert res["box"].shape == (k, 4)


def test_topk_merge_and_pickle():
    rng = np.random.default_rng(8)
    chunks = list(_chunks(rng, 30))
    k = 50
    parts = [R.TopK(k) for _ in range(3)]
    for i, (scores, ids) in enumerate(chunks):
        parts[i % 3].add(scores, ids)
    shipped = [pickle.loads(pickle.dumps(p)) for p in parts]  # as Ray would ship them
    assert all(p.size <= k for p in shipped)
    merged = shipped[0].merge(shipped[1]).merge(shipped[2])
    assert merged.size <= 2 * k
    all_s = np.concatenate([c[0] for c in chunks])
    all_i = np.concatenate([c[1] for c in chunks])
    np.testing.assert_array_equal(merged.result()["image_id"], all_i[R.top_k(all_s, all_i, k)])


def test_topk_edge_cases():
    empty = R.TopK(3).result()
    assert set(empty) == {"score", "image_id"} and empty["score"].shape == (0,)
    acc = R.TopK(0)
    acc.add([0.5], [1])
    assert acc.result()["score"].shape == (0,)
    acc = R.TopK(5)
    acc.add([0.5, 0.7], ["b", "a"])
    np.testing.assert_array_equal(acc.result()["image_id"], ["a", "b"])
    with pytest.raises(ValueError, match="differ from the earlier"):
        acc.add([0.1], ["c"], extra=[1])
    with pytest.raises(ValueError, match="reserved"):
        R.TopK(1).add([0.1], [1], score=[1])
    with pytest.raises(ValueError, match="column 'x' has"):
        R.TopK(1).add([0.1], [1], x=[1, 2])
    with pytest.raises(ValueError, match="cannot merge"):
        R.TopK(1).merge(R.TopK(2))


def test_alphabetical():
    names = ["b.jpg", "a.jpg", "b.jpg", "A.jpg"]
    np.testing.assert_array_equal(R.alphabetical(names, [7, 9, 3, 1]), [3, 1, 2, 0])
    with pytest.raises(ValueError, match="equal length"):
        R.alphabetical(["a"], [1, 2])


def test_rank_change_identical():
    ids = np.arange(10)
    r = R.rank_change(ids, ids, top_n=5)
    assert r == {
        "top_n": 5,
        "overlap": 5,
        "overlap_fraction": 1.0,
        "entered": [],
        "left": [],
        "spearman": 1.0,
        "common": 10,
        "changed": False,
    }


def test_rank_change_reversed():
    ids = ["a", "b", "c", "d"]
    r = R.rank_change(ids, ids[::-1], top_n=2)
    assert r["spearman"] == pytest.approx(-1.0)
    assert r["overlap"] == 0 and r["overlap_fraction"] == 0.0
    assert r["entered"] == ["d", "c"] and r["left"] == ["a", "b"]
    assert r["common"] == 4 and r["changed"] is True


def test_rank_change_membership():
    prev = [5, 1, 2, 3]
    new = [1, 9, 5, 2, 3]
    r = R.rank_change(prev, new, top_n=3)
    assert r["entered"] == [9] and r["left"] == [2]
    assert r["overlap"] == 2 and r["overlap_fraction"] == pytest.approx(2 / 3)
    assert r["common"] == 4 and r["changed"] is True
    # common order prev: 5,1,2,3 new: 1,5,2,3 -> d = (1,-1,0,0): 1 - 6*2/(4*15) = 0.8
    assert r["spearman"] == pytest.approx(0.8)
    # same order of the common images but one image added still counts as a change
    r = R.rank_change([1, 2], [1, 2, 3])
    assert r["spearman"] == 1.0 and r["changed"] is True and r["entered"] == [3]


def test_rank_change_small_and_errors():
    r = R.rank_change([], [])
    assert r["spearman"] is None and r["common"] == 0 and r["overlap_fraction"] == 1.0
    assert r["changed"] is False
    assert R.rank_change([1], [2])["spearman"] is None
    with pytest.raises(ValueError, match="more than once"):
        R.rank_change([1, 1], [1])
    with pytest.raises(ValueError, match="top_n"):
        R.rank_change([1], [1], top_n=-1)


def test_rank_change_spearman_matches_formula_on_random():
    rng = np.random.default_rng(2)
    prev = rng.permutation(1000)
    new = prev.copy()
    swap = rng.choice(1000, size=100, replace=False)
    new[swap] = new[swap[::-1]]
    r = R.rank_change(prev, new)
    pos_new = np.empty(1000)
    pos_new[new] = np.arange(1000)
    pos_prev = np.empty(1000)
    pos_prev[prev] = np.arange(1000)
    want = np.corrcoef(pos_prev, pos_new)[0, 1]  # Pearson on ranks = Spearman (no ties)
    assert r["spearman"] == pytest.approx(want)
