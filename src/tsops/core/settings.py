"""The environment variables tsops reads, read in one place.

Nothing else in the package looks at ``os.environ``: a command builds ``Settings()``
once (pydantic-settings reads the variables and checks their types) and passes the
values it needs down as ordinary arguments, so every function can be called with
explicit configuration, in tests and in other programs.

=================================  ==========================================================
``MLFLOW_TRACKING_URI``            the tracking and registry server (default: the embedded
                                   SQLite store ``mlflow.db`` at the repository root)
``TSOPS_DASK_SCHEDULER``           Dask scheduler to fit on (default: local processes)
``TSOPS_DASK_TIMEOUT``             seconds to wait for that scheduler (default 10)
``TSOPS_N_JOBS``                   local worker processes (-1 or unset: all cores)
``TSOPS_PROGRESS_INTERVAL``        seconds between progress lines on a non-terminal (0: every
                                   update)
``TSOPS_FORECAST_LOG_DIR``         where the model server writes and the monitor reads the
                                   forecast log
``TSOPS_FORECAST_LOG_URL``         PostgreSQL for the forecast log (SQLAlchemy URL, e.g.
                                   ``postgresql+psycopg://user:pw@host:5432/db``): the server
                                   writes there (spilling to the log directory while it is
                                   down) and the monitor reads there
``TSOPS_FEATURE_STORE``            the Feast feature repository ``tsops serve`` looks up the
                                   latest actuals in (``--feature_store``; unset: none)
``TSOPS_FEATURE_STORE_REDIS_URL``  the feature store's Redis online store
                                   (``redis://[[user]:password@]host:port[/db]``; unset: the
                                   SQLite file in the repository's ``data/``)
``TSOPS_FEATURE_REGISTRY_URL``     the feature store's registry in a SQL database (SQLAlchemy
                                   URL, e.g. PostgreSQL; unset: the repository's file)
``TSOPS_SERIES_DATABASE_URL``      PostgreSQL a ``source: {kind: sql}`` reads its series from
                                   (SQLAlchemy URL; model.yaml's ``source.url_env`` may name
                                   another variable, read by ``environment_variable``)
``TSOPS_HTTP_HOST``                address the model server listens on (default 127.0.0.1)
``TSOPS_MODEL_VERSION``            version a baked model reports when its release.json has none
``TSOPS_SHADOW_URL``               base URL of a shadow (challenger) release the model server
                                   forwards a copy of each answered request to
                                   (``--shadow_url``; unset: none)
``TSOPS_SHADOW_TIMEOUT_SECONDS``   seconds within which the shadow must answer a copy, or it
                                   is abandoned (``--shadow_timeout_seconds``; default 2)
``TSOPS_CRDS_DIR``                 CRD schemas for ``tsops manifests validate``
``TSOPS_CHECKOV``                  command that runs checkov (default: the one on PATH)
``TERM``                           ``dumb``: plain progress lines even on a terminal
=================================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tsops.core.errors import TsopsError


class Settings(BaseSettings):
    """Values from the environment; an unset variable is ``None`` (the caller's default)."""

    model_config = SettingsConfigDict(env_prefix="TSOPS_", frozen=True, extra="ignore")

    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    dask_scheduler: str | None = None
    dask_timeout: float | None = Field(default=None, gt=0)
    n_jobs: int | None = None
    progress_interval: float | None = Field(default=None, ge=0)
    forecast_log_dir: Path | None = None
    forecast_log_url: str | None = None
    #: a string, so that an empty value (the server's '' = no feature store) stays empty
    feature_store: str | None = None
    feature_store_redis_url: str | None = None
    feature_registry_url: str | None = None
    series_database_url: str | None = None
    http_host: str | None = None
    model_version: str | None = None
    #: a string, so that an empty value (the server's '' = no shadow) stays empty
    shadow_url: str | None = None
    shadow_timeout_seconds: float | None = Field(default=None, gt=0)
    crds_dir: Path | None = None
    checkov: str | None = None
    term: str | None = Field(default=None, validation_alias="TERM")
    #: prometheus_client's folder for the metrics of several server workers (an
    #: operator's choice, kept at exit; ``tsops serve`` makes its own otherwise)
    prometheus_multiproc_dir: Path | None = Field(
        default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR"
    )


def environment_variable(name: str) -> str | None:
    """The variable a configuration file names (``source.url_env`` in model.yaml):
    the one reading of the environment outside ``Settings``, whose fields are fixed."""
    import os

    return os.environ.get(name) or None


class SettingsError(TsopsError):
    """An environment variable tsops reads has a value of the wrong type."""


def load_settings() -> Settings:
    """``Settings()``, with a wrong value reported by its variable's name."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(err['loc'])}={err.get('input')!r}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"{problems}; fix or unset the variable") from exc


def _variable(loc: tuple) -> str:
    field = str(loc[0]) if loc else "?"
    return field if field.isupper() else f"TSOPS_{field.upper()}"
