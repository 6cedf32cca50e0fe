"""The ``alray`` command line: thin commands over the ``alray`` library.

Each command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import sys
import traceback

import typer
from rich.markup import escape

from alray.cli._common import err_console, state

app = typer.Typer(
    name="alray",
    help="Active learning on Ray: rank unlabeled images by how much a model would learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    store: str = typer.Option(
        None, "--store", help="Store URI (default: $ALRAY_STORE or ./alray-store)"
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors"),
) -> None:
    state.store = store
    state.debug = debug


# Command modules register on `app` when imported.
from alray.cli import coordinator as _coordinator  # noqa: E402,F401
from alray.cli import models as _models  # noqa: E402,F401
from alray.cli import project as _project  # noqa: E402,F401
from alray.cli import rank as _rank  # noqa: E402,F401
from alray.cli import serve as _serve  # noqa: E402,F401
from alray.cli import simulate as _simulate  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alray`` script: one-line errors, non-zero exit codes.

    Click's own handling (usage errors, ``--help``, exit codes) stays in charge; any other
    exception becomes a one-line cause, with the traceback only under ``--debug``.
    """
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        app(args=argv, prog_name="alray")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("[red]aborted[/red]")
        return 130
    except Exception as e:  # the one place every error becomes a one-line cause
        if debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        if not debug:
            err_console.print("(run with --debug for the traceback)", style="dim")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
