"""alray's settings: one pydantic-settings class, every field an ``ALRAY_`` environment variable.

Defaults work on one laptop: a store folder in the working directory, a local Ray started on
demand, CPU inference.

>>> from alray.settings import Settings
>>> Settings(store="/tmp/s").store
'/tmp/s'
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ALRAY_"


class SettingsError(ValueError):
    """A setting (usually an ``ALRAY_`` variable) has a value alray cannot use."""


class Settings(BaseSettings):
    """Every knob of alray, read from ``ALRAY_<FIELD>`` environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    store: str = Field("./alray-store", description="Store URI: a folder, s3://, gs://, ...")
    ray_address: str | None = Field(
        None,
        description="Ray cluster to join ('auto', 'ray://host:10001'); unset starts a local Ray",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs for a local Ray started by alray (unset: all)"
    )
    scorer_min_replicas: int = Field(1, ge=1, description="Fewest model replicas while scoring")
    scorer_max_replicas: int | None = Field(
        None, ge=1, description="Most model replicas (unset: CPUs - 1, or one per GPU)"
    )
    batch_size: int = Field(64, ge=1, le=65536, description="Images per model forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: auto picks cuda when a GPU is present"
    )
    mc_samples: int = Field(10, ge=2, le=256, description="Monte-Carlo dropout passes for bald")
    max_concurrent_runs: int = Field(2, ge=1, description="Rank-on-demand runs at once")
    api_token: str | None = Field(None, description="Bearer token the HTTP API requires")

    @model_validator(mode="after")
    def _replica_bounds(self) -> Settings:
        if (
            self.scorer_max_replicas is not None
            and self.scorer_max_replicas < self.scorer_min_replicas
        ):
            raise ValueError(
                f"scorer_max_replicas ({self.scorer_max_replicas}) is below scorer_min_replicas "
                f"({self.scorer_min_replicas})"
            )
        return self


def _explain(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "settings"
        var = f"{ENV_PREFIX}{field.upper()}" if e["loc"] else "settings"
        shown = os.environ.get(var)
        got = f" (got {shown!r})" if shown is not None else ""
        lines.append(f"{var}{got}: {e['msg']}")
    return "invalid alray settings: " + "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with ``overrides`` winning; explain bad values.

    Raises ``SettingsError`` naming the ``ALRAY_`` variable at fault.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as err:
        raise SettingsError(_explain(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings from the environment (cached)."""
    return load_settings()
