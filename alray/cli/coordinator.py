"""Commands that talk to a project's coordinator actor: ``alray settings``, ``alray runs``,
``alray run …``, ``alray notifications``, ``alray webhooks …`` and ``alray coordinator status``.

They join the Ray cluster named by ``ALRAY_RAY_ADDRESS`` or ``RAY_ADDRESS`` and reach the
project's coordinator there (starting it if needed). With neither set they start a local Ray
for the one command and say so: the coordinator then stops with the command, so automatic
retraining, auto ranks and webhook retries need a running cluster
(``ray start --head`` and ``ALRAY_RAY_ADDRESS=auto``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import typer
from rich.markup import escape

from alray import heuristics
from alray.cli import app
from alray.cli._common import (
    console,
    err_console,
    print_json,
    print_ranks,
    print_table,
    split_csv,
    store_uri,
)
from alray.families import FAMILIES, REDUCTIONS
from alray.project import Project
from alray.settings import load_settings

run_app = typer.Typer(help="Ranks on demand: create and cancel runs.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Signed webhooks for a project's notifications.")
coordinator_app = typer.Typer(help="The project's coordinator actor.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(coordinator_app, name="coordinator")

LOCAL_RAY_NOTE = (
    "no Ray cluster configured (ALRAY_RAY_ADDRESS / RAY_ADDRESS): started a local Ray for "
    "this command only. The coordinator and the work it starts stop when the command exits; "
    "for automatic retraining, auto ranks and webhook retries start a cluster with "
    "`ray start --head` and set ALRAY_RAY_ADDRESS=auto."
)


def cluster_address() -> str | None:
    """The Ray cluster the CLI joins, or None (then it would start a throwaway local Ray)."""
    return load_settings().ray_address or os.environ.get("RAY_ADDRESS") or None


def connect(project: str):
    """A :class:`alray.coordinator.Client` for the project, saying so when Ray is local."""
    import ray

    from alray.coordinator import Client

    was_connected = ray.is_initialized()
    client = Client(project, store_uri(), settings=load_settings(store=store_uri()))
    if not was_connected and _started_local_ray():
        err_console.print(f"[yellow]note:[/yellow] {escape(LOCAL_RAY_NOTE)}", highlight=False)
    return client


def _started_local_ray() -> bool:
    """Whether this process started the Ray it uses (with no address, ray.init joins a cluster
    that ``ray start`` runs on this machine, if any, and starts one otherwise)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)  # no public API says this
    return bool(getattr(node, "head", False))


def labels_added(p: Project, family_counts: dict[str, int]) -> None:
    """After ``alray labels import``: tell the coordinator, or leave the counts in the store.

    With a cluster configured the coordinator counts them now (and may start training). With
    none, starting a local Ray would be useless (a coordinator there dies with the command):
    the counts go to the store's inbox and the coordinator adds them when it next starts.
    An import is never failed here: its labels are already stored.
    """
    counts = {f: int(n) for f, n in family_counts.items() if n}
    if not counts:
        return
    from alray.coordinator import write_inbox

    if cluster_address() is not None:
        try:
            state = connect(p.name).labels_added(counts)
        except Exception as e:  # the labels are stored; the counts must not be lost either
            write_inbox(p, counts)
            err_console.print(
                f"[yellow]note:[/yellow] could not reach the coordinator ({escape(str(e))}); "
                "the new labels are recorded in the store and counted when it starts",
                highlight=False,
            )
            return
        for family, s in state.items():
            every = s["retrain_every"]
            if s["training"]:
                what = "training started"
            elif every:
                what = f"{s['new_labels']}/{every} new labels before the next training"
            else:
                what = f"{s['new_labels']} new labels (retraining only when asked)"
            err_console.print(f"{family}: {what}", highlight=False)
        return
    write_inbox(p, counts)
    err_console.print(
        "[dim]no Ray cluster configured: the new labels are recorded in the store and the "
        "coordinator counts them when it next starts (automatic retraining needs a running "
        "cluster: `ray start --head` and ALRAY_RAY_ADDRESS=auto)[/dim]",
        highlight=False,
    )


# ------------------------------------------------------------------------------------ settings
_SETTING_COLUMNS = (
    "heuristic",
    "reduction",
    "auto",
    "retrain_every",
    "mc_samples",
    "top_n",
    "epochs",
)


@app.command("settings")
def settings_cmd(
    project: str,
    family: str = typer.Option(None, "--family", help=f"One of: {', '.join(FAMILIES)}"),
    heuristic: str = typer.Option(
        None, "--heuristic", help=f"{', '.join(heuristics.HEURISTICS)} (none = alphabetical)"
    ),
    reduction: str = typer.Option(None, "--reduction", help=", ".join(REDUCTIONS)),
    auto: str = typer.Option(None, "--auto", help="on|off: re-rank after each training"),
    retrain_every: int = typer.Option(
        None, "--retrain-every", min=0, help="Retrain after N new labels; 0 = only when asked"
    ),
    mc_samples: int = typer.Option(None, "--mc-samples", help="Monte-Carlo passes for bald"),
    top_n: int = typer.Option(None, "--top-n", help="Top N compared when ranks change"),
    epochs: int = typer.Option(None, "--epochs", help="Epochs of automatic training"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show every family's settings, or change one family's (re-ranks when the heuristic or
    reduction changes, without retraining)."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "heuristic": heuristic,
            "reduction": reduction,
            "retrain_every": retrain_every,
            "mc_samples": mc_samples,
            "top_n": top_n,
            "epochs": epochs,
        }.items()
        if v is not None
    }
    if auto is not None:
        if auto.lower() not in ("on", "off"):
            raise typer.BadParameter(f"--auto takes on or off, got {auto!r}")
        changes["auto"] = auto.lower() == "on"
    if changes and family is None:
        raise typer.BadParameter(f"say which family to change: --family {'|'.join(FAMILIES)}")
    client = connect(project)
    if changes:
        res = client.set_settings(family, **changes)
        if as_json:
            print_json(res)
            return
        console.print(
            escape(f"{family}: " + ", ".join(f"{k}={v}" for k, v in res["settings"].items()))
        )
        if res["reranking"]:
            console.print(f"re-ranking {family} with its current model (no retraining)")
        if res["training"]:
            console.print(f"training {family}: enough new labels for the new threshold")
        return
    shown = client.get_settings()
    if family is not None:
        shown = {family: client.get_settings(family)}
    if as_json:
        print_json(shown)
        return
    print_table(
        f"{project}: family settings",
        ["family", *_SETTING_COLUMNS],
        [[f, *[_fmt_setting(k, s[k]) for k in _SETTING_COLUMNS]] for f, s in shown.items()],
    )


def _fmt_setting(key: str, value: Any) -> str:
    if key == "auto":
        return "on" if value else "off"
    if key == "retrain_every" and value is None:
        return "when asked"
    if value is None:
        return "default"
    return str(value)


# ---------------------------------------------------------------------------------------- runs
def _run_rows(runs: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            r["id"],
            r["name"],
            r["family"],
            r["heuristic"],
            r["n"],
            ",".join(r["datasets"]) if r["datasets"] else "all",
            r["status"],
            f"{100 * r['progress']:.0f}%",
            r["created"],
            r["error"] or "",
        ]
        for r in runs
    ]


_RUN_COLUMNS = [
    "id",
    "name",
    "family",
    "heuristic",
    "n",
    "datasets",
    "status",
    "progress",
    "created",
    "error",
]


def _show_result(client: Any, run: dict[str, Any], limit: int) -> None:
    table = client.run_result(run["id"])
    print_ranks(
        table,
        f"run {run['id']} ({run['name']}): top {run['n']} {run['family']} images "
        f"by {run['heuristic']}",
        limit,
    )


@app.command("runs")
def runs_cmd(
    project: str,
    run_id: str = typer.Argument(None, help="Show this run (and its result)"),
    status: str = typer.Option(None, "--status", help="Only runs in this state"),
    show: int = typer.Option(20, "--show", help="Result rows to print"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the ranks-on-demand runs, or show one with its top images."""
    client = connect(project)
    if run_id is None:
        runs = client.list_runs(status)
        if as_json:
            print_json(runs)
        elif not runs:
            console.print(f"no runs in {project} yet: alray run create {project} --name …")
        else:
            print_table(f"{project}: runs", _RUN_COLUMNS, _run_rows(runs))
        return
    run = client.get_run(run_id)
    if as_json:
        out = dict(run)
        if run["status"] == "completed":
            out["result"] = client.run_result(run_id).to_pylist()
        print_json(out)
        return
    print_table(f"run {run_id}", _RUN_COLUMNS, _run_rows([run]))
    if run["status"] == "completed":
        _show_result(client, run, show)


@run_app.command("create")
def run_create(
    project: str,
    name: str = typer.Option(..., "--name", help="What this run is for"),
    family: str = typer.Option(..., "--family", help=", ".join(FAMILIES)),
    heuristic: str = typer.Option(
        heuristics.DEFAULT_HEURISTIC, "--heuristic", help=", ".join(heuristics.HEURISTICS)
    ),
    n: int = typer.Option(..., "--n", help="How many top images"),
    datasets: str = typer.Option(None, "--datasets", help="Comma-separated (default: all)"),
    reduction: str = typer.Option(None, "--reduction", help="Default: the family's setting"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result and print it"),
    show: int = typer.Option(20, "--show", help="Result rows to print with --wait"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a run that ranks a family's unlabeled images once (top N)."""
    client = connect(project)
    run = client.create_run(name, family, heuristic, n, split_csv(datasets), reduction)
    if not wait:
        if as_json:
            print_json(run)
        else:
            console.print(f"run {run['id']} queued: alray runs {project} {run['id']}")
        return
    run = _wait_run(client, run, quiet=as_json)
    if as_json:
        out = dict(run)
        if run["status"] == "completed":
            out["result"] = client.run_result(run["id"]).to_pylist()
        print_json(out)
    elif run["status"] == "completed":
        _show_result(client, run, show)
    else:
        print_table(f"run {run['id']}", _RUN_COLUMNS, _run_rows([run]))
    if run["status"] != "completed":
        raise SystemExit(1)


def _wait_run(client: Any, run: dict[str, Any], quiet: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn

    final = ("completed", "failed", "cancelled")
    with Progress(
        TextColumn("[bold]run {task.fields[id]}: {task.fields[status]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        console=err_console,
        disable=quiet,
    ) as bar:
        task = bar.add_task("run", total=1.0, id=run["id"], status=run["status"])
        while run["status"] not in final:
            time.sleep(0.5)
            run = client.get_run(run["id"])
            bar.update(task, completed=run["progress"], status=run["status"])
    return run


@run_app.command("cancel")
def run_cancel(project: str, run_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Cancel a queued or running run."""
    run = connect(project).cancel_run(run_id)
    if as_json:
        print_json(run)
    else:
        console.print(f"run {run_id} cancelled")


# ------------------------------------------------------------------------------ notifications
def _print_notification(n: dict[str, Any], as_json: bool) -> None:
    if as_json:
        import json

        console.file.write(json.dumps(n, default=str) + "\n")
        console.file.flush()
        return
    p = n["payload"]
    t = n["type"]
    if t == "ranks_changed":
        versions = (
            f"first ranking v{p['version']}"
            if p["previous_version"] is None
            else f"rank v{p['previous_version']} → v{p['version']}"
        )
        model = f"model v{p['model_version']}" if p["model_version"] else "no model"
        what = (
            f"{versions} ({model}, "
            f"{p['heuristic']}): top {p['top_n']} overlap {p['overlap']}, "
            f"{p['entered_count']} entered, {p['left_count']} left, spearman "
            + ("n/a" if p["spearman"] is None else f"{p['spearman']:.3f}")
        )
    elif t == "model_trained":
        metric = p.get("metric") or {}
        score = metric.get("value")
        what = f"model v{p['version']}" + (
            f", {metric.get('name')} {score:.3f}" if isinstance(score, float) else ""
        )
    elif t == "run_completed":
        what = f"run {p['run_id']} ({p['name']}) completed: {p['images']} images"
    else:
        what = p.get("error") or ""
        if "run_id" in p:
            what = f"run {p['run_id']} ({p['name']}): {what}"
    fam = f" [{n['family']}]" if n["family"] else ""
    console.print(escape(f"#{n['id']} {n['time']} {t}{fam} {what}"), highlight=False)


@app.command("notifications")
def notifications_cmd(
    project: str,
    after: int = typer.Option(0, "--after", min=0, help="Only notifications after this id"),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new ones"),
    limit: int = typer.Option(100, "--limit", min=1),
    mark_read: bool = typer.Option(False, "--mark-read", help="Mark the shown ones read"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """List notifications (ranks changed, runs, models), or follow them as they come."""
    client = connect(project)
    shown = client.notifications_after(after, limit)
    for n in shown:
        _print_notification(n, as_json)
    last = shown[-1]["id"] if shown else after
    if not follow:
        if mark_read and shown:
            client.mark_read(last)
        if not as_json:
            err_console.print(f"{client.unread_count()} unread", style="dim")
        return
    while True:  # Ctrl-C ends it
        for n in client.wait_notifications(last, 30.0, limit):
            _print_notification(n, as_json)
            last = n["id"]
        if mark_read:
            client.mark_read(last)


# ----------------------------------------------------------------------------------- webhooks
@webhooks_app.command("add")
def webhooks_add(
    project: str,
    url: str = typer.Option(..., "--url", help="http:// or https:// endpoint"),
    secret: str = typer.Option(
        ..., "--secret", envvar="ALRAY_WEBHOOK_SECRET", help="HMAC key (8+ characters)"
    ),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds per attempt"),
    retry_base: float = typer.Option(1.0, "--retry-base", help="First retry delay, doubling"),
    retry_max: float = typer.Option(300.0, "--retry-max", help="Longest retry delay"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register a webhook: every new notification is POSTed to it, signed, at least once."""
    hook = connect(project).add_webhook(
        url, secret, timeout_s=timeout, retry_base_s=retry_base, retry_max_s=retry_max
    )
    if as_json:
        print_json(hook)
    else:
        console.print(escape(f"webhook {hook['id']} → {hook['url']}"))


@webhooks_app.command("list")
def webhooks_list(
    project: str,
    log: str = typer.Option(None, "--log", help="Show this webhook's delivery log"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the webhooks (secrets hidden), or one webhook's delivery attempts."""
    client = connect(project)
    if log:
        entries = client.webhook_deliveries(log, 100)
        if as_json:
            print_json(entries)
            return
        print_table(
            f"deliveries of {log}",
            ["notification", "attempt", "time", "ok", "status", "error", "seconds"],
            [
                [
                    e["notification_id"],
                    e["attempt"],
                    e["time"],
                    e["ok"],
                    e["status"],
                    e["error"],
                    e["seconds"],
                ]
                for e in entries
            ],
        )
        return
    hooks = client.list_webhooks()
    if as_json:
        print_json(hooks)
        return
    print_table(
        f"{project}: webhooks",
        ["id", "url", "delivered through", "pending", "failing since", "created"],
        [
            [
                h["id"],
                h["url"],
                h["delivered_through"],
                h["pending"],
                h["failing_since"],
                h["created"],
            ]
            for h in hooks
        ],
    )


@webhooks_app.command("remove")
def webhooks_remove(project: str, webhook_id: str) -> None:
    """Stop delivering to a webhook and forget it."""
    connect(project).remove_webhook(webhook_id)
    console.print(f"webhook {webhook_id} removed")


# -------------------------------------------------------------------------------- coordinator
@coordinator_app.command("status")
def coordinator_status(
    project: str,
    wait_idle: float = typer.Option(
        None, "--wait-idle", help="First wait up to this many seconds for work in flight"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per family: new labels, model version, training and ranking in flight."""
    client = connect(project)
    if wait_idle:
        client.wait_idle(wait_idle)
    st = client.status()
    if as_json:
        print_json(st)
        return
    print_table(
        f"{project}: coordinator",
        ["family", "heuristic", "new labels", "model", "training", "ranking", "last rank", "error"],
        [
            [
                f,
                s["settings"]["heuristic"],
                s["new_labels"],
                s["model_version"],
                "yes" if s["training"] else "",
                "yes" if s["rank_job"] else "",
                (s["last_rank"] or {}).get("version"),
                s["training_error"] or s["rank_error"] or "",
            ]
            for f, s in st["families"].items()
        ],
    )
    console.print(
        f"runs queued {st['runs']['queued']}, running {st['runs']['running']}; "
        f"notifications {st['last_notification']} ({st['unread']} unread); "
        f"webhook deliveries pending {st['webhook_pending']}"
    )
