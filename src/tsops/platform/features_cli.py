"""``tsops features apply|materialize|show``: the Feast feature store of a model.

The online store is the repository's SQLite file unless ``TSOPS_FEATURE_STORE_REDIS_URL``
names a Redis; the registry its file unless ``TSOPS_FEATURE_REGISTRY_URL`` names a SQL
database (``tsops.platform.features``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsops.core.errors import reports_errors
from tsops.core.options import ModelName, Root

features_app = typer.Typer(
    help="The Feast feature store: each series' latest observations and the gbm's features.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Repo = Annotated[
    Path,
    typer.Option(
        "--repo", help="the Feast feature repository (feature_store.yaml), relative to --root"
    ),
]


def _stores() -> tuple[str | None, str | None]:
    from tsops.core.settings import load_settings

    settings = load_settings()
    return settings.feature_store_redis_url, settings.feature_registry_url


@features_app.command("apply")
@reports_errors
def apply_command(model: ModelName, repo: Repo = Path("features"), root: Root = Path(".")) -> None:
    """Register the model's entity and feature views (materialize does it too)."""
    from tsops.platform.features import apply

    redis_url, registry_url = _stores()
    names = apply(root, model, repo, redis_url=redis_url, registry_url=registry_url)
    typer.echo(f"applied {', '.join(names)} to {root / repo}")


@features_app.command("materialize")
@reports_errors
def materialize_command(
    model: ModelName,
    repo: Repo = Path("features"),
    root: Root = Path("."),
    periods: Annotated[
        int | None,
        typer.Option(
            "--periods",
            min=1,
            help="observations kept per series (default: what every member of the model "
            "needs to start from them alone)",
        ),
    ] = None,
) -> None:
    """Load each series' latest observations and gbm features into the online store.

    Rewrites the offline tables from data/<model>/series.parquet, registers the views
    and loads the latest row of every series; safe to repeat.
    """
    from tsops.platform.features import materialize

    redis_url, registry_url = _stores()
    done = materialize(
        root, model, repo, redis_url=redis_url, registry_url=registry_url, periods=periods
    )
    typer.echo(
        f"materialized {', '.join(done.views)}: {done.series} series, the last "
        f"{done.periods} observations of each, latest period {done.latest.date()}, "
        f"into {done.online_store} ({done.seconds:.1f} s)"
    )


@features_app.command("show")
@reports_errors
def show_command(
    model: ModelName,
    series: Annotated[list[str], typer.Option("--series", help="series id (repeatable)")],
    repo: Repo = Path("features"),
    root: Root = Path("."),
) -> None:
    """Print what the online store holds for some series: cutoff and latest values."""
    from tsops.core.config import load
    from tsops.platform.features import OnlineFeatures

    redis_url, registry_url = _stores()
    config, _ = load(root, model)
    online = OnlineFeatures(root / repo, redis_url, registry_url, timeout=5.0)
    found, problem = online.history_of(model, config.freq, retry_after=0).latest(series)
    if problem:
        from tsops.platform.features import FeatureStoreError

        raise FeatureStoreError(problem)
    for uid in series:
        history = found.get(uid)
        if history is None:
            typer.echo(f"{uid}: not in the online store")
            continue
        tail = ", ".join(f"{v:g}" for v in history.y[-3:])
        typer.echo(
            f"{uid}: cutoff {history.ds[-1].date()}, {len(history.y)} observations (last: {tail})"
        )
