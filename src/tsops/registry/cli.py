"""The registry's commands: register what the stages wrote, aliases, versions.

Each command builds one MLflow client (``connect``) on the store ``Settings`` names and
passes it down.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tsops.core.errors import reports_errors
from tsops.core.options import ModelName, Root

if TYPE_CHECKING:
    from mlflow import MlflowClient

commands = typer.Typer()


def _client(root: Path) -> MlflowClient:
    from tsops.core.settings import load_settings
    from tsops.registry.client import connect

    return connect(root, load_settings().mlflow_tracking_uri)


@commands.command()
@reports_errors
def register(
    model: ModelName,
    alias: Annotated[str, typer.Option(help="alias to set when the gate passed")] = "challenger",
    no_alias: Annotated[
        bool,
        typer.Option(
            "--no-alias",
            help="register without moving any alias (a pull request's reviewed model, "
            "which its release ships later)",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="check the stage outputs and print the gate's verdict; register nothing "
            "(no registry needed)",
        ),
    ] = False,
    root: Root = Path("."),
) -> None:
    """Publish what the stages wrote (model, metrics, plots, gate.json) as a registered
    version; set the alias if the gate passed (exit 1 if it failed). Runs no stage:
    `dvc repro` first."""
    from tsops.core.verdict import GateResult
    from tsops.registry.publish import read_stage_outputs, register_trained

    # the stage outputs first: a missing or stale gate.json should not wait for the registry
    outputs = read_stage_outputs(root, model)
    typer.echo(GateResult.from_dict(outputs.gate).table())
    if dry_run:
        typer.echo(f"{model}: dry run, nothing registered")
    else:
        registered = register_trained(_client(root), outputs, None if no_alias else alias)
        state = "already registered as" if registered.reused else "registered"
        typer.echo(f"{model}: {state} version {registered.version} (run {registered.run_id})")
    if not outputs.passed:
        moved = "" if dry_run else ", no alias set" if no_alias else f", alias {alias} not moved"
        typer.echo(f"{model}: gate failed{moved}", err=True)
        raise typer.Exit(1)
    if not (no_alias or dry_run):
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
    from tsops.registry.versions import set_alias

    set_alias(_client(root), model, name, version)
    typer.echo(f"{model}: alias {name} -> version {version}")


@commands.command()
@reports_errors
def versions(model: ModelName, root: Root = Path(".")) -> None:
    """List registered versions with aliases, gate result and lineage."""
    from tsops.registry.versions import versions_table

    table = versions_table(_client(root), model)
    typer.echo(table.to_string(index=False) if not table.empty else f"{model}: no versions")
