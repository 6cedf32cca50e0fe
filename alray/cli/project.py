"""``alray project …``, ``alray images add``, ``alray labels import``."""

from __future__ import annotations

import typer
from rich.markup import escape

from alray.cli import app
from alray.cli._common import console, err_console, print_json, print_table, progress_bar, store_uri
from alray.project import FAMILIES, AddReport, Project, list_projects

project_app = typer.Typer(help="Create, list and inspect projects.", no_args_is_help=True)
images_app = typer.Typer(help="Register images in a project.", no_args_is_help=True)
labels_app = typer.Typer(help="Import labels into a project.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(images_app, name="images")
app.add_typer(labels_app, name="labels")


def _add(
    p: Project, images: str | None, list_file: str | None, dataset: str | None, as_json: bool
) -> AddReport:
    with progress_bar("reading image headers") as advance:
        report = p.add_images(images, list_file=list_file, dataset=dataset, progress=advance)
    if as_json:
        print_json(report.to_dict())
        return report
    console.print(
        f"added {report.added} image(s) to {p.name!r}"
        + (f" ({report.already_present} already there)" if report.already_present else "")
        + (f", ignored {report.ignored} non-image file(s)" if report.ignored else "")
    )
    if report.problems:
        err_console.print(f"[yellow]skipped {len(report.problems)} file(s):[/yellow]")
        for prob in report.problems[:20]:
            err_console.print(escape(f"  {prob['path']}: {prob['reason']}"), highlight=False)
        if len(report.problems) > 20:
            err_console.print(f"  … and {len(report.problems) - 20} more (see --json)")
    return report


@project_app.command("create")
def create(
    project: str = typer.Argument(..., help="Project name"),
    images: str = typer.Option(None, "--images", help="Folder (or URI) of images to register"),
    dataset: str = typer.Option(
        None, "--dataset", help="Dataset name (default: top-level subfolder)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Create a project, optionally registering a folder of images."""
    p = Project.create(project, store=store_uri())
    if not as_json:
        console.print(escape(f"created project {project!r} in {p.store_uri}"))
    if images:
        _add(p, images, None, dataset, as_json)
    elif as_json:
        print_json({"project": project, "store": p.store_uri})


@project_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the projects of the store."""
    names = list_projects(store_uri())
    if as_json:
        print_json(names)
    elif not names:
        console.print(f"no projects in {store_uri()} yet: alray project create NAME --images DIR")
    else:
        print_table(None, ["project"], [[n] for n in names])


@project_app.command("show")
def show(project: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Images, labeled and unlabeled counts per dataset and family."""
    p = Project.open(project, store=store_uri())
    counts = p.counts()
    if as_json:
        print_json({"project": project, "store": p.store_uri, "datasets": counts})
        return
    print_table(
        f"{project}: images per dataset",
        ["dataset", "images", *[f"{f} labeled" for f in FAMILIES]],
        [
            [c["dataset"], c["images"], *[c["families"][f]["labeled"] for f in FAMILIES]]
            for c in counts
        ],
    )
    total = sum(c["images"] for c in counts)
    console.print(f"{total} image(s) in {len(counts)} dataset(s)")


@images_app.command("add")
def images_add(
    project: str,
    images: str = typer.Option(None, "--images", help="Folder (or URI) of images"),
    list_file: str = typer.Option(None, "--list", help="CSV/Parquet file with a 'uri' column"),
    dataset: str = typer.Option(
        None, "--dataset", help="Dataset name (default: top-level subfolder)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Register images from a folder or a list; re-adding the same images does nothing."""
    if (images is None) == (list_file is None):
        raise typer.BadParameter("give exactly one of --images DIR or --list FILE")
    _add(Project.open(project, store=store_uri()), images, list_file, dataset, as_json)


@labels_app.command("import")
def labels_import(
    project: str,
    coco: str = typer.Option(None, "--coco", help="COCO JSON file"),
    csv: str = typer.Option(None, "--csv", help="CSV file with image,label rows"),
    image_folder: str = typer.Option(
        None, "--image-folder", help="Folder of <class>/<image> files"
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Import valid labels, report the rest"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import labels; an image's new labels for a family replace its old ones."""
    if sum(x is not None for x in (coco, csv, image_folder)) != 1:
        raise typer.BadParameter("give exactly one of --coco, --csv or --image-folder")
    p = Project.open(project, store=store_uri())
    report = p.import_labels(
        coco=coco, csv=csv, image_folder=image_folder, skip_invalid=skip_invalid
    )
    _labels_added(p, report)
    if as_json:
        print_json(report.to_dict())
        return
    print_table(
        "labels imported",
        ["family", "images", "annotations"],
        [[f, report.images[f], report.annotations[f]] for f in FAMILIES if f in report.images],
    )
    if report.problems:
        err_console.print(f"[yellow]skipped {len(report.problems)} invalid label(s)[/yellow]")
        for prob in report.problems[:20]:
            err_console.print(escape(f"  {prob}"), highlight=False)


def _labels_added(p: Project, report) -> None:
    """Hook for the coordinator (auto-retraining counts labels added through alray)."""
    from alray.cli.coordinator import labels_added

    labels_added(p, report.images)
