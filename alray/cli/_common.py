"""What every command shares: the store option, output as tables or JSON, progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from alray.settings import load_settings

console = Console()
err_console = Console(stderr=True)


class State:
    """Options given before the command (``alray --store URI ...``)."""

    store: str | None = None
    debug: bool = False


state = State()


def store_uri() -> str:
    """The store from ``--store``, else ``ALRAY_STORE``, else the laptop default."""
    return state.store or load_settings().store


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    console.print(table)


@contextmanager
def progress_bar(description: str, total: int | None = None):
    """A rich progress bar on stderr; yields ``advance(n=1, total=None)``."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.advance(task, n)

        yield advance


def print_ranks(table: Any, title: str, limit: int) -> None:
    """The first ``limit`` rows of a ranking (rank, score, dataset, file, id) as a table."""
    rows = table.slice(0, limit).to_pylist()
    print_table(
        title,
        ["rank", "score", "dataset", "file_name", "image_id"],
        [
            [
                r["rank"],
                "" if r["score"] is None else f"{r['score']:.4f}",
                r["dataset"],
                r["file_name"],
                r["image_id"],
            ]
            for r in rows
        ],
    )


def fail(message: str, code: int = 1) -> None:
    """Stop the command with a one-line cause and exit status ``code``."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    # SystemExit, not typer.Exit: `main` runs the app with standalone_mode=False, where
    # typer.Exit becomes a return value and the process would exit 0.
    raise SystemExit(code)


def split_csv(value: str | None) -> list[str] | None:
    """``"a,b"`` → ``["a", "b"]``; None stays None."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None
