"""The command-line options several wings' commands share (one spelling, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Root = Annotated[
    Path, typer.Option("--root", help="repository root (holds models/, data/, artifacts/)")
]
ModelName = Annotated[str, typer.Argument(help="model folder name under models/")]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--n-jobs",
        help="local worker processes (-1: all cores; default from TSOPS_N_JOBS or all)",
    ),
]
Cluster = Annotated[
    str | None,
    typer.Option(
        "--cluster",
        metavar="ADDRESS",
        help="Dask scheduler to fit on, e.g. tcp://tsops-dask-scheduler.tsops.svc:8786 "
        "(default: TSOPS_DASK_SCHEDULER; neither: local processes)",
        show_default=False,
    ),
]
Env = Annotated[str, typer.Option("--env", help="overlay: local, staging or production")]
