"""``alray demo``: the whole product on generated images, in a few minutes on a laptop.

It generates a few thousand synthetic images in three datasets, creates a project in a local
store, imports an initial slice of classifier labels, trains the classifier assistant, shows
the ranking the coordinator generates for it, labels the images the ranking asks for (so the
coordinator retrains and re-ranks, and says ``ranks_changed``), runs a ranking on demand over
two datasets with ``entropy``, and ends with a learning-curve backtest (:mod:`alray.simulate`)
of margin vs entropy vs random. Everything goes through the functions the commands use; the
project stays in ``<out>/store`` for the user to explore.

The demo starts its own local Ray and keeps it for its lifetime: the coordinator actor lives
as long as the demo runs.

>>> result = run_demo("/tmp/alray-demo", quick=True)  # doctest: +SKIP
>>> result["model_version"] >= 2  # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PROJECT = "demo"
FAMILY = "classifier"
MARKER = ".alray-demo"  # marks a folder the demo made, so a re-run may replace it
DATASETS = ("A", "B", "C")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run (the full one measures; the quick one is for tests)."""

    images: int = 3000
    initial_labels: int = 200  # labeled before the first training (accuracy about 0.85)
    batch: int = 100  # labeled from the top of the ranking: triggers a retraining
    epochs: int | None = None  # of each assistant training (None: training's default)
    run_n: int = 10  # images in the ranks-on-demand run
    show: int = 10  # rows of the ranking shown
    # Every training gets training's full budget: shorter ones leave the model uncalibrated or
    # stuck near chance on the hard images uncertainty picks. 3 heuristics × 3 seeds, 300
    # labels + 1 round of 100 (the 300-label model is trained once per seed) + 1 full-data run
    # = 13 trainings, about 3 of the demo's 4 minutes. On this data margin and entropy both
    # beat random there on 3 of 3 seeds (measured: AULC +0.003 and +0.004).
    simulate: dict[str, Any] = field(
        default_factory=lambda: {
            "initial": 300,
            "step": 100,
            "rounds": 1,
            "seeds": 3,
            "full_runs": 1,
        }
    )
    wait_s: float = 600.0  # longest wait for the coordinator's work


QUICK = DemoConfig(
    images=150,
    initial_labels=40,
    batch=20,
    epochs=2,
    run_n=5,
    show=5,
    simulate={"initial": 20, "step": 10, "rounds": 1, "seeds": 1, "epochs": 1, "full_runs": 1},
)


class DemoError(RuntimeError):
    """The demo could not go on; the message says why and what to do."""


def _prepare_out(out: str) -> str:
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(out):
        if os.path.exists(os.path.join(out, MARKER)):
            shutil.rmtree(out)  # an earlier demo's folder: start afresh
        elif os.listdir(out):
            raise DemoError(
                f"{out} exists and is not an earlier demo's folder; choose another "
                "--out or remove it"
            )
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, MARKER), "w") as f:
        f.write("made by `alray demo`; a new demo run replaces this folder\n")
    return out


def _truth(coco_path: str) -> dict[str, str]:
    """``dataset/file_name`` → the classifier label every generated image has."""
    with open(coco_path) as f:
        coco = json.load(f)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    return {
        files[a["image_id"]]: cats[a["category_id"]] for a in coco["annotations"] if "bbox" not in a
    }


def _write_csv(path: str, labels: dict[str, str]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerows(sorted(labels.items()))
    return path


def _initial_coco(coco_path: str, keep: set[str], path: str) -> str:
    """The generated COCO cut down to the classifier labels (image-level annotations, no tags)
    of the images in ``keep``: an initial slice of labeling work."""
    with open(coco_path) as f:
        coco = json.load(f)
    images = [
        {k: v for k, v in i.items() if k != "tags"}
        for i in coco["images"]
        if i["file_name"] in keep
    ]
    ids = {i["id"] for i in images}
    anns = [a for a in coco["annotations"] if a["image_id"] in ids and "bbox" not in a]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": coco["categories"]}, f)
    return path


def _wait_for(
    client: Any,
    after: int,
    kind: str,
    timeout: float,
    model_version: int | None,
    advance: Any = None,
) -> tuple[dict[str, Any], int]:
    """The first notification of ``kind`` after id ``after`` (for ``model_version`` when
    given); every notification seen advances the bar. Returns it and the last id seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.wait_notifications(after=after, timeout=min(5.0, timeout))
        for n in found:
            after = max(after, n["id"])
            if advance is not None:
                advance(1)
            version = n["payload"].get("model_version", n["payload"].get("version"))
            if n["type"] == kind and (model_version is None or version == model_version):
                return n, after
            if n["type"] == "training_failed":
                raise DemoError(f"the coordinator's training failed: {n['payload'].get('error')}")
        st = client.status()["families"][FAMILY]
        if st.get("rank_error"):
            raise DemoError(f"the coordinator's ranking failed: {st['rank_error']}")
    raise DemoError(f"no {kind} notification within {timeout:.0f} s")


class _Counting:
    """A progress callback that remembers its total, so the bar can be filled at the end (the
    last steps reported from a Ray task may still be on their way when it returns)."""

    def __init__(self, advance: Any) -> None:
        self.advance, self.done, self.total = advance, 0, None

    def __call__(self, n: int = 1, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done += n
        self.advance(n, total)

    def finish(self) -> None:
        if self.total is not None and self.done < self.total:
            self.advance(self.total - self.done)
            self.done = self.total


def verdict(heuristic: str, s: dict[str, Any]) -> str:
    """Whether a heuristic beat random in a backtest: on average *and* on most seeds (one
    training's metric varies by a few points from seed to seed, so the mean alone is not
    enough)."""
    diff, wins = s.get("aulc_vs_random"), s.get("wins_vs_random")
    if diff is None or not wins:
        return f"{heuristic}: no comparison with random"
    won, seeds = (int(v) for v in wins.split("/"))
    figures = f"AULC {diff:+.3f} against random, won {wins} seeds"
    if diff > 0 and won * 2 > seeds:
        return f"{heuristic} beats random: {figures}"
    if diff > 0:
        return f"{heuristic} is ahead of random on average only ({figures}): no clear gain"
    return f"{heuristic} does not beat random: {figures}"


def describe_change(n: dict[str, Any]) -> str:
    """One line for a ranks_changed notification."""
    p = n["payload"]
    prev = p.get("previous_version")
    spear = p.get("spearman")
    return (
        f"notification #{n['id']} ranks_changed ({n['family']}): rank version "
        f"{prev if prev is not None else '-'} → {p['version']} (model v"
        f"{p.get('previous_model_version') or '-'} → v{p.get('model_version')}); "
        f"{p['entered_count']} image(s) entered the top {p['top_n']}, "
        f"{p['overlap']} stayed"
        + (f"; Spearman {spear:.2f} over {p['common']} images" if spear is not None else "")
    )


def run_demo(
    out: str = "alray-demo",
    *,
    images: int | None = None,
    quick: bool = False,
    config: DemoConfig | None = None,
) -> dict[str, Any]:
    """Run the demo, printing each step; return what it made (paths, versions, summary)."""
    from rich.markup import escape

    from alray import ranks, training
    from alray._ray import ensure_ray
    from alray.cli._common import console, print_table, progress_bar
    from alray.cli.simulate import print_summary
    from alray.coordinator import Client
    from alray.project import Project
    from alray.simulate import simulate, temporary_project
    from alray.synthetic import generate

    cfg = config or (QUICK if quick else DemoConfig())
    if images is not None:
        cfg = DemoConfig(**{**asdict(cfg), "images": images})
    if cfg.images < cfg.initial_labels + cfg.batch + 30:
        raise DemoError(f"--images must be at least {cfg.initial_labels + cfg.batch + 30}")
    t0 = time.perf_counter()
    total_steps = 8
    result: dict[str, Any] = {"quick": quick}

    def step(k: int, what: str) -> None:
        console.print(
            f"\n[bold cyan][{k}/{total_steps}][/bold cyan] [bold]{escape(what)}"
            f"[/bold]  [dim]({time.perf_counter() - t0:.0f} s)[/dim]"
        )

    def say(text: str) -> None:
        console.print(escape(text), highlight=False)

    out = _prepare_out(out)
    img_dir, store = os.path.join(out, "images"), os.path.join(out, "store")
    result.update(out=out, store=store, images=img_dir)

    # 1. data ---------------------------------------------------------------------------------
    step(1, f"Generating {cfg.images} synthetic images in datasets {', '.join(DATASETS)}")
    with console.status("drawing shapes…"):
        coco = generate(img_dir, cfg.images, datasets=DATASETS, seed=0)
    truth = _truth(coco)
    say(
        f"{img_dir}: coloured shapes on cluttered backgrounds, about a quarter of them "
        f"deliberately ambiguous; the classifier label is the largest shape "
        f"({', '.join(sorted(set(truth.values())))}). All labels are in {coco}; the demo "
        "reveals them a slice at a time, as annotators would."
    )

    # 2. project + initial labels ---------------------------------------------------------------
    step(2, f"Creating project {PROJECT!r} and importing {cfg.initial_labels} labels")
    p = Project.create(PROJECT, store=store)
    with progress_bar("registering images") as advance:
        report = p.add_images(img_dir, progress=advance)
    rng = np.random.default_rng(0)
    names = sorted(truth)
    first = {names[i] for i in rng.choice(len(names), cfg.initial_labels, replace=False)}
    initial = _initial_coco(coco, first, os.path.join(out, "labels", "initial.json"))
    imp = p.import_labels(coco=initial)
    say(
        f"{report.added} images in {len(report.datasets)} datasets; imported "
        f"{imp.images.get(FAMILY, 0)} {FAMILY} labels from {initial} "
        f"(same as `alray labels import {PROJECT} --coco {initial}`)"
    )

    # 3. Ray + coordinator ------------------------------------------------------------------------
    step(3, "Starting a local Ray and the project's coordinator actor")
    with console.status("starting Ray…"):
        ensure_ray("local")  # this process's own Ray: it lives exactly as long as the demo
        client = Client(PROJECT, store)
        changes: dict[str, Any] = {"epochs": cfg.epochs} if cfg.epochs else {}
        client.set_settings(
            FAMILY, heuristic="margin", retrain_every=cfg.batch, auto=True, **changes
        )
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    say(
        f"Ray with {cpus} CPUs; coordinator of {PROJECT!r} up: heuristic margin, retrain "
        f"after {cfg.batch} new labels, auto ranks on"
    )
    last = 0

    # 4. train v1 + auto ranks ---------------------------------------------------------------------
    step(4, f"Training the {FAMILY} assistant on {cfg.initial_labels} labels")
    with progress_bar(f"training {FAMILY}") as advance:
        bar = _Counting(advance)
        meta = training.train_on_ray(
            PROJECT, store, FAMILY, progress=bar, epochs=cfg.epochs, seed=0
        )
        bar.finish()
    m = meta["metric"]
    say(
        f"model v{meta['version']}: {m['name']} {m['value']:.3f} on {m['images']} held-out "
        f"images ({meta['training']['seconds']} s)"
    )
    client.model_registered(FAMILY, meta["version"])
    with progress_bar("coordinator: notify, auto-rank every unlabeled image", 2) as advance:
        _, last = _wait_for(client, last, "ranks_changed", cfg.wait_s, meta["version"], advance)
    top, rmeta = ranks.current(p, FAMILY, limit=cfg.show)
    _show(
        print_table,
        top,
        f"auto-generated ranks v{rmeta['version']} (model "
        f"v{rmeta['model_version']}, margin): label these first",
        truth,
    )

    # 5. label a batch: retrain + re-rank ----------------------------------------------------------
    step(5, f"Labeling the top {cfg.batch} images of the ranking → retraining and re-ranking")
    want, _ = ranks.current(p, FAMILY, limit=cfg.batch)
    batch = {
        f"{d}/{f}": truth[f"{d}/{f}"]
        for d, f in zip(want["dataset"].to_pylist(), want["file_name"].to_pylist(), strict=True)
    }
    batch_csv = _write_csv(os.path.join(out, "labels", "batch-1.csv"), batch)
    imp = p.import_labels(csv=batch_csv)
    state = client.labels_added({FAMILY: imp.images.get(FAMILY, 0)})[FAMILY]
    say(
        f"imported {imp.images.get(FAMILY, 0)} labels from {batch_csv}; coordinator: "
        f"{state['new_labels']}/{state['retrain_every']} new labels, "
        f"{'training started' if state['training'] else 'no training yet'}"
    )
    with progress_bar("coordinator: retrain, notify, re-rank", 2) as advance:
        changed, last = _wait_for(
            client, last, "ranks_changed", cfg.wait_s, meta["version"] + 1, advance
        )
    say(describe_change(changed))
    version = int(changed["payload"]["model_version"])
    result["model_version"] = version
    result["ranks_changed"] = changed

    # 6. ranks on demand ---------------------------------------------------------------------------
    step(6, f"Ranks on demand: top {cfg.run_n} of datasets A and B by entropy")
    run = client.create_run("demo-entropy-A-B", FAMILY, "entropy", cfg.run_n, ["A", "B"])
    with progress_bar(f"run {run['id']}", 100) as advance:
        done = 0
        deadline = time.monotonic() + cfg.wait_s
        while run["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.3)
            run = client.get_run(run["id"])
            now = int(100 * (run.get("progress") or 0))
            advance(now - done)
            done = now
        advance(100 - done)
    if run["status"] != "completed":
        raise DemoError(f"run {run['id']} ended {run['status']}: {run.get('error')}")
    table = client.run_result(run["id"])
    _show(print_table, table, f"run {run['name']} ({run['id']}): entropy, datasets A,B", truth)
    say(
        f"(same as `alray run create {PROJECT} --family {FAMILY} --heuristic entropy --n "
        f"{cfg.run_n} --datasets A,B`)"
    )
    result["run"] = run["id"]

    # 7. simulate -------------------------------------------------------------------------------
    sim_cfg = dict(cfg.simulate)
    step(
        7,
        f"Backtest: margin vs entropy vs random over {sim_cfg['seeds']} seed(s), "
        f"{sim_cfg['initial']} labels + {sim_cfg['rounds']} × {sim_cfg['step']}",
    )
    all_csv = _write_csv(os.path.join(out, "labels", "all.csv"), truth)
    sim_out = os.path.join(out, "simulate")
    with contextlib.ExitStack() as stack:
        with progress_bar("importing images and labels for the backtest") as advance:
            tp = stack.enter_context(temporary_project(img_dir, csv=all_csv, progress=advance))
        with progress_bar("trainings (heuristics × seeds in parallel)") as advance:
            sim = simulate(
                tp,
                FAMILY,
                heuristics=["margin", "entropy", "random"],
                out=sim_out,
                progress=advance,
                **sim_cfg,
            )
    print_summary(sim)
    for h in ("margin", "entropy"):
        say(verdict(h, sim.summary[h]))
    say(
        f"(same as `alray simulate --images {img_dir} --csv {all_csv} --family {FAMILY} "
        f"--heuristics margin,entropy,random "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sim_cfg.items())
        + f" --out {sim_out}`)"
    )
    result["simulate"] = {
        "out": sim_out,
        "plot": sim.files["plot"],
        "summary": sim.summary,
        "full_metric": sim.full_metric,
    }

    # 8. explore ---------------------------------------------------------------------------------
    step(8, "Done: explore the project")
    seconds = time.perf_counter() - t0
    result["seconds"] = round(seconds, 1)
    s = f"--store {store}"
    for line in (
        f"alray {s} project show {PROJECT}",
        f"alray {s} ranks {PROJECT} --family {FAMILY} --limit 20",
        f"alray {s} rank {PROJECT} --family {FAMILY} --heuristic entropy --n 20 --datasets A,B",
        f"alray {s} models list {PROJECT}",
        f"alray {s} notifications {PROJECT}",
        f"alray {s} serve          # the HTTP API on http://127.0.0.1:8000",
    ):
        console.print(f"  [green]{escape(line)}[/green]", highlight=False)
    say(f"learning curves: {sim.files['plot']}")
    say(f"demo finished in {seconds:.0f} s")
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    return result


def _show(print_table: Any, table: Any, title: str, truth: dict[str, str]) -> None:
    rows = table.to_pylist()
    print_table(
        title,
        ["rank", "score", "dataset", "file_name", "true label"],
        [
            [
                r["rank"],
                f"{r['score']:.4f}" if r["score"] is not None else "",
                r["dataset"],
                r["file_name"],
                truth.get(f"{r['dataset']}/{r['file_name']}", "?"),
            ]
            for r in rows
        ],
    )


__all__ = ["QUICK", "DemoConfig", "DemoError", "describe_change", "run_demo", "verdict"]
