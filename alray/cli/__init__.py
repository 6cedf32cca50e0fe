"""The ``alray`` command line: thin commands over the ``alray`` library.

Each command group lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

import sys
import traceback

import typer
from rich.markup import escape
from typer.exceptions import TyperException

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
from alray.cli import demo as _demo  # noqa: E402,F401
from alray.cli import models as _models  # noqa: E402,F401
from alray.cli import project as _project  # noqa: E402,F401
from alray.cli import rank as _rank  # noqa: E402,F401
from alray.cli import serve as _serve  # noqa: E402,F401
from alray.cli import simulate as _simulate  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alray`` script: a one-line cause and a non-zero exit on any error.

    Usage errors print ``error: <what>`` and where the help is; any other exception prints its
    message, with the traceback only under ``--debug``.
    """
    debug = "--debug" in (argv if argv is not None else sys.argv)
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="alray")
        return rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/red]")
        return 130
    except TyperException as e:  # click's usage errors (typer bundles its own click)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if message:  # a bare group (`alray`) has printed its help already
            err_console.print(
                f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True
            )
            ctx = getattr(e, "ctx", None)
            err_console.print(f"(see {ctx.command_path if ctx else 'alray'} --help)", style="dim")
        return getattr(e, "exit_code", 2)
    except Exception as e:  # the one place every other error becomes a one-line cause
        if debug:
            traceback.print_exc()
        err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        if not debug:
            err_console.print("(run with --debug for the traceback)", style="dim")
        return 1


if __name__ == "__main__":
    sys.exit(main())
