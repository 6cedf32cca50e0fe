"""``ray job submit --working-dir . -- python jobs/train.py PROJECT --family F [--store URI]
[--epochs N] [--seed S]``

Trains the family's assistant exactly like ``alray train`` and prints the new version's meta as
JSON. Inside ``ray job submit`` ``RAY_ADDRESS`` is set, so alray joins the cluster the job runs
on (a GPU worker takes the training task when there is one).
"""

from __future__ import annotations

import argparse
import json
import sys

from alray.families import FAMILIES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__.splitlines()[0])
    ap.add_argument("project")
    ap.add_argument("--family", required=True, choices=FAMILIES)
    ap.add_argument("--store", default=None, help="store URI (default: $ALRAY_STORE)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--input-size", type=int, default=64)
    args = ap.parse_args(argv)

    from alray.settings import load_settings
    from alray.training import train_on_ray

    settings = load_settings()
    try:
        meta = train_on_ray(args.project, args.store or settings.store, args.family,
                            epochs=args.epochs, seed=args.seed, input_size=args.input_size,
                            device=settings.device)
    except Exception as e:  # one line, like the CLI
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(meta, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
