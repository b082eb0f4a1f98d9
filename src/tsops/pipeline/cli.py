"""The pipeline's commands: one per DVC stage (ingest, validate, backtest, train,
evaluate, gate), each a thin wrapper over its stage module."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from tsops.core.errors import fail, reports_errors
from tsops.core.options import Cluster, Jobs, ModelName, Root

commands = typer.Typer()


@contextlib.contextmanager
def fitting(cluster: str | None) -> Iterator[Any]:
    """Fit on the Dask cluster named by ``--cluster`` or TSOPS_DASK_SCHEDULER (local
    processes if neither), with progress on stderr; yields the progress sink."""
    from tsops.core import progress
    from tsops.core.parallel import use_cluster

    with (
        use_cluster(cluster) as client,
        progress.reporting(progress.sink_for(sys.stderr)) as sink,
    ):
        if client is not None:
            threads = client.nthreads()
            sink.message(
                f"fitting on the Dask cluster at {client.scheduler.address} "
                f"({len(threads)} workers, {sum(threads.values())} threads)"
            )
        yield sink


def _summary_table(candidates: dict[str, dict]) -> str:
    """``tsops backtest``'s closing table: time, rate and accuracy per candidate."""

    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"{'candidate':<20} {'series':>7} {'fit+fcst s':>10} {'series/s':>9} "
        f"{'sMAPE':>7} {'MASE':>7}"
    ]
    for name, row in candidates.items():
        lines.append(
            f"{name:<20} {row['series']:>7,} {row['seconds']:>10.1f} "
            f"{number(row['series_per_s'], ',.1f'):>9} {number(row['smape'], '.2f'):>7} "
            f"{number(row['mase'], '.3f'):>7}"
        )
    return "\n".join(lines)


@commands.command("models")
@reports_errors
def models_cmd(root: Root = Path(".")) -> None:
    """List the model folders and what each declares."""
    from tsops.core.config import list_models, load_model_config

    for name in list_models(root / "models"):
        config = load_model_config(root / "models", name)
        typer.echo(
            f"{name:<24} freq={config.freq:<4} h={config.horizon:<3} "
            f"candidates={','.join(config.candidates)} rule={config.selection.rule}"
        )


@commands.command()
@reports_errors
def ingest(
    model: Annotated[str | None, typer.Argument(help="model folder; omit with --all")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="ingest every model folder")] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="CSV or Parquet to read instead of model.yaml's source"),
    ] = None,
    id_col: Annotated[str | None, typer.Option("--id-col", help="column naming the series")] = None,
    time_col: Annotated[str | None, typer.Option("--time-col", help="timestamp column")] = None,
    target_col: Annotated[str | None, typer.Option("--target-col", help="value column")] = None,
    fill: Annotated[
        str | None, typer.Option("--fill", help="fill gaps: none, ffill, interpolate or zero")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write here instead of data/<model>/")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Read a model's source, validate it and write data/<model>/series.parquet.

    Same input gives the same bytes, so the DVC hash of data/ is stable. Nothing is
    written if validation fails.
    """
    from tsops.core.config import list_models
    from tsops.pipeline import steps

    if all_models == (model is not None):
        fail("name one model or pass --all")
    names = list_models(root / "models") if all_models else [model]
    for name in names:
        report = steps.ingest(root, name, file, id_col, time_col, target_col, fill, out)
        typer.echo(
            f"{name}: {report['n_series']} series, {report['n_observations']} rows "
            f"{report['start']}..{report['end']} -> {report['path']}"
        )


@commands.command()
@reports_errors
def validate(
    model: ModelName,
    data: Annotated[
        Path | None, typer.Option(help="file to check instead of data/<model>/")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Check a model's data: duplicates, gaps, NaN, types, lengths (first pipeline stage)."""
    from tsops.pipeline import steps

    report = steps.validate(root, model, data)
    typer.echo(f"{model}: valid, {report['n_series']} series, {report['n_observations']} rows")


@commands.command()
@reports_errors
def backtest(
    model: ModelName, n_jobs: Jobs = None, cluster: Cluster = None, root: Root = Path(".")
) -> None:
    """Rolling-origin backtest of every candidate, then the selection rule.

    Shows progress on stderr and ends with a table of time, series/s, sMAPE and MASE
    per candidate.
    """
    from tsops.pipeline import steps

    with fitting(cluster) as sink:
        result = steps.backtest(root, model, n_jobs, progress=sink.message)
    typer.echo(_summary_table(result["candidates"]))
    typer.echo(
        f"{model}: rule {result['rule']}, members {', '.join(result['members'])} "
        f"({result['seconds']:.1f} s)"
    )


@commands.command()
@reports_errors
def train(
    model: ModelName, n_jobs: Jobs = None, cluster: Cluster = None, root: Root = Path(".")
) -> None:
    """Fit the selected model on all data; save it under artifacts/<model>/model/."""
    from tsops.pipeline import steps

    with fitting(cluster):
        result = steps.train(root, model, n_jobs)
    typer.echo(
        f"{model}: trained {result['rule']} of {', '.join(result['members'])} "
        f"(cutoff {result['cutoff']})"
    )


@commands.command()
@reports_errors
def evaluate(model: ModelName, root: Root = Path(".")) -> None:
    """Write metrics.json and plots from the backtest (for dvc metrics/plots)."""
    from tsops.pipeline import steps

    doc = steps.evaluate_step(root, model)
    sel = doc["selected"]
    typer.echo(
        f"{model}: MASE {sel['mase']:.4f} sMAPE {sel['smape']:.2f} "
        f"RMSSE {sel['rmsse']:.4f} skill vs naive {doc['skill_vs_naive']:.1%}"
    )


@commands.command()
@reports_errors
def gate(
    model: ModelName,
    no_champion: Annotated[
        bool, typer.Option("--no-champion", help="skip the comparison with the registry's champion")
    ] = False,
    cluster: Cluster = None,
    root: Root = Path("."),
) -> None:
    """Compare the candidate with seasonal naive and the champion; exit 1 when it fails.

    The champion's method is backtested again on today's data (on --cluster if given).
    """
    from tsops.pipeline import steps

    with fitting(cluster):
        result = steps.gate(root, model, against_champion=not no_champion)
    typer.echo(result.table())
    if not result.passed:
        raise typer.Exit(1)
