"""Benchmark: margin + top-k with alray against a plain numpy sort baseline, in the same run.

    python bench/heuristics.py [--rows 10000000] [--classes 10] [--k 1000]

Baseline: ``np.sort`` of every row, margin from the last two columns, a full stable
``np.argsort`` of the scores (stable, so that ties go by image id as the ranking contract
says), first k. Prints the best of ``--reps`` timings of each and the ratio
``baseline / alray``; exits non-zero when the two top-k disagree.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from alray import heuristics, ranking  # noqa: E402


def best_of(reps: int, fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def make_probs(rows: int, classes: int, dtype: type, seed: int) -> np.ndarray:
    p = np.random.default_rng(seed).random((rows, classes), dtype=dtype)
    p /= p.sum(axis=1, keepdims=True)
    return p


def alray_top(p: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    s = heuristics.score("margin", p)
    return ids[ranking.top_k(s, ids, k)]


def baseline_top(p: np.ndarray, ids: np.ndarray, k: int, kind: str = "stable") -> np.ndarray:
    srt = np.sort(p, axis=1)
    margin = 1.0 - (srt[:, -1].astype(np.float64) - srt[:, -2])
    return ids[np.argsort(-margin, kind=kind)[:k]]


def run(p: np.ndarray, k: int, reps: int) -> bool:
    ids = np.arange(p.shape[0], dtype=np.int64)
    t_score, _ = best_of(reps, lambda: heuristics.score("margin", p))
    t_alray, got = best_of(reps, lambda: alray_top(p, ids, k))
    t_base, want = best_of(reps, lambda: baseline_top(p, ids, k))
    t_quick, _ = best_of(reps, lambda: baseline_top(p, ids, k, kind="quicksort"))
    same_set = np.array_equal(np.sort(got), np.sort(want))
    same_order = np.array_equal(got, want)
    label = f"{p.shape[0]:,} x {p.shape[1]} {p.dtype}"
    print(f"[{label}] top-{k}")
    print(f"  alray    score('margin') + top_k : {t_alray:8.3f} s  (score alone {t_score:.3f} s)")
    print(f"  baseline sort + stable argsort   : {t_base:8.3f} s")
    print(f"  baseline sort + quicksort argsort: {t_quick:8.3f} s  (ties not by id)")
    print(f"  ratio baseline / alray           : {t_base / t_alray:8.2f}x")
    print(f"  ratio quicksort baseline / alray : {t_quick / t_alray:8.2f}x")
    verdict = {True: "OK", False: "MISMATCH"}
    print(f"  top-{k} set {verdict[same_set]}, order {verdict[same_order]}")
    return same_set and same_order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-float64", action="store_true", help="skip the float64 run")
    args = ap.parse_args()
    ok = True
    for dtype in (np.float32,) if args.no_float64 else (np.float32, np.float64):
        p = make_probs(args.rows, args.classes, dtype, args.seed)
        ok &= run(p, args.k, args.reps)
        del p
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
