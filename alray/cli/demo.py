"""``alray demo``: the README's main command (the logic is in :mod:`alray.demo`)."""

from __future__ import annotations

import typer

from alray.cli import app


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("alray-demo", "--out", "-o", help="Folder for images, store, plots"),
    images: int = typer.Option(None, "--images", min=60, help="Images to generate"),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes: seconds, not minutes"),
) -> None:
    """Generate images, create a project, train, rank, retrain on new labels, rank on demand
    and backtest margin vs entropy vs random: the whole product in a few minutes."""
    from alray.demo import run_demo

    run_demo(out, images=images, quick=quick)
