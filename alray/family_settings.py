"""Per-family settings of a project: which heuristic ranks it, when it retrains, and more.

Stored as one JSON object in the project store (``settings/families.json``), written
atomically; a family that was never configured has the defaults. The coordinator actor is the
only writer while it runs (``alray settings`` goes through it), so two changes never race.

>>> FamilySettings().heuristic, FamilySettings().retrain_every, FamilySettings().top_n
('margin', 20, 100)
>>> FamilySettings(retrain_every=0).retrain_every is None  # 0 = only when asked
True
>>> FamilySettings(heuristic="nope")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
alray.family_settings.FamilySettingsError: heuristic: unknown heuristic 'nope'; choose one of: ...
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alray import heuristics
from alray._fs import Store
from alray.families import FAMILIES, REDUCTIONS

SETTINGS_PATH = ("settings", "families.json")


class FamilySettingsError(ValueError):
    """A family setting has a value alray cannot use; the message lists the valid ones."""


class FamilySettings(BaseModel):
    """How one family of a project is ranked and retrained."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    heuristic: str = Field(
        heuristics.DEFAULT_HEURISTIC, description="Informativeness heuristic; none = alphabetical"
    )
    reduction: str = Field("mean", description="How per-object/pixel scores become one")
    auto: bool = Field(True, description="Re-rank automatically after each training")
    mc_samples: int | None = Field(
        None,
        ge=2,
        le=256,
        description="Monte-Carlo dropout passes for bald (unset: ALRAY_MC_SAMPLES)",
    )
    retrain_every: int | None = Field(
        20, ge=0, description="Retrain after this many new labels; 0 or unset = only when asked"
    )
    top_n: int = Field(100, ge=1, description="Top N compared in rank-change summaries")
    epochs: int | None = Field(
        None, ge=1, description="Epochs of automatic training (unset: the trainer's default)"
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise FamilySettingsError(explain(err)) from None

    @field_validator("heuristic")
    @classmethod
    def _heuristic(cls, v: str) -> str:
        if v not in heuristics.HEURISTICS:
            raise ValueError(
                f"unknown heuristic {v!r}; choose one of: {', '.join(heuristics.HEURISTICS)}"
            )
        return v

    @field_validator("reduction")
    @classmethod
    def _reduction(cls, v: str) -> str:
        if v not in REDUCTIONS:
            raise ValueError(f"unknown reduction {v!r}; choose one of: {', '.join(REDUCTIONS)}")
        return v

    @field_validator("retrain_every")
    @classmethod
    def _retrain(cls, v: int | None) -> int | None:
        return v or None

    def with_changes(self, **changes: Any) -> FamilySettings:
        """A copy with ``changes`` applied and validated (unknown names are refused)."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise FamilySettingsError(
                f"unknown setting(s) {', '.join(unknown)}; "
                f"settings: {', '.join(type(self).model_fields)}"
            )
        return FamilySettings(**{**self.model_dump(), **changes})


def explain(err: ValidationError) -> str:
    """One line per problem: ``field: what is wrong``, with pydantic's noise left out."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "settings"
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown setting; settings: {', '.join(FamilySettings.model_fields)}"
        lines.append(f"{field}: {msg}")
    return "; ".join(lines)


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise FamilySettingsError(
            f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}"
        )
    return family


def load(store: Store) -> dict[str, FamilySettings]:
    """Every family's settings (defaults for families never configured)."""
    raw: dict[str, Any] = {}
    if store.exists(*SETTINGS_PATH):
        raw = store.read_json(*SETTINGS_PATH)
    out = {}
    for family in FAMILIES:
        try:
            out[family] = FamilySettings(**raw.get(family, {}))
        except FamilySettingsError:
            # A hand-edited file with a bad value must not stop the coordinator: keep defaults
            # for the fields that are fine and drop the bad ones.
            good = {}
            for k, v in raw.get(family, {}).items():
                try:
                    FamilySettings(**{k: v})
                    good[k] = v
                except FamilySettingsError:
                    pass
            out[family] = FamilySettings(**good)
    return out


def save(store: Store, settings: dict[str, FamilySettings]) -> None:
    """Write every family's settings as one JSON object, atomically."""
    store.write_json({f: s.model_dump() for f, s in settings.items()}, *SETTINGS_PATH)
