"""``ray job submit --working-dir . -- python jobs/rank.py PROJECT --family F [--store URI] …``

The same ranking as ``alray rank`` (same options), as a Ray job: inside ``ray job submit``
``RAY_ADDRESS`` is set, so alray joins the cluster the job runs on instead of starting one.
"""

import sys

from alray.cli import main


def _argv(args: list[str]) -> list[str]:
    """``--store`` is a global option of the CLI: move it in front of the command."""
    args = list(args)
    front: list[str] = []
    if "--store" in args:
        i = args.index("--store")
        front, args = args[i : i + 2], args[:i] + args[i + 2 :]
    return [*front, "rank", *args]


if __name__ == "__main__":
    sys.exit(main(_argv(sys.argv[1:])))
