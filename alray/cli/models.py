"""``alray train``, ``alray models add|list``, ``alray predict``."""

from __future__ import annotations

import typer
from rich.markup import escape

from alray.cli import app
from alray.cli._common import console, print_json, print_table, progress_bar, split_csv, store_uri
from alray.families import FAMILIES

models_app = typer.Typer(help="Model versions (AI assistants) of a project.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_FAMILY_HELP = f"Family: {', '.join(FAMILIES)}"


def _metric(meta: dict) -> str:
    m = meta.get("metric") or {}
    if m.get("value") is None:
        return "-"
    return f"{m['name']} {m['value']:.3f}"


@app.command("train")
def train(
    project: str = typer.Argument(..., help="Project name"),
    family: str = typer.Option(..., "--family", "-f", help=_FAMILY_HELP),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Epochs (default: by label count)"),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, same model on CPU"),
    input_size: int = typer.Option(64, "--input-size", min=8, help="Model input size (square)"),
    as_json: bool = typer.Option(False, "--json", help="Print the new version's meta as JSON"),
) -> None:
    """Train the family's assistant on Ray and store it as the next model version."""
    from alray.project import Project
    from alray.settings import load_settings
    from alray.training import train_on_ray

    uri = store_uri()
    Project.open(project, store=uri)  # fail fast, before starting Ray, on a wrong name
    with progress_bar(f"training {family}") as advance:
        meta = train_on_ray(project, uri, family, progress=advance, epochs=epochs, seed=seed,
                            input_size=input_size, device=load_settings().device)
    if as_json:
        print_json(meta)
        return
    t = meta.get("training", {})
    console.print(escape(
        f"{family} v{meta['version']}: {_metric(meta)} on {t.get('val_images')} held-out "
        f"images ({meta['label_count']} labeled, {t.get('epochs')} epochs, "
        f"{t.get('seconds')} s on {t.get('device')})"
    ), highlight=False)


@models_app.command("add")
def add(
    project: str = typer.Argument(..., help="Project name"),
    family: str = typer.Option(..., "--family", "-f", help=_FAMILY_HELP),
    torchscript: str = typer.Option(..., "--torchscript", help="TorchScript file (torch.jit.save)"),
    classes: str = typer.Option(
        ..., "--classes", help="Names along the model's probs axis, comma-separated "
        "(classes; tags; attributes for an attributor)"),
    input_size: tuple[int, int] = typer.Option(..., "--input-size", help="Input H W"),
    mean: tuple[float, float, float] = typer.Option(
        None, "--mean", help="Normalisation mean r g b (inputs are in [0, 1])"),
    std: tuple[float, float, float] = typer.Option(None, "--std", help="Normalisation std r g b"),
    object_classes: str = typer.Option(
        None, "--object-classes", help="Attributor only: names of its class_probs"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register your TorchScript model as the family's next version (checked on a dummy batch)."""
    from alray.assistants import register_torchscript
    from alray.project import Project

    p = Project.open(project, store=store_uri())
    names = split_csv(classes) or []
    meta = register_torchscript(p, family, torchscript, names, input_size, mean, std,
                                object_classes=split_csv(object_classes))
    if as_json:
        print_json(meta)
        return
    console.print(escape(
        f"added {family} v{meta['version']} from {torchscript}: {len(names)} classes, "
        f"input {input_size[0]}x{input_size[1]}"
    ), highlight=False)


@models_app.command("list")
def list_(
    project: str = typer.Argument(..., help="Project name"),
    family: str = typer.Option(None, "--family", "-f", help=_FAMILY_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """List the model versions of a project (all families, or one)."""
    from alray.assistants import list_versions
    from alray.project import Project

    metas = list_versions(Project.open(project, store=store_uri()), family)
    if as_json:
        print_json(metas)
        return
    if not metas:
        console.print(f"no models in {project!r} yet: alray train {project} --family FAMILY")
        return
    rows = [
        [m["family"], m["version"], m.get("source"), _metric(m), m.get("label_count") or "-",
         len(m.get("classes") or []), "x".join(map(str, m.get("input_size") or [])),
         (m.get("created") or "")[:16].replace("T", " ")]
        for m in metas
    ]
    print_table(None, ["family", "version", "source", "metric", "labels", "classes", "input",
                       "created"], rows)


@app.command("predict")
def predict(
    project: str = typer.Argument(..., help="Project name"),
    family: str = typer.Option(..., "--family", "-f", help=_FAMILY_HELP),
    out: str = typer.Option(..., "--out", "-o", help="COCO JSON file to write"),
    datasets: str = typer.Option(None, "--datasets", help="Only these datasets (a,b)"),
    unlabeled_only: bool = typer.Option(False, "--unlabeled-only",
                                        help="Only images without labels for the family"),
    version: int = typer.Option(None, "--version", help="Model version (default: latest)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write COCO pre-labels with scores from the family's latest model."""
    from alray.predictions import export_coco
    from alray.project import Project
    from alray.settings import load_settings

    p = Project.open(project, store=store_uri())
    with progress_bar(f"predicting {family}") as advance:
        summary = export_coco(p, family, out, split_csv(datasets), unlabeled_only, advance,
                              version=version, device=load_settings().device)
    if as_json:
        print_json(summary)
        return
    skipped = len(summary["skipped"])
    console.print(escape(
        f"wrote {summary['annotations']} annotation(s) for {summary['images']} image(s) to "
        f"{out} ({family} v{summary['version']})"
        + (f"; skipped {skipped} unreadable image(s)" if skipped else "")
    ), highlight=False)
