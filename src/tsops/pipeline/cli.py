"""The pipeline's commands: one per DVC stage (ingest, validate, backtest, train,
evaluate, gate), each a thin wrapper over its stage module."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from tsops.core.errors import TsopsError, reports_errors
from tsops.core.options import Cluster, Jobs, ModelName, Root

commands = typer.Typer()


class UsageError(TsopsError):
    """Arguments that contradict each other."""


class GateFailed(TsopsError):
    """The gate refused the candidate; ``gate.json`` says why."""


@contextlib.contextmanager
def fitting(cluster: str | None) -> Iterator[Any]:
    """Fit on the Dask cluster named by ``--cluster`` or TSOPS_DASK_SCHEDULER (local
    processes if neither), with progress on stderr; yields the progress sink."""
    from tsops.core import progress
    from tsops.core.parallel import use_cluster
    from tsops.core.settings import load_settings

    settings = load_settings()
    with (
        use_cluster(cluster or settings.dask_scheduler, settings.dask_timeout) as client,
        progress.reporting(
            progress.sink_for(sys.stderr, settings.progress_interval, settings.term)
        ) as sink,
    ):
        if client is not None:
            threads = client.nthreads()
            sink.message(
                f"fitting on the Dask cluster at {client.scheduler.address} "
                f"({len(threads)} workers, {sum(threads.values())} threads)"
            )
        yield sink


def _jobs(n_jobs: int | None) -> int | None:
    """``--n-jobs``, else TSOPS_N_JOBS (``None``: all cores)."""
    from tsops.core.settings import load_settings

    return load_settings().n_jobs if n_jobs is None else n_jobs


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
def models_cmd(
    kinds: Annotated[
        bool, typer.Option("--kinds", help="list the forecaster kinds a candidate can name")
    ] = False,
    root: Root = Path("."),
) -> None:
    """List the model folders and what each declares (or, with --kinds, the forecaster
    kinds and their parameters)."""
    if kinds:
        from tsops.forecasters import KINDS, kind_params

        for kind in sorted(KINDS):
            params = ", ".join(f"{k}={v!r}" for k, v in kind_params(kind).items())
            typer.echo(f"{kind:<16} {params or '(no parameters)'}")
        return
    from tsops.core.config import list_models, load_model_config

    for name in list_models(root / "models"):
        config = load_model_config(root / "models", name)
        typer.echo(
            f"{name:<24} freq={config.freq:<4} h={config.horizon:<3} "
            f"candidates={','.join(config.candidates)} rule={config.selection.rule}"
        )


@commands.command()
@reports_errors
def init(
    model: Annotated[str, typer.Argument(help="name of the new model folder, e.g. store-sales")],
    file: Annotated[
        Path, typer.Option("--file", help="CSV or Parquet of the series, in long format")
    ],
    id_col: Annotated[str | None, typer.Option("--id-col", help="column naming the series")] = None,
    time_col: Annotated[str | None, typer.Option("--time-col", help="timestamp column")] = None,
    target_col: Annotated[str | None, typer.Option("--target-col", help="value column")] = None,
    freq: Annotated[
        str | None, typer.Option("--freq", help="pandas alias, e.g. MS (default: inferred)")
    ] = None,
    season_length: Annotated[
        int | None,
        typer.Option("--season-length", min=1, help="periods per season (default: inferred)"),
    ] = None,
    horizon: Annotated[
        int | None, typer.Option("--horizon", min=1, help="steps to forecast (default: inferred)")
    ] = None,
    fill: Annotated[
        str, typer.Option("--fill", help="gaps: none (refuse), ffill, interpolate or zero")
    ] = "none",
    root: Root = Path("."),
) -> None:
    """Make models/<model>/model.yaml for the series in a data file: infers the frequency,
    season length and horizon, writes the shipped defaults with comments, and adds the
    model to params.yaml and the plots of dvc.yaml.

    The file is read and checked as `tsops ingest` reads it; nothing is written if it
    is refused or the folder exists.
    """
    from tsops.pipeline import init as stage

    report = stage.run(
        root, model, file, id_col, time_col, target_col, freq, season_length, horizon, fill
    )
    why = report["why"]
    typer.echo(
        f"{report['model_yaml']}: {report['n_series']} series, {report['n_observations']} rows\n"
        f"  freq {report['freq']} ({why['freq']})\n"
        f"  season_length {report['season_length']} ({why['season_length']})\n"
        f"  horizon {report['horizon']} ({why['horizon']})\n"
        f"added {model} to params.yaml and its plots to dvc.yaml"
    )
    if report["outside_repo"]:
        typer.echo(
            f"note: {file} is outside the repository; copy it in and set source.path, "
            "so that a clone can ingest it again"
        )
    typer.echo(f"next: tsops ingest {model} && dvc add data && dvc repro")


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
    accept_corrections: Annotated[
        bool,
        typer.Option(
            "--accept-corrections",
            help="source kind sql: take the database's values for periods corrected "
            "after they were ingested (reported otherwise)",
        ),
    ] = False,
    root: Root = Path("."),
) -> None:
    """Read a model's source, validate it and write data/<model>/series.parquet.

    Same input gives the same bytes, so the DVC hash of data/ is stable. Nothing is
    written if validation fails.
    """
    from tsops.core.config import list_models
    from tsops.pipeline import ingest as stage

    if all_models == (model is not None):
        raise UsageError("name one model or pass --all")
    names = list_models(root / "models") if all_models else [model]
    for name in names:
        report = stage.run(
            root, name, file, id_col, time_col, target_col, fill, out, accept_corrections
        )
        typer.echo(
            f"{name}: {report['n_series']} series, {report['n_observations']} rows "
            f"{report['start']}..{report['end']} -> {report['path']}"
        )
        for note in report.get("notes", ()):
            typer.secho(f"{name}: {note}", fg=typer.colors.YELLOW, err=True)


@commands.command()
@reports_errors
def validate(
    model: ModelName,
    data: Annotated[
        Path | None, typer.Option(help="file to check instead of data/<model>/")
    ] = None,
    root: Root = Path("."),
) -> None:
    """Check a model's data against its model.yaml: duplicates, gaps, NaN, types, lengths
    (first pipeline stage)."""
    from tsops.pipeline import validate as stage

    report = stage.run(root, model, data)
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
    from tsops.pipeline import backtest as stage

    with fitting(cluster) as sink:
        result = stage.run(root, model, _jobs(n_jobs), sink.message)
    typer.echo(_summary_table(result["candidates"]))
    typer.echo(
        f"{model}: rule {result['rule']}, members {', '.join(result['members'])} "
        f"({result['seconds']:.1f} s)"
    )
    for series_class, row in result.get("classes", {}).items():
        typer.echo(
            f"{model}: {row['series']} {series_class} series apart: rule {row['rule']}, "
            f"members {', '.join(row['members'])}"
        )


@commands.command()
@reports_errors
def train(
    model: ModelName, n_jobs: Jobs = None, cluster: Cluster = None, root: Root = Path(".")
) -> None:
    """Fit the selected model on all data; save it under artifacts/<model>/model/."""
    from tsops.pipeline import train as stage

    with fitting(cluster):
        result = stage.run(root, model, _jobs(n_jobs))
    counts = ", ".join(f"{n} {c}" for c, n in result.get("class_counts", {}).items() if n)
    typer.echo(
        f"{model}: trained {result['rule']} of {', '.join(result['members'])} "
        f"(cutoff {result['cutoff']}; series: {counts})"
    )


@commands.command()
@reports_errors
def evaluate(model: ModelName, root: Root = Path(".")) -> None:
    """Write metrics.json, tables and plots from the backtest (for dvc metrics/plots)."""
    from tsops.pipeline import evaluate as stage

    doc = stage.run(root, model)
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
    n_jobs: Jobs = None,
    cluster: Cluster = None,
    root: Root = Path("."),
) -> None:
    """Compare the candidate with seasonal naive and the champion; write
    artifacts/<model>/gate.json, then exit 1 if the gate failed.

    The champion's candidates that today's model.yaml also declares are taken from
    today's backtest; the others are backtested again on its windows (on --cluster if
    given).
    """
    from tsops.core.paths import ModelPaths
    from tsops.core.settings import load_settings
    from tsops.pipeline import gate as stage

    tracking_uri = None if no_champion else load_settings().mlflow_tracking_uri
    with fitting(cluster):
        result = stage.run(
            root,
            model,
            against_champion=not no_champion,
            tracking_uri=tracking_uri,
            n_jobs=_jobs(n_jobs),
        )
    typer.echo(result.table())
    champion = result.champion
    if champion is not None:
        reused = ", ".join(champion.reused) or "none"
        refitted = ", ".join(champion.refitted) or "none"
        typer.echo(
            f"champion v{champion.version} on today's windows: backtests reused for "
            f"{reused}; refitted: {refitted}"
        )
    if not result.passed:
        failed = ", ".join(c.name for c in result.failed)
        raise GateFailed(
            f"{model}: the gate failed ({failed}); the verdict is in {ModelPaths(root, model).gate}"
        )
