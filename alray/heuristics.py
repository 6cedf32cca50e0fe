"""Informativeness heuristics: turn a model's class probabilities into one score per row.

Higher scores mean more informative (label these first). ``probs`` is ``(N, C)`` class
probabilities or ``(N, K, C)`` with K Monte-Carlo-dropout samples; every heuristic except
``bald`` averages over K first. With p(1) >= p(2) the two largest probabilities of a row:

============================  ================================================
``margin`` (default)          1 - (p(1) - p(2))
``least_confidence``          1 - p(1)
``ratio``                     p(2) / p(1)
``entropy``                   -sum p ln p (nats)
``variance``                  1 - Var(p) / ((C-1)/C^2), population variance
``bald``                      H(mean_k p_k) - mean_k H(p_k) (nats), needs K >= 2
``random``                    seeded uniform [0, 1)
``none``                      no score: order images by file name
============================  ================================================

``score("none", ...)`` raises ``ValueError``: that heuristic turns ranking off, and the caller
orders images with :func:`alray.ranking.alphabetical` instead.

Inputs that are not probabilities (NaN, infinite or negative values, rows not summing to 1
within 1e-3, wrong number of dimensions, fewer than two classes) raise ``ValueError`` naming
the problem; raw model outputs are accepted with ``logits=True`` (softmaxed here).

>>> import numpy as np
>>> from alray import heuristics
>>> p = np.array([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
>>> heuristics.score("margin", p)
array([0.75, 0.  ])
>>> heuristics.score("least_confidence", p)
array([0.5, 0. ])

Many predictions per image (boxes, pixels) reduce to one score per image:

>>> heuristics.score("margin", p, reduction="max", counts=[2, 0])
array([0.75, 0.  ])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import numpy as np

__all__ = [
    "BALD",
    "DEFAULT_HEURISTIC",
    "HEURISTICS",
    "REDUCTIONS",
    "SUM_TOLERANCE",
    "Entropy",
    "Heuristic",
    "LeastConfidence",
    "Margin",
    "NoHeuristic",
    "Random",
    "Ratio",
    "Variance",
    "get",
    "multilabel_rows",
    "reduce",
    "score",
    "score_multilabel",
]

DEFAULT_HEURISTIC = "margin"
REDUCTIONS = ("mean", "max", "sum")
SUM_TOLERANCE = 1e-3  # rows must sum to 1 within this

SeedLike = int | np.random.SeedSequence | np.random.Generator | None

# Row-chunking keeps temporaries in cache and bounded in memory on 10M-row inputs.
_CHUNK_ELEMENTS = 1 << 18
# Validation does less work per element, so smaller chunks stay in L2 between its two reads.
_CHECK_CHUNK_ELEMENTS = 1 << 16
# Transposed chunk for the running top-2 (measured best around half a MiB).
_TOP2_CHUNK_BYTES = 1 << 19
# Up to this many classes a column-wise running top-2 beats np.partition along short rows.
_COLUMN_LOOP_MAX_CLASSES = 32


# --------------------------------------------------------------------------- input checks


def _as_float(values: object, what: str) -> np.ndarray:
    a = np.asarray(values)
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind != "f":
        raise ValueError(f"{what} must be a numeric array, got dtype {a.dtype}")
    if a.dtype.itemsize < 4:  # float16: too coarse to rank with
        return a.astype(np.float32)
    return a


def _first(mask: np.ndarray) -> int:
    """Index of the first image (axis 0) where ``mask`` is true anywhere."""
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def _check_probs(p: np.ndarray, what: str = "probs") -> None:
    """Raise ValueError unless every row of ``p`` (last axis) is a probability vector.

    The fast path reads each cache-sized chunk from memory once: its min (NaN propagates
    through min) and its row sums through BLAS. The slower diagnosis runs only when
    something is wrong.
    """
    if p.size == 0:
        return
    c = p.shape[-1]
    flat = p.reshape(-1, c)
    ones = np.ones(c, dtype=p.dtype)
    lo_sum, hi_sum = 1 - SUM_TOLERANCE, 1 + SUM_TOLERANCE
    for s, e in _row_chunks(flat.shape[0], c, chunk_elements=_CHECK_CHUNK_ELEMENTS):
        q = flat[s:e]
        if not q.min() >= 0:
            break
        sums = q @ ones
        if not (sums.min() >= lo_sum and sums.max() <= hi_sum):
            break
    else:
        return
    _diagnose(p, what)


def _diagnose(p: np.ndarray, what: str) -> None:
    """Raise the ValueError that names what is wrong with ``p`` (first offending row)."""
    hint = "; pass logits=True for raw model outputs"
    if np.isnan(p).any():
        raise ValueError(f"{what} contain NaN (first in row {_first(np.isnan(p))})")
    if np.isinf(p).any():
        raise ValueError(f"{what} contain infinite values (first in row {_first(np.isinf(p))})")
    if (p < 0).any():
        row = _first(p < 0)
        raise ValueError(
            f"{what} contain negative values (first in row {row}: {p[row].min():.6g}){hint}"
        )
    sums = p.sum(axis=-1, dtype=np.float64)
    bad = np.abs(sums - 1) > SUM_TOLERANCE
    if not bad.any():  # the fast path's float32 sums were off by rounding only: accept
        return
    row = _first(bad)
    worst = sums[row].flat[int(np.argmax(np.abs(sums[row] - 1)))] if sums.ndim > 1 else sums[row]
    raise ValueError(
        f"{what} rows must sum to 1 within {SUM_TOLERANCE:g} (row {row} sums to {worst:.6g}){hint}"
    )


def _check_finite(x: np.ndarray, what: str) -> None:
    if x.size and not np.isfinite(x).all():
        raise ValueError(
            f"{what} contain NaN or infinite values (first in row {_first(~np.isfinite(x))})"
        )


def _softmax(x: np.ndarray) -> np.ndarray:
    _check_finite(x, "logits")
    if x.size == 0:
        return x
    z = x - x.max(axis=-1, keepdims=True)  # shift so exp never overflows
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _sigmoid(x: np.ndarray) -> np.ndarray:
    _check_finite(x, "logits")
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + e^-x) without overflow for large |x|


def _check_shape(p: np.ndarray, name: str, samples: bool) -> None:
    if p.ndim not in (2, 3):
        raise ValueError(f"probs must be a 2-D (N, C) or 3-D (N, K, C) array, got shape {p.shape}")
    if p.shape[-1] < 2:
        raise ValueError(f"probs need at least 2 classes (C >= 2), got shape {p.shape}")
    if samples and (p.ndim != 3 or p.shape[1] < 2):
        raise ValueError(
            f"{name} needs (N, K, C) probs with K >= 2 Monte-Carlo samples, got shape {p.shape}"
        )
    if p.ndim == 3 and p.shape[1] < 1:
        raise ValueError(f"probs need at least one sample (K >= 1), got shape {p.shape}")


def _check_how(how: str) -> None:
    if how not in REDUCTIONS:
        raise ValueError(f"unknown reduction {how!r}; known: {', '.join(REDUCTIONS)}")


# --------------------------------------------------------------------------- row kernels


def _row_chunks(
    n: int, row_elements: int, minimum: int = 1, chunk_elements: int = _CHUNK_ELEMENTS
) -> Iterator[tuple[int, int]]:
    rows = max(minimum, chunk_elements // max(1, row_elements))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def _top2(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second largest value of each row of ``p`` (N, C), in ``p``'s dtype.

    No full sort: for few classes a running top-2 over the columns of a transposed,
    cache-sized chunk (contiguous SIMD ufuncs); for many classes np.partition per chunk.
    """
    n, c = p.shape
    m1 = np.empty(n, dtype=p.dtype)
    m2 = np.empty(n, dtype=p.dtype)
    if c > _COLUMN_LOOP_MAX_CLASSES:
        for s, e in _row_chunks(n, c):
            part = np.partition(p[s:e], c - 2, axis=1)
            m1[s:e] = part[:, c - 1]
            m2[s:e] = part[:, c - 2]
        return m1, m2
    rows = max(1024, _TOP2_CHUNK_BYTES // (c * p.itemsize))
    buf = np.empty((c, min(rows, n)), dtype=p.dtype)
    tmp = np.empty(min(rows, n), dtype=p.dtype)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        cols, t = buf[:, : e - s], tmp[: e - s]
        cols[...] = p[s:e].T
        a, b = m1[s:e], m2[s:e]
        np.maximum(cols[0], cols[1], out=a)
        np.minimum(cols[0], cols[1], out=b)
        for j in range(2, c):
            # invariant a >= b: the new second is max(b, min(a, x)); ties keep both
            np.minimum(a, cols[j], out=t)
            np.maximum(b, t, out=b)
            np.maximum(a, cols[j], out=a)
    return m1, m2


def _entropy(q: np.ndarray) -> np.ndarray:
    """-sum p ln p over the last axis in float64, with 0 ln 0 = 0."""
    q = q.astype(np.float64, copy=False)
    logs = np.zeros_like(q)
    np.log(q, out=logs, where=q > 0)
    logs *= q
    return -logs.sum(axis=-1)


# --------------------------------------------------------------------------- heuristics


class Heuristic:
    """One informativeness heuristic; ``compute`` maps validated rows to float64 scores.

    ``compute`` receives ``(N, C)`` rows (the K Monte-Carlo samples already averaged), or
    ``(N, K, C)`` when the class sets ``samples = True``. Calling the instance validates
    ``probs`` first.

    >>> import numpy as np
    >>> Margin()(np.array([[0.5, 0.25, 0.25]]))
    array([0.75])
    """

    name: ClassVar[str] = ""
    samples: ClassVar[bool] = False  # True: compute gets the (N, K, C) samples

    def __init__(self, seed: SeedLike = None) -> None:
        self.seed = seed

    def compute(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, probs: object, *, logits: bool = False) -> np.ndarray:
        return self.compute(_prepare(probs, heuristic=self, logits=logits))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Margin(Heuristic):
    """1 - (p(1) - p(2)): small gap between the two best classes = informative."""

    name = "margin"

    def compute(self, p: np.ndarray) -> np.ndarray:
        m1, m2 = _top2(p)
        out = np.subtract(m2, m1, dtype=np.float64)  # exact for float32 inputs
        out += 1.0
        return out


class LeastConfidence(Heuristic):
    """1 - p(1)."""

    name = "least_confidence"

    def compute(self, p: np.ndarray) -> np.ndarray:
        top = p.max(axis=1) if p.shape[1] > _COLUMN_LOOP_MAX_CLASSES else _top2(p)[0]
        return np.subtract(1.0, top, dtype=np.float64)


class Ratio(Heuristic):
    """p(2) / p(1) (p(1) >= 1/C > 0 for probability rows)."""

    name = "ratio"

    def compute(self, p: np.ndarray) -> np.ndarray:
        m1, m2 = _top2(p)
        return np.divide(m2, m1, dtype=np.float64)


class Entropy(Heuristic):
    """-sum p ln p, in nats."""

    name = "entropy"

    def compute(self, p: np.ndarray) -> np.ndarray:
        out = np.empty(p.shape[0])
        for s, e in _row_chunks(p.shape[0], p.shape[1]):
            out[s:e] = _entropy(p[s:e])
        return out


class Variance(Heuristic):
    """1 - Var(p) / ((C-1)/C^2): 0 for a one-hot row (the largest variance), 1 for uniform."""

    name = "variance"

    def compute(self, p: np.ndarray) -> np.ndarray:
        c = p.shape[1]
        out = np.empty(p.shape[0])
        for s, e in _row_chunks(p.shape[0], c):
            out[s:e] = p[s:e].var(axis=1, dtype=np.float64)
        out *= -(c * c) / (c - 1)
        out += 1.0
        return out


class BALD(Heuristic):
    """H(mean_k p_k) - mean_k H(p_k): disagreement between Monte-Carlo samples (nats)."""

    name = "bald"
    samples = True

    def compute(self, p: np.ndarray) -> np.ndarray:
        out = np.empty(p.shape[0])
        for s, e in _row_chunks(p.shape[0], p.shape[1] * p.shape[2]):
            q = p[s:e].astype(np.float64, copy=False)
            out[s:e] = _entropy(q.mean(axis=1)) - _entropy(q).mean(axis=1)
        np.maximum(out, 0.0, out=out)  # mutual information is >= 0; clip rounding noise
        return out


class Random(Heuristic):
    """Seeded uniform [0, 1): the same seed and row count give the same scores."""

    name = "random"

    def draw(self, n: int) -> np.ndarray:
        return np.random.default_rng(self.seed).random(n)

    def compute(self, p: np.ndarray) -> np.ndarray:
        return self.draw(p.shape[0])


class NoHeuristic(Heuristic):
    """``none``: ranking is off; images order by file name (alray.ranking.alphabetical)."""

    name = "none"

    def compute(self, p: np.ndarray) -> np.ndarray:
        raise _no_score()

    def __call__(self, probs: object, *, logits: bool = False) -> np.ndarray:
        raise _no_score()


def _no_score() -> ValueError:
    return ValueError(
        "heuristic 'none' gives no score: order images by file name with "
        "alray.ranking.alphabetical(file_names, image_ids)"
    )


HEURISTICS: dict[str, type[Heuristic]] = {
    cls.name: cls
    for cls in (Margin, LeastConfidence, Ratio, Entropy, Variance, BALD, Random, NoHeuristic)
}


def get(name: str, *, seed: SeedLike = None) -> Heuristic:
    """The heuristic called ``name``; ``ValueError`` listing the known names otherwise.

    >>> get("entropy")
    Entropy()
    """
    try:
        cls = HEURISTICS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown heuristic {name!r}; known: {', '.join(HEURISTICS)}") from None
    return cls(seed=seed)


def _prepare(
    probs: object, *, heuristic: Heuristic, logits: bool, validate: bool = True
) -> np.ndarray:
    p = _as_float(probs, "probs")
    _check_shape(p, heuristic.name, heuristic.samples)
    if logits:
        p = _softmax(p)
    elif validate:
        _check_probs(p)
    if p.ndim == 3 and not heuristic.samples:
        p = p.mean(axis=1, dtype=np.float64)
    return p


# --------------------------------------------------------------------------- public API


def score(
    name: str,
    probs: object,
    *,
    reduction: str | None = None,
    counts: Sequence[int] | np.ndarray | None = None,
    seed: SeedLike = None,
    logits: bool = False,
    empty: float = 0.0,
) -> np.ndarray:
    """Informativeness of each row of ``probs`` (float64, higher = more informative).

    ``probs``: ``(N, C)`` probabilities, or ``(N, K, C)`` Monte-Carlo samples. With
    ``logits=True`` the last axis is softmaxed instead of being checked as probabilities.

    Without ``reduction`` and ``counts``: one score per row, shape ``(N,)``. With them the
    rows are predictions of images and the result has one score per image: ``counts[i]``
    consecutive rows belong to image ``i`` (shape ``(len(counts),)``; ``reduction`` defaults
    to ``"mean"`` then); ``reduction`` without ``counts`` treats all rows as one image (shape
    ``(1,)``). An image without predictions scores ``empty``. ``random`` draws one value per
    output score rather than reducing per-prediction draws.

    ``name="none"`` raises ``ValueError``: order by file name (alray.ranking.alphabetical).

    >>> import numpy as np
    >>> p = np.array([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]])
    >>> score("margin", p)
    array([1. , 0.5, 0. ])
    >>> score("margin", p, reduction="mean", counts=[2, 1, 0], empty=-1.0)
    array([ 0.75,  0.  , -1.  ])
    >>> score("least_confidence", np.array([[2.0, 2.0]]), logits=True)
    array([0.5])
    >>> score("bald", np.array([[[1.0, 0.0], [0.0, 1.0]]])).round(4)  # ln 2
    array([0.6931])
    """
    h = get(name, seed=seed)
    if reduction is not None:
        _check_how(reduction)
    if isinstance(h, NoHeuristic):
        raise _no_score()
    if reduction is None and counts is None:
        return h(probs, logits=logits)
    how = reduction or "mean"
    n_images = 1 if counts is None else len(counts)
    if isinstance(h, Random):
        _prepare(probs, heuristic=h, logits=logits)  # bad input still raises
        if counts is not None:
            _counts_for(len(np.asarray(probs)), counts)
        return h.draw(n_images)
    per_row = h(probs, logits=logits)
    return reduce(per_row, [per_row.shape[0]] if counts is None else counts, how, empty=empty)


def multilabel_rows(p: np.ndarray) -> np.ndarray:
    """Each label probability as the two-class row ``[p, 1 - p]``: ``(..., T) -> (..., T, 2)``.

    >>> multilabel_rows(np.array([[0.75, 0.0]]))
    array([[[0.75, 0.25],
            [0.  , 1.  ]]])
    """
    p = np.asarray(p)
    return np.stack([p, 1 - p], axis=-1)


def score_multilabel(
    name: str,
    probs: object,
    *,
    reduction: str | None = "mean",
    counts: Sequence[int] | np.ndarray | None = None,
    seed: SeedLike = None,
    logits: bool = False,
    empty: float = 0.0,
) -> np.ndarray:
    """Multi-label (sigmoid) informativeness: each label is the two-class problem [p, 1-p].

    ``probs``: ``(N, T)`` label probabilities or ``(N, K, T)`` Monte-Carlo samples; with
    ``logits=True`` a sigmoid is applied. Per-label scores are reduced over the T labels of a
    row by ``reduction`` (shape ``(N,)``; a row with no labels scores ``empty``); with
    ``reduction=None`` the per-label scores ``(N, T)`` come back. ``counts`` further reduces
    rows (objects) to images with the same reduction, as in :func:`score`.

    >>> import numpy as np
    >>> score_multilabel("margin", np.array([[0.5, 1.0], [0.75, 0.25]]))
    array([0.5, 0.5])
    >>> score_multilabel("margin", np.array([[0.5, 1.0]]), reduction="max")
    array([1.])
    """
    h = get(name, seed=seed)
    if reduction is not None:
        _check_how(reduction)
    if isinstance(h, NoHeuristic):
        raise _no_score()
    if reduction is None and counts is not None:
        raise ValueError("counts needs a reduction (one of: " + ", ".join(REDUCTIONS) + ")")
    p = _as_float(probs, "probs")
    if p.ndim not in (2, 3):
        raise ValueError(
            f"multi-label probs must be a 2-D (N, T) or 3-D (N, K, T) array, got shape {p.shape}"
        )
    if h.samples and (p.ndim != 3 or p.shape[1] < 2):
        raise ValueError(
            f"{h.name} needs (N, K, T) probs with K >= 2 Monte-Carlo samples, got shape {p.shape}"
        )
    if logits:
        p = _sigmoid(p)
    elif p.size and not (p.min() >= 0 and p.max() <= 1):
        _check_finite(p, "probs")
        row = _first((p < 0) | (p > 1))
        raise ValueError(
            f"multi-label probs must lie in [0, 1] (row {row} has values outside); "
            "pass logits=True for raw model outputs"
        )
    n, t = p.shape[0], p.shape[-1]
    if isinstance(h, Random):
        shape = (n, t) if reduction is None else (n if counts is None else len(counts),)
        if counts is not None:
            _counts_for(n, counts)
        return h.draw(int(np.prod(shape))).reshape(shape)
    rows = multilabel_rows(p)  # (N, T, 2) or (N, K, T, 2)
    if p.ndim == 3:
        rows = np.moveaxis(rows, 2, 1).reshape(n * t, p.shape[1], 2)
    else:
        rows = rows.reshape(n * t, 2)
    # [p, 1-p] sums to 1 by construction: skip the probability check.
    prepared = _prepare(rows, heuristic=h, logits=False, validate=False)
    per_label = h.compute(prepared).reshape(n, t)
    if reduction is None:
        return per_label
    per_row = _reduce_rows(per_label, reduction, empty)
    if counts is None:
        return per_row
    return reduce(per_row, counts, reduction, empty=empty)


def _reduce_rows(x: np.ndarray, how: str, empty: float) -> np.ndarray:
    if x.shape[1] == 0:
        return np.full(x.shape[0], float(empty))
    if how == "max":
        return x.max(axis=1)
    if how == "sum":
        return x.sum(axis=1)
    return x.mean(axis=1)


def _counts_for(n_rows: int, counts: object) -> np.ndarray:
    c = np.asarray(counts)
    if c.size == 0:
        c = c.astype(np.int64)
    if c.ndim != 1 or c.dtype.kind not in "iu":
        raise ValueError(f"counts must be a 1-D integer array, got {c.dtype} shape {c.shape}")
    if c.size and c.min() < 0:
        raise ValueError("counts must be >= 0")
    if int(c.sum()) != n_rows:
        raise ValueError(f"counts sum to {int(c.sum())} but there are {n_rows} scores")
    return c


def reduce(
    scores: Sequence[float] | np.ndarray,
    counts: Sequence[int] | np.ndarray | None = None,
    how: str = "mean",
    *,
    segment_ids: Sequence[int] | np.ndarray | None = None,
    n_images: int | None = None,
    empty: float = 0.0,
) -> np.ndarray:
    """One score per image from per-prediction scores, by ``how`` in ``REDUCTIONS``.

    Give either ``counts`` (image ``i`` owns the next ``counts[i]`` consecutive scores) or
    ``segment_ids`` (the image index of each score, any order; ``n_images`` defaults to
    ``max + 1``). An image with no prediction gets ``empty``.

    >>> reduce([0.25, 0.75, 0.5], [2, 0, 1], "mean")
    array([0.5, 0. , 0.5])
    >>> reduce([0.25, 0.75, 0.5], segment_ids=[2, 0, 2], n_images=4, how="max", empty=-1)
    array([ 0.75, -1.  ,  0.5 , -1.  ])
    """
    _check_how(how)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if (counts is None) == (segment_ids is None):
        raise ValueError("give exactly one of counts or segment_ids")
    if segment_ids is not None:
        ids = np.asarray(segment_ids)
        if ids.size == 0:
            ids = ids.astype(np.int64)
        if ids.shape != s.shape or ids.dtype.kind not in "iu":
            raise ValueError("segment_ids must be integers, one per score")
        if ids.size and ids.min() < 0:
            raise ValueError("segment_ids must be >= 0")
        top = int(ids.max()) + 1 if ids.size else 0
        n = top if n_images is None else int(n_images)
        if top > n:
            raise ValueError(f"segment id {top - 1} out of range for n_images={n}")
        c = np.bincount(ids, minlength=n)
        if ids.size > 1 and (ids[1:] < ids[:-1]).any():
            s = s[np.argsort(ids, kind="stable")]  # make the segments contiguous
    else:
        c = _counts_for(s.shape[0], counts)
    out = np.full(c.shape[0], float(empty))
    nonempty = np.flatnonzero(c > 0)
    if nonempty.size:
        # reduceat misbehaves on empty segments, so reduce only the non-empty ones: with the
        # empty ones dropped, each start's segment ends exactly at the next start.
        starts = (np.cumsum(c) - c)[nonempty]
        if how == "max":
            out[nonempty] = np.maximum.reduceat(s, starts)
        else:
            vals = np.add.reduceat(s, starts)
            if how == "mean":
                vals /= c[nonempty]
            out[nonempty] = vals
    return out
