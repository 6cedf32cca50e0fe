"""Request and response bodies of the HTTP API (pydantic): what ``/openapi.json`` documents.

Every request body forbids unknown fields, so a misspelled field is a 422 that names it rather
than a setting silently ignored. Responses allow extra fields where the coordinator's records
may grow (runs, webhooks, model metas), so a newer coordinator never breaks an older replica.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from alray.families import FAMILIES, REDUCTIONS
from alray.heuristics import HEURISTICS
from alray.notifications import TYPES as NOTIFICATION_TYPES

# Literal[tuple] expands to the tuple's values: the OpenAPI spec lists them as an enum.
Family = Literal[FAMILIES]  # type: ignore[valid-type]
Heuristic = Literal[tuple(HEURISTICS)]  # type: ignore[valid-type]
Reduction = Literal[REDUCTIONS]  # type: ignore[valid-type]
NotificationType = Literal[NOTIFICATION_TYPES]  # type: ignore[valid-type]
RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # project and dataset names (alray.project)
IMAGE_ID_PATTERN = r"^[0-9a-f]{16}$"  # alray.project.image_id_for
RUN_ID_PATTERN = r"^r[0-9]{6,12}$"  # alray.runs.next_run_id
WEBHOOK_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

MAX_PAGE = 1000  # rows per page of ranks or run results
MAX_RUN_N = 100_000  # images a run may return


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


# errors ----------------------------------------------------------------------------------------
class FieldProblem(BaseModel):
    field: str = Field(description="Where: body.name, query.limit, path.project, header...")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx answer: what is wrong and how to fix it."""

    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="Label file problems")


# projects --------------------------------------------------------------------------------------
class ProjectCreate(_Request):
    """Create a project and register images from a folder or a URI list on the server."""

    name: str = Field(pattern=NAME_PATTERN, description="1-64 letters, digits, _ - .")
    images: str | None = Field(
        None, min_length=1, max_length=4096, description="Folder (or store URI) of images"
    )
    list_file: str | None = Field(
        None, min_length=1, max_length=4096, description="CSV/Parquet with a 'uri' column"
    )
    dataset: str | None = Field(None, pattern=NAME_PATTERN, description="Put every image here")


class ProjectRef(BaseModel):
    name: str
    created: str | None = None


class ProjectList(BaseModel):
    projects: list[ProjectRef]


class AddReport(BaseModel):
    added: int
    already_present: int
    ignored: int
    skipped: int
    problems: list[dict[str, str]]
    datasets: dict[str, int]


class ProjectCreated(BaseModel):
    name: str
    created: str | None = None
    images: AddReport | None = None


class LabelCounts(BaseModel):
    labeled: int
    unlabeled: int


class DatasetCounts(BaseModel):
    dataset: str
    images: int
    families: dict[str, LabelCounts]


class FamilySummary(BaseModel):
    labeled: int
    unlabeled: int
    model_version: int | None = None
    rank_version: int | None = None


class ProjectDetail(BaseModel):
    name: str
    created: str | None = None
    images: int
    datasets: list[DatasetCounts]
    families: dict[str, FamilySummary]


# ranks -----------------------------------------------------------------------------------------
class RankItem(BaseModel):
    rank: int = Field(description="1 = most informative; gaps are images labeled since")
    image_id: str
    file_name: str
    dataset: str
    score: float | None = Field(description="Informativeness; null when heuristic is none")


class RankPage(BaseModel):
    project: str
    family: str
    source: Literal["ranks", "alphabetical"] = Field(
        description="ranks: the stored rank version; alphabetical: heuristic none"
    )
    version: int | None = Field(description="Rank version (null for alphabetical order)")
    model_version: int | None
    heuristic: str
    reduction: str | None = None
    ranked_at: str | None = None
    dataset: str | None = None
    total: int = Field(description="Unlabeled images in this ranking (and dataset)")
    offset: int
    limit: int
    items: list[RankItem]


# settings --------------------------------------------------------------------------------------
class FamilySettingsOut(_Record):
    heuristic: str
    reduction: str
    auto: bool
    mc_samples: int | None = None
    retrain_every: int | None = None
    top_n: int
    epochs: int | None = None


class FamilySettingsUpdate(_Request):
    """The settings to change; fields left out keep their value."""

    heuristic: Heuristic = Field(None, description="none = alphabetical order, no ranking")
    reduction: Reduction = Field(None, description="How per-object/pixel scores become one")
    auto: bool = Field(None, description="Re-rank automatically after each training")
    mc_samples: int | None = Field(None, ge=2, le=256, description="MC-dropout passes (bald)")
    retrain_every: int | None = Field(
        None, ge=0, le=10_000_000, description="Retrain after N new labels; 0/null = only asked"
    )
    top_n: int = Field(None, ge=1, le=1_000_000, description="Top N of rank-change summaries")
    epochs: int | None = Field(None, ge=1, le=10_000, description="Epochs of auto training")


class SettingsChange(BaseModel):
    family: str
    settings: FamilySettingsOut
    reranking: bool
    training: bool


class AllSettings(BaseModel):
    families: dict[str, FamilySettingsOut]


class AllSettingsUpdate(_Request):
    """Per family, the settings to change."""

    families: dict[Family, FamilySettingsUpdate] = Field(min_length=1)


class AllSettingsChange(BaseModel):
    families: dict[str, SettingsChange]


# labels, training, models ----------------------------------------------------------------------
class _Coco(BaseModel):
    # strict: a number is not a name, true is not an id; extra: COCO files carry info, licenses…
    model_config = ConfigDict(extra="allow", strict=True)


class CocoImage(_Coco):
    id: int | str
    file_name: str = Field(min_length=1)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    tags: list[str] | str | None = Field(None, description="Image-level tags (tagger)")


class CocoCategory(_Coco):
    id: int | str
    name: str = Field(min_length=1)


class CocoAnnotation(_Coco):
    id: int | str | None = None
    image_id: int | str
    category_id: int | str | None = None
    bbox: list[float] | None = Field(None, min_length=4, max_length=4, description="x, y, w, h")
    segmentation: list[list[float]] | dict[str, Any] | None = Field(
        None, description="Polygons, or RLE {size, counts}"
    )
    attributes: list[str] | dict[str, bool] | None = None


class CocoDoc(_Coco):
    """A COCO label file: images, annotations, categories (image tags in a ``tags`` field)."""

    images: list[CocoImage]
    annotations: list[CocoAnnotation] = Field(default_factory=list)
    categories: list[CocoCategory] = Field(default_factory=list)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its ``$defs`` inlined, for a hand-declared request body
    (a ``#/$defs/…`` reference would point into the OpenAPI document's root)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return walk(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


class RetrainState(BaseModel):
    new_labels: int
    retrain_every: int | None = None
    training: bool


class LabelsImported(BaseModel):
    images: dict[str, int] = Field(description="Labeled images per family")
    annotations: dict[str, int]
    problems: list[str]
    retraining: dict[str, RetrainState] = Field(
        default_factory=dict, description="Per family: labels counted toward the next training"
    )
    queued: bool = Field(
        False, description="The coordinator was unreachable: counts wait in the store inbox"
    )


class TrainRequest(_Request):
    family: Family
    epochs: int | None = Field(None, ge=1, le=10_000)


class TrainStarted(_Record):
    family: str
    token: str | None = None
    labels: int | None = None
    started: str | None = None
    reason: str | None = None
    epochs: int | None = None


class ModelVersion(_Record):
    version: int
    family: str
    created: str | None = None


class ModelList(BaseModel):
    models: list[ModelVersion]


# runs ------------------------------------------------------------------------------------------
class RunCreate(_Request):
    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    family: Family
    heuristic: Heuristic = Field(None, description="Default: the family's configured heuristic")
    n: int = Field(ge=1, le=MAX_RUN_N, description=f"Images to return (1-{MAX_RUN_N})")
    datasets: list[str] | None = Field(
        None, min_length=1, max_length=1000, description="Source datasets (default: all)"
    )
    reduction: Reduction = Field(None, description="Default: the family's reduction")


class RunOut(_Record):
    id: str
    name: str
    family: str
    heuristic: str
    reduction: str | None = None
    n: int
    datasets: list[str] | None = None
    status: RunStatus
    progress: float
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    note: str | None = None
    model_version: int | None = None
    result_rows: int | None = None
    skipped: int | None = None


class ResultPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[RankItem]


class RunDetail(RunOut):
    result: ResultPage | None = Field(None, description="The top n, for completed runs")


class RunList(BaseModel):
    runs: list[RunOut]


# notifications and webhooks --------------------------------------------------------------------
class NotificationOut(BaseModel):
    id: int
    type: str
    time: str
    family: str | None = None
    payload: dict[str, Any]
    key: str | None = None


class NotificationList(BaseModel):
    items: list[NotificationOut]
    last_id: int = Field(description="Pass as ?after= to get only newer ones")
    unread: int


class MarkRead(_Request):
    up_to: int | None = Field(None, ge=0, description="Default: every notification")


class ReadState(BaseModel):
    read_through: int
    unread: int


class WebhookCreate(_Request):
    url: str = Field(
        min_length=8, max_length=2048, pattern=r"^https?://", description="http(s) receiver"
    )
    secret: str = Field(min_length=8, max_length=256, description="HMAC-SHA256 signing key")
    timeout_s: float = Field(None, gt=0, le=300)
    retry_base_s: float = Field(None, gt=0, le=3600)
    retry_max_s: float = Field(None, gt=0, le=86400)


class WebhookOut(_Record):
    id: str
    url: str
    secret: str = Field(description="Always *** in answers")
    delivered_through: int | None = None
    pending: int | None = None


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryList(BaseModel):
    deliveries: list[dict[str, Any]]


class Health(BaseModel):
    status: Literal["ok"]
    auth: bool = Field(description="Whether a bearer token is required")
