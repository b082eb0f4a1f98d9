"""The ``tsops`` command line: thin wrappers that DVC stages, workflows and people call."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

app = typer.Typer(
    help="tsops: continuous training and online inference of time-series models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _mount_wings() -> None:
    """Every wing adds its commands; importing them is cheap (each command imports its
    work when it runs)."""
    from tsops.deploy.cli import commands as deploy_commands
    from tsops.deploy.manifests import manifests_app
    from tsops.monitor.cli import monitor_app, retrain_command
    from tsops.pipeline.cli import commands as pipeline_commands
    from tsops.registry.cli import commands as registry_commands
    from tsops.serving.cli import commands as serving_commands

    for wing in (pipeline_commands, registry_commands, serving_commands, deploy_commands):
        app.add_typer(wing)
    app.add_typer(manifests_app, name="manifests")
    app.add_typer(monitor_app, name="monitor")
    app.command("retrain")(retrain_command)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    import os

    # progress bars of artifact downloads would drown the command's own output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


_mount_wings()

if __name__ == "__main__":
    app()
