"""``alray rank`` (a ranking on demand) and ``alray ranks`` (the latest stored ranking)."""

from __future__ import annotations

import typer

from alray import heuristics, ranks
from alray.cli import app
from alray.cli._common import (
    console,
    err_console,
    print_json,
    print_ranks,
    progress_bar,
    split_csv,
    store_uri,
)
from alray.project import Project

_HEURISTICS = ", ".join(heuristics.HEURISTICS)


@app.command("rank")
def rank(
    project: str,
    family: str = typer.Option(..., "--family", help="Model family to rank for"),
    heuristic: str = typer.Option(heuristics.DEFAULT_HEURISTIC, "--heuristic", help=_HEURISTICS),
    reduction: str = typer.Option(
        "mean", "--reduction", help="mean, max or sum over objects/pixels"
    ),
    n: int = typer.Option(None, "--n", min=1, help="Only the top N images"),
    datasets: str = typer.Option(
        None, "--datasets", help="Comma-separated datasets (default: all)"
    ),
    out: str = typer.Option(
        None, "--out", help="Write the whole result to FILE.csv|.json|.parquet"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random heuristic"),
    save: bool = typer.Option(
        None,
        "--save/--no-save",
        help="Store as the family's new rank version (default: when ranking everything)",
    ),
    show: int = typer.Option(20, "--show", help="Rows to print"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
) -> None:
    """Rank the unlabeled images of a family now, with any heuristic."""
    p = Project.open(project, store=store_uri())
    ds = split_csv(datasets)
    if save is None:
        save = n is None and ds is None
    from alray.scoring import rank as rank_images  # imports torch: only when ranking

    with progress_bar(f"scoring {family} images") as advance:
        result = rank_images(
            p,
            family,
            heuristic=heuristic,
            reduction=reduction,
            n=n,
            datasets=ds,
            seed=seed,
            save=save,
            progress=advance,
        )
    if out:
        ranks.export(result.table, out)
    if as_json:
        print_json(
            {"meta": result.meta, "version": result.version, "ranks": result.table.to_pylist()}
        )
        return
    how = "by file name (heuristic none)" if heuristic == "none" else f"by {heuristic}"
    print_ranks(result.table, f"{family} ranks of {project} {how}", show)
    console.print(
        f"{result.table.num_rows} image(s) ranked"
        + (f", model v{result.meta['model_version']}" if result.meta.get("model_version") else "")
        + (f"; saved as rank version {result.version}" if result.version else "")
        + (f"; written to {out}" if out else "")
    )
    if result.skipped:
        err_console.print(f"[yellow]skipped {len(result.skipped)} unreadable image(s):[/yellow]")
        for s in result.skipped[:10]:
            err_console.print(f"  {s['uri']}: {s['error']}", highlight=False)


@app.command("ranks")
def ranks_(
    project: str,
    family: str = typer.Option(..., "--family"),
    limit: int = typer.Option(20, "--limit", min=1, max=100_000),
    offset: int = typer.Option(0, "--offset", min=0),
    dataset: str = typer.Option(None, "--dataset"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The latest stored ranking, without the images labeled since."""
    p = Project.open(project, store=store_uri())
    table, meta = ranks.current(p, family, limit=limit, offset=offset, dataset=dataset)
    if as_json:
        print_json({"meta": meta, "ranks": table.to_pylist()})
        return
    how = "by file name" if meta["heuristic"] == "none" else f"by {meta['heuristic']}"
    print_ranks(table, f"{family} rank version {meta['version']} of {project} {how}", limit)
