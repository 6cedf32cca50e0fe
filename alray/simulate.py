"""Learning-curve backtests: would active learning have paid off on data you already labeled?

:func:`simulate` replays labeling on a family's labeled images. A fixed test split is held out
(seeded, stratified by class for a classifier); the rest is the pool. Each seed draws
``initial`` random images from the pool, the same draw for every heuristic. Then, for each
heuristic, each round trains the family's assistant from scratch on the images "labeled" so far,
measures the family's metric (the one training reports) on the test split, ranks the rest of the
pool with the heuristic (predict → :func:`alray.families.image_scores` →
:func:`alray.ranking.top_k`) and reveals the known labels of the top ``step`` images.
``random`` is the baseline: it is what labeling without ranking looks like.

Heuristics × seeds run in parallel as Ray tasks (one CPU each); round 0 is trained once per
seed, since every heuristic starts from the same images; the decoded images are put in the
object store once and shared by every task. Written to ``out``:

- ``curve.csv``: heuristic, seed, round, labeled, metric (one row per training);
- ``picks.csv``: heuristic, seed, round, image_id: the images each round labeled (round 0 is
  the initial set, the same for every heuristic of a seed);
- ``curve.png``: mean and min–max spread per heuristic against the labeled count, with the
  metric of a model trained on the whole pool as a horizontal line;
- ``summary.csv`` / ``summary.json``: per heuristic the area under the learning curve (AULC:
  trapezoid over labeled counts divided by their range, i.e. the curve's mean height), the
  labels needed to reach 95 % of the full-data metric, and both relative to ``random``.

>>> import tempfile
>>> from alray.project import Project
>>> from alray.synthetic import generate
>>> d = tempfile.mkdtemp()
>>> coco = generate(f"{d}/imgs", 60, size=32, seed=0)
>>> p = Project.create("demo", store=f"{d}/store")
>>> _ = p.add_images(f"{d}/imgs"); _ = p.import_labels(coco=coco)
>>> sim = simulate(p, "classifier", heuristics=["margin", "random"], initial=20, step=10,
...                rounds=1, seeds=1, epochs=1, input_size=32, out=f"{d}/sim")  # doctest: +SKIP
>>> sorted(sim.summary)  # doctest: +SKIP
['margin', 'random']
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alray import families, ranking
from alray import heuristics as heuristics_mod
from alray.families import check_family

Progress = Callable[..., None]  # advance(n=1, total=None), as the CLI's progress bars take

DEFAULT_HEURISTICS: tuple[str, ...] = ("margin", "entropy", "random")
#: fraction of the full-data metric a heuristic must reach for "labels to 95 %"
TARGET_FRACTION = 0.95
BASELINE = "random"
CURVE_COLUMNS = ("heuristic", "seed", "round", "labeled", "metric")
#: heuristics a simulation cannot use: ``none`` has no scores, ``bald`` needs MC samples that
#: the eager training model does not give here
UNSUPPORTED = ("none", "bald")


@dataclass
class Simulation:
    """What :func:`simulate` measured and where it wrote it."""

    out: str
    family: str
    metric: str
    full_metric: float | None  # mean over seeds of a model trained on the whole pool
    curve: list[dict[str, Any]]  # CURVE_COLUMNS per row
    picks: list[dict[str, Any]]  # heuristic, seed, round, image_id: what each round labeled
    summary: dict[str, dict[str, Any]]  # per heuristic, in the order asked
    config: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------------- planning
def _check_heuristics(names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for h in names:
        if h in UNSUPPORTED:
            raise ValueError(
                f"heuristic {h!r} cannot be simulated; use some of "
                f"{', '.join(x for x in heuristics_mod.HEURISTICS if x not in UNSUPPORTED)}"
            )
        heuristics_mod.get(h)  # unknown names fail here, listing the known ones
        if h not in out:
            out.append(h)
    if not out:
        raise ValueError("give at least one heuristic")
    return out


def initial_sets(
    pool: np.ndarray,
    initial: int,
    seeds: int,
    base_seed: int = 0,
    classes: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per seed, ``initial`` random pool indices (sorted); with ``classes``, a draw that holds
    at least two classes (a classifier cannot train on one).

    >>> [s.tolist() for s in initial_sets(np.arange(10), 3, 2)]
    [[5, 6, 9], [4, 8, 9]]
    """
    out = []
    for s in range(seeds):
        rng = np.random.default_rng([base_seed, s])
        for _ in range(100):
            pick = np.sort(rng.choice(pool, size=initial, replace=False))
            if classes is None or len(np.unique(classes[pick])) >= 2:
                break
        out.append(pick)
    return out


def aulc(labeled: Sequence[float], metric: Sequence[float]) -> float:
    """Area under a learning curve, normalised by the labeled range: the curve's mean height
    (in metric units, so 0.8 means "as good as 0.8 all along").

    >>> aulc([10, 20, 30], [0.5, 0.7, 0.7])
    0.65
    """
    x, y = np.asarray(labeled, float), np.asarray(metric, float)
    if len(x) == 1:
        return float(y[0])
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return round(area / float(x[-1] - x[0]), 12)


def labels_to_reach(
    labeled: Sequence[float], metric: Sequence[float], target: float
) -> float | None:
    """The labeled count where a curve first reaches ``target`` (linear between points), or
    None when it never does.

    >>> labels_to_reach([100, 200, 300], [0.5, 0.7, 0.9], 0.8)
    250.0
    >>> labels_to_reach([100, 200], [0.5, 0.6], 0.8) is None
    True
    """
    x, y = np.asarray(labeled, float), np.asarray(metric, float)
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0:
                return float(x[0])
            frac = (target - y[i - 1]) / (y[i] - y[i - 1])
            return round(float(x[i - 1] + frac * (x[i] - x[i - 1])), 6)
    return None


# ------------------------------------------------------------------------------ Ray tasks
def _epochs(family: str, n_train: int, epochs: int | None, samples: int | None) -> int:
    from alray.training import default_epochs

    if epochs is not None:
        return epochs
    if samples is not None:  # the same rule as training's default, for another image budget
        return int(min(100, max(3, math.ceil(samples / max(n_train, 1)))))
    return default_epochs(family, n_train)


def _train_eval(
    data: Any,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    seed: int,
    epochs: int | None,
    samples: int | None,
    device: str,
) -> tuple[Any, float]:
    """A fresh model trained on ``train_idx`` (same seed: same init and batches) and its test
    metric."""
    import torch

    from alray.training import evaluate, fit, make_model

    torch.manual_seed(seed)
    model = make_model(data)
    n_epochs = _epochs(data.family, len(train_idx), epochs, samples)
    fit(model, data, train_idx, epochs=n_epochs, seed=seed, device=device)
    _, value = evaluate(model, data, test_idx, device)
    return model, value


def _train_in_task(
    data: Any, idx: np.ndarray, test_idx: np.ndarray, seed: int, epochs: int | None,
    samples: int | None, opts: dict[str, Any], queue: Any,
) -> tuple[Any, float | None]:
    """:func:`_train_eval` inside a Ray task of one CPU, reported to the progress queue; a NaN
    metric becomes None."""
    import torch

    from alray.assistants import select_device

    torch.set_num_threads(1)  # one CPU per task: the tasks are the parallelism
    model, value = _train_eval(
        data, idx, test_idx, seed, epochs, samples, select_device(opts["device"])
    )
    _report(queue)
    return model, _clean(value)


def _first_task(
    data: Any, seed: int, start: np.ndarray, test_idx: np.ndarray, opts: dict[str, Any],
    queue: Any,
) -> tuple[dict[str, Any], float | None]:
    """Round 0 of a seed, the same for every heuristic, so trained once: the model's weights
    (on the CPU) and its test metric."""
    model, value = _train_in_task(
        data, np.sort(start), test_idx, seed, opts["epochs"], opts["samples"], opts, queue
    )
    return {k: v.cpu() for k, v in model.state_dict().items()}, value


def _curve_task(
    data: Any,
    heuristic: str,
    seed: int,
    start: np.ndarray,
    pool: np.ndarray,
    test_idx: np.ndarray,
    opts: dict[str, Any],
    queue: Any,
    first: tuple[dict[str, Any], float | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One learning curve: round 0 is ``first`` (:func:`_first_task`'s model of ``start``),
    then ``rounds`` trainings, labeling ``step`` images before each. Returns the curve's rows
    and the picks (the images labeled before each round's training; round 0 is the initial
    set)."""
    import torch

    from alray.assistants import select_device
    from alray.training import make_model, predict_records

    torch.set_num_threads(1)  # one CPU per task: the tasks are the parallelism
    device = select_device(opts["device"])
    ids = np.asarray(data.image_ids)
    labeled = np.sort(start)
    rows: list[dict[str, Any]] = []
    picks = [
        {"heuristic": heuristic, "seed": seed, "round": 0, "image_id": ids[i]} for i in labeled
    ]
    for r in range(opts["rounds"] + 1):
        if r == 0:
            model = make_model(data)
            model.load_state_dict(first[0])
            model.to(device).eval()
            value: float | None = first[1]
        else:
            model, value = _train_in_task(
                data, labeled, test_idx, seed, opts["epochs"], opts["samples"], opts, queue
            )
        rows.append(
            {
                "heuristic": heuristic,
                "seed": seed,
                "round": r,
                "labeled": int(len(labeled)),
                "metric": value,
            }
        )
        if r == opts["rounds"]:
            break
        rest = np.setdiff1d(pool, labeled)
        records = predict_records(model, data, rest, device)
        scores = families.image_scores(
            data.family, records, heuristic, opts["reduction"], seed=seed * 1000 + r
        )
        picked = rest[ranking.top_k(scores, ids[rest], opts["step"])]
        picks += [
            {"heuristic": heuristic, "seed": seed, "round": r + 1, "image_id": ids[i]}
            for i in picked
        ]
        labeled = np.sort(np.concatenate([labeled, picked]))
    return rows, picks


def _full_task(
    data: Any, seed: int, pool: np.ndarray, test_idx: np.ndarray, opts: dict[str, Any], queue: Any
) -> float | None:
    """The metric of a model trained on the whole pool: the ceiling the curves aim at."""
    _, value = _train_in_task(
        data, pool, test_idx, seed, opts["full_epochs"], opts["full_samples"], opts, queue
    )
    return value


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _report(queue: Any) -> None:
    if queue is not None:
        with contextlib.suppress(Exception):  # a full or gone queue must never stop the work
            queue.put_nowait(1)


# ------------------------------------------------------------------------------- simulate
def simulate(
    project: Any,
    family: str,
    *,
    heuristics: Sequence[str] = DEFAULT_HEURISTICS,
    initial: int = 100,
    step: int = 50,
    rounds: int = 5,
    seeds: int = 3,
    test_fraction: float = 0.2,
    out: str = "simulation",
    epochs: int | None = None,
    samples: int | None = None,
    full_data: bool = True,
    full_runs: int | None = None,
    input_size: int | tuple[int, int] = 64,
    reduction: str = "mean",
    seed: int = 0,
    device: str = "cpu",
    progress: Progress | None = None,
    data: Any = None,
) -> Simulation:
    """Backtest heuristics on a project's labeled images of ``family``; write and return the
    learning curves and their summary (see the module docstring).

    ``epochs`` fixes the epochs of every training; else ``samples`` sets the images seen per
    training (epochs = samples / labeled, 3 to 100); else training's default
    (:func:`alray.training.default_epochs`). ``full_data=False`` skips the whole-pool
    training (then there is no 95 % target); ``full_runs`` trains it that many times (with the
    first seeds; default: once per seed) and takes the mean. ``progress(n, total=None)`` gets
    one step per training. ``data`` may pass an already loaded
    :class:`alray.training.LabeledSet`.
    """
    from alray.training import MIN_LABELED_IMAGES, load_labeled, split_indices

    t0 = time.perf_counter()
    check_family(family)
    names = _check_heuristics(heuristics)
    if reduction not in families.REDUCTIONS:
        raise ValueError(
            f"unknown reduction {reduction!r}; use one of {', '.join(families.REDUCTIONS)}"
        )
    for what, v, low in (
        ("initial", initial, 2),
        ("step", step, 1),
        ("rounds", rounds, 0),
        ("seeds", seeds, 1),
    ):
        if v < low:
            raise ValueError(f"{what} must be >= {low}, got {v}")
    if data is None:
        data = load_labeled(project, family, input_size)
    n = len(data.image_ids)
    strata = data.y if family == "classifier" else None
    train_part, test_idx = split_indices(n, test_fraction, seed, strata)
    need = initial + rounds * step
    if n < MIN_LABELED_IMAGES or len(train_part) < need:
        raise ValueError(
            f"{family}: {n} labeled images give a pool of {len(train_part)} after holding out "
            f"{len(test_idx)} for testing, but initial + rounds × step = {initial} + "
            f"{rounds} × {step} = {need} are needed; label more images or lower "
            "--initial/--step/--rounds"
        )
    starts = initial_sets(train_part, initial, seeds, seed, strata)
    seed_list = [seed + s for s in range(seeds)]
    opts = {
        "rounds": rounds,
        "step": step,
        "epochs": epochs,
        "samples": samples,
        "reduction": reduction,
        "device": device,
        # the full-data model gets training's own budget unless epochs are fixed: it is
        # the metric `alray train` would reach with every label
        "full_epochs": epochs,
        "full_samples": None,
    }
    n_full = (seeds if full_runs is None else max(0, full_runs)) if full_data else 0
    full_seeds = [seed + s for s in range(n_full)]
    curves, fulls = _run_on_ray(
        data, names, seed_list, starts, train_part, test_idx, opts, full_seeds, progress
    )

    def order(r: dict[str, Any]) -> tuple[int, int, int]:
        return names.index(r["heuristic"]), r["seed"], r["round"]

    rows = sorted((r for c, _ in curves for r in c), key=order)
    picks = sorted((r for _, c in curves for r in c), key=order)
    full_values = [v for v in fulls if v is not None]
    full = float(np.mean(full_values)) if full_values else None
    from alray.metrics import METRIC_NAMES

    config = {
        "family": family,
        "heuristics": names,
        "initial": initial,
        "step": step,
        "rounds": rounds,
        "seeds": seed_list,
        "test_fraction": test_fraction,
        "labeled_images": n,
        "pool": int(len(train_part)),
        "test_images": int(len(test_idx)),
        "epochs": epochs,
        "samples": samples,
        "input_size": list(data.input_size),
        "reduction": reduction,
        "device": device,
        "full_data_runs": fulls,
    }
    sim = Simulation(
        out, family, METRIC_NAMES[family], full, rows, picks, summarize(rows, names, full), config
    )
    sim.seconds = round(time.perf_counter() - t0, 1)
    config["seconds"] = sim.seconds
    write(sim)
    return sim


def _run_on_ray(
    data: Any,
    names: list[str],
    seed_list: list[int],
    starts: list[np.ndarray],
    pool: np.ndarray,
    test_idx: np.ndarray,
    opts: dict[str, Any],
    full_seeds: list[int],
    progress: Progress | None,
) -> tuple[list[tuple[list, list]], list[float | None]]:
    import ray

    from alray._ray import ensure_ray

    ensure_ray()
    data_ref = ray.put(data)  # shipped once; every task reads the same object
    queue = None
    if progress is not None:
        from ray.util.queue import Queue

        queue = Queue(maxsize=100_000, actor_options={"num_cpus": 0})
        progress(
            0,
            len(seed_list) * (1 + len(names) * opts["rounds"]) + len(full_seeds),
        )
    curve = ray.remote(_curve_task).options(num_cpus=1, max_retries=0)
    first = ray.remote(_first_task).options(num_cpus=1, max_retries=0)
    full = ray.remote(_full_task).options(num_cpus=1, max_retries=0)
    # the curves wait for their seed's round 0: submit those first; then the full-data
    # trainings, the longest, so they do not finish last
    first_refs = [
        first.remote(data_ref, s, start, test_idx, opts, queue)
        for s, start in zip(seed_list, starts, strict=True)
    ]
    full_refs = [full.remote(data_ref, s, pool, test_idx, opts, queue) for s in full_seeds]
    curve_refs = [
        curve.remote(data_ref, h, s, start, pool, test_idx, opts, queue, f)
        for s, start, f in zip(seed_list, starts, first_refs, strict=True)
        for h in names
    ]
    pending = full_refs + first_refs + curve_refs
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
            if queue is not None:
                _drain(queue, progress)
        return ray.get(curve_refs), ray.get(full_refs)
    except BaseException:
        for ref in full_refs + first_refs + curve_refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    finally:
        if queue is not None:
            _drain(queue, progress)
            with contextlib.suppress(Exception):
                queue.shutdown()


def _drain(queue: Any, progress: Progress) -> None:
    try:
        n = len(queue.get_nowait_batch(queue.qsize())) if queue.qsize() else 0
    except Exception:
        return
    if n:
        progress(n)


# -------------------------------------------------------------------------------- summary
def summarize(
    rows: Sequence[dict[str, Any]], names: Sequence[str], full: float | None
) -> dict[str, dict[str, Any]]:
    """Per heuristic: mean/std/per-seed AULC, labels to reach 95 % of ``full`` (on the mean
    curve), and both against ``random`` (AULC difference, paired seed wins, labels ratio)."""
    target = TARGET_FRACTION * full if full is not None else None
    per: dict[str, dict[str, Any]] = {}
    for h in names:
        mine = [r for r in rows if r["heuristic"] == h and r["metric"] is not None]
        by_seed: dict[int, list[dict]] = {}
        for r in mine:
            by_seed.setdefault(r["seed"], []).append(r)
        seed_aulc = {
            s: aulc([r["labeled"] for r in rs], [r["metric"] for r in rs])
            for s, rs in sorted(by_seed.items())
        }
        xs = sorted({r["labeled"] for r in mine})
        mean_curve = [float(np.mean([r["metric"] for r in mine if r["labeled"] == x])) for x in xs]
        values = list(seed_aulc.values())
        per[h] = {
            "heuristic": h,
            "aulc": float(np.mean(values)) if values else None,
            "aulc_std": float(np.std(values)) if values else None,
            "aulc_per_seed": seed_aulc,
            "final_metric": mean_curve[-1] if mean_curve else None,
            "labels_to_95": (
                labels_to_reach(xs, mean_curve, target) if target is not None and xs else None
            ),
        }
    base = per.get(BASELINE)
    for h, s in per.items():
        s["aulc_vs_random"] = s["labels_vs_random"] = s["wins_vs_random"] = None
        if base is None or h == BASELINE:
            continue
        if s["aulc"] is not None and base["aulc"] is not None:
            s["aulc_vs_random"] = s["aulc"] - base["aulc"]
            common = set(s["aulc_per_seed"]) & set(base["aulc_per_seed"])
            wins = sum(s["aulc_per_seed"][k] > base["aulc_per_seed"][k] for k in common)
            s["wins_vs_random"] = f"{wins}/{len(common)}"
        if s["labels_to_95"] and base["labels_to_95"]:
            s["labels_vs_random"] = s["labels_to_95"] / base["labels_to_95"]
    return per


# ---------------------------------------------------------------------------------- output
SUMMARY_COLUMNS = (
    "heuristic",
    "aulc",
    "aulc_std",
    "aulc_vs_random",
    "wins_vs_random",
    "final_metric",
    "labels_to_95",
    "labels_vs_random",
)


def write(sim: Simulation) -> dict[str, str]:
    """Write curve.csv, picks.csv, summary.csv, summary.json and curve.png under ``sim.out``."""
    os.makedirs(sim.out, exist_ok=True)
    files = {
        k: os.path.join(sim.out, f)
        for k, f in (
            ("curve", "curve.csv"),
            ("picks", "picks.csv"),
            ("summary_csv", "summary.csv"),
            ("summary_json", "summary.json"),
            ("plot", "curve.png"),
        )
    }
    with _atomic(files["curve"]) as f:
        w = csv.DictWriter(f, CURVE_COLUMNS)
        w.writeheader()
        w.writerows({**r, "metric": "" if r["metric"] is None else r["metric"]} for r in sim.curve)
    with _atomic(files["picks"]) as f:
        w = csv.DictWriter(f, ("heuristic", "seed", "round", "image_id"))
        w.writeheader()
        w.writerows(sim.picks)
    with _atomic(files["summary_csv"]) as f:
        w = csv.DictWriter(f, SUMMARY_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(
            {k: ("" if v is None else v) for k, v in s.items()} for s in sim.summary.values()
        )
    doc = {
        "family": sim.family,
        "metric": sim.metric,
        "full_data_metric": sim.full_metric,
        "target_fraction": TARGET_FRACTION,
        "heuristics": list(sim.summary.values()),
        "config": sim.config,
    }
    with _atomic(files["summary_json"]) as f:
        json.dump(doc, f, indent=2)
    plot(sim, files["plot"])
    sim.files = files
    return files


@contextlib.contextmanager
def _atomic(path: str) -> Iterator[Any]:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        yield f
    os.replace(tmp, path)


def plot(sim: Simulation, path: str) -> str:
    """Mean learning curve per heuristic with its min–max spread over seeds, and the
    full-data metric (and its 95 %) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for h in sim.summary:
        mine = [r for r in sim.curve if r["heuristic"] == h and r["metric"] is not None]
        xs = sorted({r["labeled"] for r in mine})
        if not xs:
            continue
        vals = [[r["metric"] for r in mine if r["labeled"] == x] for x in xs]
        mean = [float(np.mean(v)) for v in vals]
        a = sim.summary[h]["aulc"]
        (line,) = ax.plot(
            xs,
            mean,
            marker="o",
            ms=3,
            label=f"{h} (AULC {a:.3f})" if a is not None else h,
            ls="--" if h == BASELINE else "-",
        )
        ax.fill_between(
            xs,
            [min(v) for v in vals],
            [max(v) for v in vals],
            color=line.get_color(),
            alpha=0.15,
            lw=0,
        )
    if sim.full_metric is not None:
        ax.axhline(
            sim.full_metric,
            color="black",
            lw=1,
            label=f"all {sim.config['pool']} labels ({sim.full_metric:.3f})",
        )
        ax.axhline(
            TARGET_FRACTION * sim.full_metric,
            color="black",
            lw=0.8,
            ls=":",
            label=f"{TARGET_FRACTION:.0%} of that",
        )
    seeds = len(sim.config["seeds"])
    ax.set_xlabel("labeled images")
    ax.set_ylabel(f"test {sim.metric} ({sim.config['test_images']} images)")
    ax.set_title(
        f"{sim.family}: learning curves, mean and spread over {seeds} "
        f"seed{'s' if seeds > 1 else ''}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------ folder + labels
@contextlib.contextmanager
def temporary_project(
    images: str,
    *,
    coco: str | None = None,
    csv: str | None = None,
    image_folder: bool = False,
    skip_invalid: bool = False,
    progress: Progress | None = None,
) -> Iterator[Any]:
    """A throwaway project (in a temporary store, removed afterwards) holding a folder of
    images and their labels: COCO JSON, CSV ``image,label``, or the folder itself as
    class-per-folder (``image_folder=True``).

    >>> with temporary_project("imgs", coco="imgs/labels.json") as p:  # doctest: +SKIP
    ...     sim = simulate(p, "classifier")
    """
    from alray.project import Project

    if sum(bool(x) for x in (coco, csv, image_folder)) != 1:
        raise ValueError("give exactly one label source: coco, csv or image_folder")
    store = tempfile.mkdtemp(prefix="alray-simulate-")
    try:
        p = Project.create("simulate", store=store)
        p.add_images(images, progress=progress)
        p.import_labels(
            coco=coco,
            csv=csv,
            image_folder=images if image_folder else None,
            skip_invalid=skip_invalid,
        )
        yield p
    finally:
        shutil.rmtree(store, ignore_errors=True)


__all__ = [
    "DEFAULT_HEURISTICS",
    "Simulation",
    "aulc",
    "initial_sets",
    "labels_to_reach",
    "plot",
    "simulate",
    "summarize",
    "temporary_project",
    "write",
]
