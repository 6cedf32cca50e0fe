"""``alray simulate``: learning-curve backtests of heuristics on labeled images."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import typer
from rich.markup import escape

from alray.cli import app
from alray.cli._common import (
    console,
    fail,
    print_json,
    print_table,
    progress_bar,
    split_csv,
    store_uri,
)
from alray.families import FAMILIES


def summary_rows(summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The summary table's rows (shared with ``alray demo``)."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    rows = []
    for h, s in summary.items():
        aulc = "-" if s["aulc"] is None else f"{s['aulc']:.3f} ± {s['aulc_std']:.3f}"
        to95 = s["labels_to_95"]
        rows.append(
            [
                h,
                aulc,
                num(s["aulc_vs_random"], "+.3f"),
                s["wins_vs_random"] or "-",
                num(s["final_metric"], ".3f"),
                "not reached" if to95 is None else f"{to95:.0f}",
                num(s["labels_vs_random"], ".2f"),
            ]
        )
    return rows


SUMMARY_HEADERS = [
    "heuristic",
    "AULC (mean ± sd)",
    "vs random",
    "seeds won",
    "final",
    "labels to 95%",
    "labels vs random",
]


def print_summary(sim: Any) -> None:
    """The summary table and where the files are."""
    full = "-" if sim.full_metric is None else f"{sim.full_metric:.3f}"
    print_table(
        f"{sim.family}: test {sim.metric} over {len(sim.config['seeds'])} seed(s); all "
        f"{sim.config['pool']} pool labels reach {full}",
        SUMMARY_HEADERS,
        summary_rows(sim.summary),
    )
    console.print(
        escape(
            f"curves: {sim.files['curve']}   plot: {sim.files['plot']}   "
            f"summary: {sim.files['summary_json']}  ({sim.seconds} s)"
        ),
        highlight=False,
    )


@app.command("simulate")
def simulate_cmd(
    project: str = typer.Option(None, "--project", help="Project whose labeled images to use"),
    images: str = typer.Option(None, "--images", help="Or: a folder of images…"),
    coco: str = typer.Option(None, "--coco", help="…with labels from a COCO JSON"),
    csv: str = typer.Option(None, "--csv", help="…or from a CSV image,label"),
    image_folder: bool = typer.Option(
        False, "--image-folder", help="…or one subfolder per class (ImageFolder)"
    ),
    family: str = typer.Option(..., "--family", "-f", help=f"One of: {', '.join(FAMILIES)}"),
    heuristics: str = typer.Option(
        "margin,entropy,random", "--heuristics", help="Comma-separated; random is the baseline"
    ),
    initial: int = typer.Option(100, "--initial", min=2, help="Random labeled images to start"),
    step: int = typer.Option(50, "--step", min=1, help="Images labeled per round"),
    rounds: int = typer.Option(5, "--rounds", min=0, help="Labeling rounds"),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Repeats with other initial sets"),
    test_fraction: float = typer.Option(
        0.2, "--test-fraction", min=0.01, max=0.9, help="Held-out test split"
    ),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs of every training"),
    samples: int = typer.Option(
        None, "--samples", min=1, help="Or images seen per training (default: training's)"
    ),
    full_runs: int = typer.Option(
        None, "--full-runs", min=0, help="Trainings on the whole pool (default: one per seed)"
    ),
    input_size: int = typer.Option(64, "--input-size", min=8, help="Model input size"),
    reduction: str = typer.Option("mean", "--reduction", help="mean, max or sum"),
    seed: int = typer.Option(0, "--seed", help="Seed of the test split and initial sets"),
    out: str = typer.Option(..., "--out", "-o", help="Folder for curve.csv/png, summary"),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json's content"),
) -> None:
    """Backtest heuristics on labeled images: learning curves per heuristic, against random."""
    from alray.project import Project
    from alray.simulate import simulate, temporary_project

    sources = sum(bool(x) for x in (coco, csv, image_folder))
    if (project is None) == (images is None) or (images is not None and sources != 1):
        fail("give --project P, or --images DIR with one of --coco F, --csv F, --image-folder")
    if project is not None and sources:
        fail("--coco/--csv/--image-folder go with --images, not --project")
    names = split_csv(heuristics) or []
    with contextlib.ExitStack() as stack:
        if images is not None:
            with progress_bar("importing images and labels") as advance:
                p = stack.enter_context(
                    temporary_project(
                        images, coco=coco, csv=csv, image_folder=image_folder, progress=advance
                    )
                )
        else:
            p = Project.open(project, store=store_uri())
        with progress_bar(f"simulating {', '.join(names)} ({family})") as advance:
            sim = simulate(
                p,
                family,
                heuristics=names,
                initial=initial,
                step=step,
                rounds=rounds,
                seeds=seeds,
                test_fraction=test_fraction,
                epochs=epochs,
                samples=samples,
                full_runs=full_runs,
                input_size=input_size,
                reduction=reduction,
                seed=seed,
                out=out,
                progress=advance,
            )
    if as_json:
        with open(sim.files["summary_json"]) as f:
            print_json(json.load(f))
        return
    print_summary(sim)
