"""The six model families, their prediction records, and how a record becomes one image score.

A **prediction record** is a ``dict`` of numpy arrays, one per image (see DESIGN.md):

============================  ==========================================================
family                        record (deterministic pass)
============================  ==========================================================
``classifier``                ``probs (C,)`` softmax
``tagger``                    ``probs (T,)`` sigmoid, one independent probability per tag
``detector``                  ``boxes (M,4)`` xyxy pixels, ``probs (M,C)`` per-object class
                              probabilities; optional ``scores (M,)`` detection confidence
``instance_segmentor``        detector keys + ``masks (M,H,W)`` boolean
``semantic_segmentor``        ``probs (C,H,W)`` softmax over classes, class 0 = background
``attributor``                ``boxes (M,4)``, ``probs (M,A)`` sigmoid attributes; optional
                              ``class_probs (M,C)`` and ``scores (M,)``
============================  ==========================================================

A Monte-Carlo-dropout record (``Assistant.predict_mc``) inserts a K axis right before the
class axis of ``probs``: classifier ``(K,C)``, tagger ``(K,T)``, detector/instance
``(M,K,C)``, semantic ``(K,C,H,W)``, attributor ``(M,K,A)``. Everything else is the same.

``rows`` turns a record into per-prediction probability rows ``(R, C)`` (or ``(R, K, C)``);
multi-label families (tagger, attributor) make each label a two-class row ``[p, 1 - p]``.
``image_score`` applies a heuristic to the rows and reduces them to one number per image.

>>> import numpy as np
>>> rec = {"probs": np.array([0.5, 0.3, 0.2])}
>>> rows("classifier", rec).shape
(1, 3)
>>> rows("tagger", {"probs": np.array([0.9, 0.5])}).tolist()
[[0.9, 0.09999999999999998], [0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FAMILIES: tuple[str, ...] = (
    "classifier",
    "tagger",
    "detector",
    "instance_segmentor",
    "semantic_segmentor",
    "attributor",
)
#: families whose labels are independent yes/no problems
MULTI_LABEL: frozenset[str] = frozenset({"tagger", "attributor"})
#: families that predict objects (boxes)
OBJECT_FAMILIES: frozenset[str] = frozenset({"detector", "instance_segmentor", "attributor"})
#: families with one label (set) per image, which shifting the image leaves unchanged
IMAGE_FAMILIES: frozenset[str] = frozenset({"classifier", "tagger"})
REDUCTIONS: tuple[str, ...] = ("mean", "max", "sum")

#: at most this many pixels per image become rows for semantic segmentation (a fixed stride
#: subsamples larger maps, so bald over (pixels, K, C) stays small in memory)
MAX_PIXEL_ROWS = 4096


@dataclass(frozen=True)
class Family:
    """What a family's record holds. ``probs_axes`` names the axes of ``probs``."""

    name: str
    keys: tuple[str, ...]
    optional_keys: tuple[str, ...]
    probs_axes: tuple[str, ...]
    multi_label: bool
    description: str


_SPECS: dict[str, Family] = {
    "classifier": Family("classifier", ("probs",), (), ("C",), False, "probs (C,) softmax"),
    "tagger": Family("tagger", ("probs",), (), ("T",), True, "probs (T,) sigmoid"),
    "detector": Family(
        "detector", ("boxes", "probs"), ("scores",), ("M", "C"), False,
        "boxes (M,4) xyxy, probs (M,C) softmax per object",
    ),
    "instance_segmentor": Family(
        "instance_segmentor", ("boxes", "probs", "masks"), ("scores",), ("M", "C"), False,
        "boxes (M,4) xyxy, probs (M,C) softmax per object, masks (M,H,W)",
    ),
    "semantic_segmentor": Family(
        "semantic_segmentor", ("probs",), (), ("C", "H", "W"), False,
        "probs (C,H,W) softmax over classes (class 0 = background)",
    ),
    "attributor": Family(
        "attributor", ("boxes", "probs"), ("class_probs", "scores"), ("M", "A"), True,
        "boxes (M,4) xyxy, probs (M,A) sigmoid attributes per object",
    ),
}


def check_family(family: str) -> str:
    """Return ``family`` or raise ``ValueError`` listing the valid names."""
    if family not in _SPECS:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    return family


def get_family(family: str) -> Family:
    """The :class:`Family` spec of a family name."""
    return _SPECS[check_family(family)]


def is_mc(family: str, record: dict) -> bool:
    """Whether a record carries a Monte-Carlo K axis in ``probs``."""
    spec = get_family(family)
    return np.ndim(record["probs"]) == len(spec.probs_axes) + 1


def _two_class(p: np.ndarray) -> np.ndarray:
    """Probabilities ``(..., L)`` of independent labels → ``(..., L, 2)`` rows ``[p, 1-p]``."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    return np.stack([p, 1.0 - p], axis=-1)


def pixel_stride(h: int, w: int, max_rows: int = MAX_PIXEL_ROWS) -> int:
    """The smallest stride that keeps ``ceil(h/s) * ceil(w/s) <= max_rows``."""
    s = 1
    while -(-h // s) * -(-w // s) > max_rows:
        s += 1
    return s


def rows(family: str, record: dict, *, max_pixel_rows: int = MAX_PIXEL_ROWS) -> np.ndarray:
    """Per-prediction probability rows of one record: ``(R, C)``, or ``(R, K, C)`` for MC records.

    ``R`` is 1 for a classifier, T for a tagger, M objects (detector, instance), M·A
    (attributor) or the subsampled pixel count (semantic). Rows are float64.
    """
    spec = get_family(family)
    p = np.asarray(record["probs"], dtype=np.float64)
    mc = p.ndim == len(spec.probs_axes) + 1
    if p.ndim != len(spec.probs_axes) + int(mc):
        raise ValueError(
            f"{family} record probs must have shape {spec.probs_axes} (or with a K axis), "
            f"got {p.shape}"
        )
    if family == "classifier":
        return p[None]  # (1, C) or (1, K, C)
    if family == "tagger":
        # (T,) → (T, 2); (K, T) → (T, K, 2)
        return _two_class(p) if not mc else _two_class(p).transpose(1, 0, 2)
    if family in ("detector", "instance_segmentor"):
        return p  # (M, C) or (M, K, C)
    if family == "attributor":
        if not mc:  # (M, A) → (M·A, 2)
            return _two_class(p).reshape(-1, 2)
        m, k, a = p.shape  # (M, K, A) → (M, A, K, 2) → (M·A, K, 2)
        return _two_class(p).transpose(0, 2, 1, 3).reshape(m * a, k, 2)
    # semantic_segmentor: pixels become rows, subsampled with a fixed stride
    h, w = p.shape[-2:]
    s = pixel_stride(h, w, max_pixel_rows)
    p = p[..., ::s, ::s]
    if not mc:  # (C, h, w) → (h·w, C)
        return p.reshape(p.shape[0], -1).T
    k, c = p.shape[:2]  # (K, C, h, w) → (h·w, K, C)
    return p.reshape(k, c, -1).transpose(2, 0, 1)


def _heuristic_scores(heuristic: str, probs: np.ndarray, seed: int | None) -> np.ndarray:
    from alray import heuristics  # imported late: heuristics may import families

    if probs.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    return np.asarray(heuristics.score(heuristic, probs, seed=seed), dtype=np.float64)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; expected one of {', '.join(REDUCTIONS)}"
        )


def reduce_scores(
    scores: np.ndarray, counts: Sequence[int] | np.ndarray, reduction: str = "mean",
    empty_score: float = 0.0,
) -> np.ndarray:
    """Reduce per-prediction ``scores`` (concatenated per image, ``counts`` each) per image.

    >>> reduce_scores(np.array([1.0, 3.0, 5.0]), [2, 0, 1], "mean").tolist()
    [2.0, 0.0, 5.0]
    """
    _check_reduction(reduction)
    counts = np.asarray(counts, dtype=np.int64)
    out = np.full(len(counts), float(empty_score), dtype=np.float64)
    nonempty = counts > 0
    if not nonempty.any():
        return out
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[nonempty]
    if reduction == "max":
        red = np.maximum.reduceat(scores, starts)
    else:
        red = np.add.reduceat(scores, starts)
        if reduction == "mean":
            red = red / counts[nonempty]
    out[nonempty] = red
    return out


def image_score(
    family: str,
    record: dict,
    heuristic: str = "margin",
    reduction: str = "mean",
    empty_score: float = 0.0,
    seed: int | None = None,
) -> float:
    """One informativeness score for one image's record (higher = more informative).

    >>> import numpy as np
    >>> round(image_score("classifier", {"probs": np.array([0.5, 0.5])}), 3)
    1.0
    """
    return float(
        image_scores(family, [record], heuristic, reduction, empty_score=empty_score, seed=seed)[0]
    )


def image_scores(
    family: str,
    records: Sequence[dict],
    heuristic: str = "margin",
    reduction: str = "mean",
    empty_score: float = 0.0,
    seed: int | None = None,
) -> np.ndarray:
    """Scores of many records with one heuristic call (no Python loop per image for the
    classifier and tagger). ``heuristic="none"`` gives ``empty_score`` everywhere: those
    images are ordered by file name, not by score.
    """
    check_family(family)
    _check_reduction(reduction)
    n = len(records)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if heuristic == "none":
        return np.full(n, float(empty_score), dtype=np.float64)
    if family in ("classifier", "tagger"):
        probs = np.stack([np.asarray(r["probs"], dtype=np.float64) for r in records])
        if family == "classifier":  # (N, C) or (N, K, C): one row per image
            return _heuristic_scores(heuristic, probs, seed)
        # (N, T) → (N·T, 2); (N, K, T) → (N, T, K, 2) → (N·T, K, 2)
        t = probs.shape[-1]
        two = _two_class(probs)
        if probs.ndim == 3:
            two = two.transpose(0, 2, 1, 3)
        flat = two.reshape(n * t, *two.shape[2:])
        per = _heuristic_scores(heuristic, flat, seed)
        return reduce_scores(per, np.full(n, t), reduction, empty_score)
    parts = [rows(family, r) for r in records]
    counts = [len(p) for p in parts]
    nonempty = [p for p in parts if len(p)]
    if not nonempty:
        return np.full(n, float(empty_score), dtype=np.float64)
    per = _heuristic_scores(heuristic, np.concatenate(nonempty, axis=0), seed)
    return reduce_scores(per, counts, reduction, empty_score)


def validate_record(family: str, record: dict, *, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` saying what was expected when a record does not fit its family."""
    spec = get_family(family)
    missing = [k for k in spec.keys if k not in record]
    if missing:
        raise ValueError(
            f"{family} record is missing {', '.join(missing)}; expected {spec.description}"
        )
    p = np.asarray(record["probs"])
    if p.ndim != len(spec.probs_axes):
        raise ValueError(
            f"{family} probs must be {spec.probs_axes} ({spec.description}), got shape {p.shape}"
        )
    class_axis = {"semantic_segmentor": 0}.get(family, p.ndim - 1)
    if num_classes is not None and p.shape[class_axis] != num_classes:
        what = {"tagger": "tags", "attributor": "attributes"}.get(family, "classes")
        raise ValueError(
            f"{family} probs have {p.shape[class_axis]} {what} on axis {class_axis}, expected "
            f"{num_classes} (shape {p.shape}; expected {spec.description})"
        )
    if p.size and (not np.isfinite(p).all() or p.min() < -1e-4 or p.max() > 1 + 1e-4):
        raise ValueError(f"{family} probs must be probabilities in [0, 1]; got values "
                         f"in [{np.nanmin(p):.3g}, {np.nanmax(p):.3g}] (logits?)")
    if not spec.multi_label and p.size:
        sums = p.sum(axis=class_axis)
        if np.abs(sums - 1).max() > 1e-3:
            raise ValueError(
                f"{family} probs must sum to 1 over the classes (softmax); got sums in "
                f"[{sums.min():.3g}, {sums.max():.3g}]"
            )
    if "boxes" in spec.keys:
        b = np.asarray(record["boxes"])
        if b.ndim != 2 or b.shape[1] != 4 or b.shape[0] != p.shape[0]:
            raise ValueError(
                f"{family} boxes must be (M,4) xyxy with M = {p.shape[0]} (rows of probs), "
                f"got shape {b.shape}"
            )
    if "masks" in spec.keys:
        m = np.asarray(record["masks"])
        if m.ndim != 3 or m.shape[0] != p.shape[0]:
            raise ValueError(
                f"{family} masks must be (M,H,W) with M = {p.shape[0]}, got shape {m.shape}"
            )
