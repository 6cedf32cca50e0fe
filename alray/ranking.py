"""Ranking math: order images by score, pick the top k, compare two rankings. Pure numpy.

The order is score descending, ties by image id ascending (then by position, for duplicate
ids). NaN scores rank last. Image ids may be integers or strings (numpy unicode or object
arrays, e.g. from pyarrow).

>>> import numpy as np
>>> from alray import ranking
>>> scores = np.array([0.2, 0.9, 0.2, 0.5])
>>> ids = np.array([30, 10, 20, 40])
>>> ranking.rank(scores, ids)
array([1, 3, 2, 0])
>>> ranking.top_k(scores, ids, 3)
array([1, 3, 2])
>>> ranking.assign_ranks(4)
array([1, 2, 3, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["TopK", "alphabetical", "assign_ranks", "rank", "rank_change", "top_k"]

ArrayLike = Sequence[Any] | np.ndarray

_RESERVED = ("score", "image_id")


def _inputs(scores: ArrayLike, image_ids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(image_ids)
    if s.ndim != 1 or ids.ndim != 1:
        raise ValueError(f"scores and image_ids must be 1-D, got {s.shape} and {ids.shape}")
    if s.shape != ids.shape:
        raise ValueError(f"{s.shape[0]} scores but {ids.shape[0]} image ids")
    return s, ids


def rank(scores: ArrayLike, image_ids: ArrayLike) -> np.ndarray:
    """Indices that order the images by score descending, ties by image id ascending.

    >>> rank([0.5, 0.5, 0.7], ["b", "a", "c"])
    array([2, 1, 0])
    """
    s, ids = _inputs(scores, image_ids)
    return np.lexsort((ids, -s))  # lexsort is stable and puts NaN (of -s) last


def _smallest_ids(cand: np.ndarray, ids: np.ndarray, need: int) -> np.ndarray:
    """The ``need`` entries of ``cand`` (ascending positions) with the smallest ids, ties by
    position, without sorting all of them."""
    cid = ids[cand]
    try:
        u = np.partition(cid, need - 1)[need - 1]  # the need-th smallest id
        below = cand[cid < u]
        at = cand[cid == u]  # ascending positions: duplicates of u resolve by position
        return np.concatenate([below, at[: need - below.shape[0]]])
    except TypeError:  # ids that partition cannot handle: fall back to a stable sort
        return cand[np.argsort(cid, kind="stable")[:need]]


def top_k(scores: ArrayLike, image_ids: ArrayLike, k: int) -> np.ndarray:
    """Indices of the best ``k`` images in rank order; equal to ``rank(...)[:k]`` (ties at the
    boundary included) at the cost of a partition, not a full sort.

    >>> top_k([0.5, 0.9, 0.5, 0.5], [4, 1, 2, 3], 2)
    array([1, 2])
    """
    s, ids = _inputs(scores, image_ids)
    n = s.shape[0]
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if k == 0:
        return np.empty(0, dtype=np.intp)
    if k >= n:
        return rank(s, ids)
    key = -s
    t = key[np.argpartition(key, k - 1)[:k]].max()  # the k-th best key
    if np.isnan(t):  # fewer than k real scores: NaNs reach the boundary
        return rank(s, ids)[:k]
    better = np.flatnonzero(key < t)
    ties = np.flatnonzero(key == t)
    need = k - better.shape[0]
    if ties.shape[0] > need:  # equal scores straddle the boundary: the smallest ids win
        ties = _smallest_ids(ties, ids, need)
    sel = np.sort(np.concatenate([better, ties]))  # positions ascending, for stable ties
    return sel[np.lexsort((ids[sel], key[sel]))]


def alphabetical(file_names: ArrayLike, image_ids: ArrayLike) -> np.ndarray:
    """Order for heuristic ``none``: file name ascending, ties by image id ascending.

    >>> alphabetical(["b.jpg", "a.jpg", "b.jpg"], [7, 9, 3])
    array([1, 2, 0])
    """
    names = np.asarray(file_names)
    ids = np.asarray(image_ids)
    if names.ndim != 1 or names.shape != ids.shape:
        raise ValueError(
            f"file_names and image_ids must be 1-D of equal length, got {names.shape} "
            f"and {ids.shape}"
        )
    return np.lexsort((ids, names))


def assign_ranks(n: int) -> np.ndarray:
    """Ranks 1..n for ``n`` images already in rank order (rank 1 = most informative)."""
    return np.arange(1, n + 1, dtype=np.int64)


class TopK:
    """Mergeable top-k accumulator for streamed scores; holds at most 2k rows.

    >>> acc = TopK(2)
    >>> acc.add([0.1, 0.8], [1, 2], path=["a", "b"])
    >>> other = TopK(2)
    >>> other.add([0.8, 0.5], [0, 3], path=["c", "d"])
    >>> res = acc.merge(other).result()
    >>> res["image_id"], res["path"]
    (array([0, 2]), array(['c', 'b'], dtype='<U1'))
    """

    def __init__(self, k: int) -> None:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k = int(k)
        self._columns: dict[str, list[np.ndarray]] | None = None  # set by the first add
        self._size = 0

    @property
    def size(self) -> int:
        """Rows held now (<= 2k after every add or merge)."""
        return self._size

    def add(self, scores: ArrayLike, image_ids: ArrayLike, **extra_columns: ArrayLike) -> None:
        """Stream one chunk; extra columns travel with their rows (same names every time)."""
        s, ids = _inputs(scores, image_ids)
        cols = {"score": s, "image_id": ids}
        for name, values in extra_columns.items():
            if name in _RESERVED:
                raise ValueError(f"extra column name {name!r} is reserved")
            v = np.asarray(values)
            if v.shape[:1] != s.shape:
                raise ValueError(f"column {name!r} has {v.shape[:1]} rows, expected {s.shape}")
            cols[name] = v
        if s.shape[0] > self.k:  # cut a big chunk down before buffering it
            keep = top_k(s, ids, self.k)
            cols = {name: v[keep] for name, v in cols.items()}
        self._append(cols, s.shape[0] if s.shape[0] <= self.k else self.k)

    def _append(self, cols: dict[str, np.ndarray], n: int) -> None:
        if self._columns is None:
            self._columns = {name: [] for name in cols}
        elif set(cols) != set(self._columns):
            raise ValueError(
                f"columns {sorted(cols)} differ from the earlier {sorted(self._columns)}"
            )
        for name, v in cols.items():
            self._columns[name].append(v)
        self._size += n
        if self._size > 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        """Concatenate the buffer and keep the best k rows, in rank order."""
        if self._columns is None:
            return
        cols = {name: np.concatenate(parts) for name, parts in self._columns.items()}
        keep = top_k(cols["score"], cols["image_id"], self.k)
        self._columns = {name: [v[keep]] for name, v in cols.items()}
        self._size = keep.shape[0]

    def merge(self, other: TopK) -> TopK:
        """Fold ``other`` into this accumulator and return it."""
        if other.k != self.k:
            raise ValueError(f"cannot merge TopK({other.k}) into TopK({self.k})")
        if other._columns is not None:
            other._compact()
            cols = {name: parts[0] for name, parts in other._columns.items()}
            self._append(cols, other._size)
        return self

    def result(self) -> dict[str, np.ndarray]:
        """The best min(k, rows seen) rows in rank order: ``score``, ``image_id`` and extras."""
        if self._columns is None:
            return {"score": np.empty(0), "image_id": np.empty(0, dtype=np.int64)}
        self._compact()
        return {name: parts[0].copy() for name, parts in self._columns.items()}

    def __getstate__(self) -> dict[str, Any]:
        self._compact()  # ship k rows, not 2k
        return self.__dict__.copy()

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, size={self._size})"


def _sorted_unique(ids: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    if srt.shape[0] > 1 and (srt[1:] == srt[:-1]).any():
        raise ValueError(f"{what} ranking lists an image id more than once")
    return order, srt


def rank_change(
    prev_ids_in_rank_order: ArrayLike, new_ids_in_rank_order: ArrayLike, top_n: int = 100
) -> dict[str, Any]:
    """How a new ranking differs from the previous one (JSON-ready plain Python values).

    ``overlap``: images in both top ``top_n``; ``overlap_fraction``: overlap over the longer
    of the two top lists (1.0 when both are empty); ``entered`` / ``left``: ids that joined /
    dropped out of the top ``top_n`` (in new / old rank order); ``spearman``: rank correlation
    over the ``common`` images of both rankings (None when fewer than 2); ``changed``: whether
    membership or the order of the common images changed at all.

    >>> r = rank_change([1, 2, 3, 4], [2, 1, 3, 5], top_n=2)
    >>> r["overlap"], r["entered"], r["left"], r["common"], r["changed"]
    (2, [], [], 3, True)
    >>> r["spearman"]
    0.5
    """
    prev = np.asarray(prev_ids_in_rank_order)
    new = np.asarray(new_ids_in_rank_order)
    if prev.ndim != 1 or new.ndim != 1:
        raise ValueError("rankings must be 1-D arrays of image ids")
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    prev_top, new_top = prev[:top_n], new[:top_n]
    prev_kept = np.isin(prev_top, new_top)
    new_kept = np.isin(new_top, prev_top)
    overlap = int(new_kept.sum())
    longest = max(prev_top.shape[0], new_top.shape[0])

    # Join on id with sorts + binary search (no Python dicts): positions of common images.
    p_order, p_sorted = _sorted_unique(prev, "previous")
    n_order, n_sorted = _sorted_unique(new, "new")
    if n_sorted.shape[0] and p_sorted.shape[0]:
        at = np.minimum(np.searchsorted(n_sorted, p_sorted), n_sorted.shape[0] - 1)
        match = n_sorted[at] == p_sorted
        pos_prev, pos_new = p_order[match], n_order[at[match]]
    else:
        pos_prev = pos_new = np.empty(0, dtype=np.intp)
    common = int(pos_prev.shape[0])
    # Ranks among the common images: prev order is 0..m-1; d = how far each one moved.
    new_in_prev_order = pos_new[np.argsort(pos_prev)]
    new_rank = np.empty(common, dtype=np.float64)
    new_rank[np.argsort(new_in_prev_order)] = np.arange(common)
    d = np.arange(common) - new_rank
    spearman = None
    if common >= 2:
        spearman = float(1.0 - 6.0 * float(d @ d) / (common * (common * common - 1.0)))
    changed = bool(d.any()) or common != prev.shape[0] or common != new.shape[0]
    return {
        "top_n": int(top_n),
        "overlap": overlap,
        "overlap_fraction": overlap / longest if longest else 1.0,
        "entered": new_top[~new_kept].tolist(),
        "left": prev_top[~prev_kept].tolist(),
        "spearman": spearman,
        "common": common,
        "changed": changed,
    }
