"""The registry's commands: register what the stages wrote, aliases, versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tsops.core.errors import reports_errors
from tsops.core.options import Cluster, ModelName, Root
from tsops.pipeline.cli import fitting

commands = typer.Typer()


@commands.command()
@reports_errors
def register(
    model: ModelName,
    alias: Annotated[str, typer.Option(help="alias to set when the gate passes")] = "challenger",
    no_alias: Annotated[
        bool,
        typer.Option(
            "--no-alias",
            help="register without moving any alias (a pull request's reviewed model, "
            "which its release ships later)",
        ),
    ] = False,
    cluster: Cluster = None,
    root: Root = Path("."),
) -> None:
    """Log the trained model to MLflow, register a version, set the alias if the gate passes."""
    from tsops.pipeline import steps

    with fitting(cluster):
        registered, result = steps.register(root, model, None if no_alias else alias)
    typer.echo(result.table())
    state = "already registered as" if registered.reused else "registered"
    typer.echo(f"{model}: {state} version {registered.version} (run {registered.run_id})")
    if not result.passed:
        moved = "no alias set" if no_alias else f"alias {alias} not moved"
        typer.echo(f"{model}: gate failed, {moved}", err=True)
        raise typer.Exit(1)
    if not no_alias:
        typer.echo(f"{model}: alias {alias} -> version {registered.version}")


@commands.command()
@reports_errors
def alias(
    model: ModelName,
    name: Annotated[str, typer.Argument(help="alias, e.g. champion or challenger")],
    version: Annotated[str, typer.Argument(help="registered version number")],
    root: Root = Path("."),
) -> None:
    """Point an alias at a version (promotion, or rollback of the champion)."""
    from tsops.registry.store import set_alias

    set_alias(root, model, name, version)
    typer.echo(f"{model}: alias {name} -> version {version}")


@commands.command()
@reports_errors
def versions(model: ModelName, root: Root = Path(".")) -> None:
    """List registered versions with aliases, gate result and lineage."""
    from tsops.registry.store import versions_table

    table = versions_table(root, model)
    typer.echo(table.to_string(index=False) if not table.empty else f"{model}: no versions")
