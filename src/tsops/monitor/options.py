"""The options the ``tsops monitor`` commands share (one spelling, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Model = Annotated[
    str,
    typer.Option(
        "--model", help="model folder under models/: season length, freq and the actuals' source"
    ),
]
LogDir = Annotated[
    Path | None,
    typer.Option(
        "--log",
        help="forecast log directory, read recursively (default: the database "
        "$TSOPS_FORECAST_LOG_URL, else $TSOPS_FORECAST_LOG_DIR, else <root>/forecast-logs); "
        "only records of --model's registered model are used",
    ),
]
Actuals = Annotated[
    Path | None,
    typer.Option(
        "--actuals",
        help="CSV or Parquet long frame (unique_id, ds, y) to score against instead of "
        "the model's source",
    ),
]
Now = Annotated[
    str | None,
    typer.Option("--now", help="target times up to this count as passed (default: now, UTC)"),
]
Since = Annotated[str | None, typer.Option("--since", help="only target times ds at or after this")]
Until = Annotated[
    str | None, typer.Option("--until", help="only target times ds at or before this")
]
Out = Annotated[
    Path | None, typer.Option("--out", help="directory to write the reports to (files replaced)")
]


ToMlflow = Annotated[
    bool,
    typer.Option(
        "--mlflow/--no-mlflow",
        help="append the numbers to the run monitor-<model> of the served version in the "
        "MLflow store ($MLFLOW_TRACKING_URI, else <root>/mlflow.db)",
    ),
]
PrometheusFile = Annotated[
    Path | None,
    typer.Option(
        "--prometheus",
        help="write the numbers as tsops_monitor_* gauges to this .prom file (the "
        "node-exporter textfile collector's format; replaced atomically)",
    ),
]
Pushgateway = Annotated[
    str | None,
    typer.Option("--pushgateway", help="also push the gauges to this Prometheus Pushgateway URL"),
]
