"""The serving commands: the model server, batch forecasts, predictions and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tsops.core.errors import reports_errors
from tsops.core.options import ModelName, Root

commands = typer.Typer()


@commands.command()
@reports_errors
def predict(
    model: ModelName,
    alias_name: Annotated[str | None, typer.Option("--alias", help="registry alias")] = None,
    version: Annotated[str | None, typer.Option("--version", help="registry version")] = None,
    series: Annotated[
        list[str] | None, typer.Option("--series", help="series id (repeatable)")
    ] = None,
    h: Annotated[int | None, typer.Option("--h", help="horizon (default: the model's)")] = None,
    level: Annotated[list[float] | None, typer.Option("--level", help="interval level")] = None,
    root: Root = Path("."),
) -> None:
    """Load a model from the MLflow registry and print its forecast."""
    import pandas as pd

    from tsops.core.settings import load_settings
    from tsops.registry.client import connect
    from tsops.registry.loading import Reference, load_pyfunc

    if alias_name is None and version is None:
        alias_name = "challenger"
    ref = str(Reference(model, version=None if alias_name else version, alias=alias_name))
    pyfunc = load_pyfunc(connect(root, load_settings().mlflow_tracking_uri), ref)
    ids = series or _example_ids(pyfunc)
    params: dict[str, Any] = {}
    if h is not None:
        params["h"] = h
    if level:
        params["level"] = level
    from tsops.core.schema import ID_COL

    forecast = pyfunc.predict(pd.DataFrame({ID_COL: ids}), params=params or None)
    typer.echo(f"forecast from {ref}:")
    with pd.option_context("display.width", 160, "display.max_rows", 60):
        typer.echo(forecast.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))


@commands.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    # --help goes to the server's own parser, which lists every flag
    add_help_option=False,
)
@reports_errors
def serve(ctx: typer.Context) -> None:
    """Start the KServe model server (V1 + V2 protocols) on registered or local models.

    Takes kserve's own flags plus --model [NAME=]REF (repeatable), --http_host
    (default 127.0.0.1), --forecast_log_dir; run `tsops serve --help` for all of them.
    """
    from tsops.serving.server import main as serve_main

    serve_main(list(ctx.args))


@commands.command()
@reports_errors
def export(
    reference: Annotated[
        str, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>")
    ],
    out: Annotated[Path, typer.Option("--out", help="directory to write the model to")],
    root: Root = Path("."),
) -> None:
    """Copy a registered model into a directory with release.json (to bake into an image)."""
    from tsops.core.settings import load_settings
    from tsops.registry.client import connect
    from tsops.registry.loading import export_model

    release = export_model(connect(root, load_settings().mlflow_tracking_uri), reference, out)
    typer.echo(f"exported {release['name']} version {release['version']} -> {out}")


@commands.command()
@reports_errors
def forecast(
    model: Annotated[
        str, typer.Option("--model", help="models:/<name>/<version>, @alias or a model directory")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet (or .csv) file to write")],
    h: Annotated[int | None, typer.Option("--h", help="horizon (default: the model's)")] = None,
    level: Annotated[list[float] | None, typer.Option("--level", help="interval level")] = None,
    root: Root = Path("."),
) -> None:
    """Batch forecasts of every series (the CronJob's job), same schema as the online answer."""
    from tsops.core.schema import ID_COL
    from tsops.core.settings import load_settings
    from tsops.registry.loading import registry_for
    from tsops.serving.batch import batch_forecast

    settings = load_settings()
    registry = registry_for([model], root, settings.mlflow_tracking_uri)
    frame = batch_forecast(
        model, out, h=h, levels=level, registry=registry, default_version=settings.model_version
    )
    typer.echo(f"{frame[ID_COL].nunique()} series x {frame['step'].max()} steps -> {out}")


def _example_ids(pyfunc) -> list[str]:
    from tsops.core.schema import ID_COL

    example = pyfunc.input_example
    return list(example[ID_COL]) if example is not None else []
