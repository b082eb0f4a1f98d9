"""The ``tsops`` command line: thin wrappers that DVC stages, workflows and people call."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

app = typer.Typer(
    help="tsops: continuous training and online inference of time-series models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: MLflow's switch for the progress bars of artifact downloads
_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def _mount_wings() -> None:
    """Every wing adds its commands; importing them is cheap (each command imports its
    work when it runs)."""
    from tsops.deploy.cli import commands as deploy_commands
    from tsops.deploy.manifests.cli import manifests_app
    from tsops.monitor.bandit_cli import commands as bandit_commands
    from tsops.monitor.cli import monitor_app, retrain_command
    from tsops.pipeline.cli import commands as pipeline_commands
    from tsops.platform.cli import platform_app
    from tsops.platform.features_cli import features_app
    from tsops.registry.cli import commands as registry_commands
    from tsops.serving.cli import commands as serving_commands

    for wing in (pipeline_commands, registry_commands, serving_commands, deploy_commands):
        app.add_typer(wing)
    app.add_typer(bandit_commands)
    app.add_typer(manifests_app, name="manifests")
    app.add_typer(monitor_app, name="monitor")
    app.add_typer(platform_app, name="platform")
    app.add_typer(features_app, name="features")
    app.command("retrain")(retrain_command)


@app.callback()
def main(
    ctx: typer.Context, verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False
) -> None:
    ctx.with_resource(_no_download_bars())
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextlib.contextmanager
def _no_download_bars() -> Iterator[None]:
    """MLflow's artifact downloads without progress bars, while one command runs.

    The bars would drown the command's own output. MLflow reads this switch from the
    environment only (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``, at each download) and
    takes no argument for it, so this is where tsops writes to ``os.environ``: for the
    command's duration (click closes the resource after the command), never over a
    value the user set.
    """
    if _BARS in os.environ:
        yield
        return
    os.environ[_BARS] = "false"
    try:
        yield
    finally:
        os.environ.pop(_BARS, None)


_mount_wings()

if __name__ == "__main__":
    app()
