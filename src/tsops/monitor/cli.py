"""``tsops monitor``: realized accuracy and canary verdicts from the forecast log.

Thin wrappers: read the log and the actuals, call ``tsops.monitor.accuracy`` /
``tsops.monitor.canary``, print, and write reports atomically with ``tsops.core.io``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tsops.core.errors import reports_errors

if TYPE_CHECKING:
    import pandas as pd

    from tsops.monitor.accuracy import AccuracyResult

monitor_app = typer.Typer(
    help="Realized accuracy of served forecasts and canary verdicts, per model version.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: exit code of ``canary`` when the verdict is rollback (1 is an error, 2 a usage error)
ROLLBACK_EXIT = 3
LOG_DIR_ENV = "TSOPS_FORECAST_LOG_DIR"

Root = Annotated[
    Path, typer.Option("--root", help="repository root (holds models/, data/, artifacts/)")
]
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
        help="forecast log directory, read recursively (default: $TSOPS_FORECAST_LOG_DIR, "
        "else <root>/forecast-logs); only records of --model's registered model are used",
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


def _score(
    root: Path,
    model: str,
    log: Path | None,
    actuals: Path | None,
    now: str | None,
    since: str | None,
    until: str | None,
    observed: pd.DataFrame | None = None,
) -> AccuracyResult:
    """Realized accuracy of ``model``'s logged forecasts; ``observed``: the actuals,
    when the caller has read them already."""
    from tsops.monitor.accuracy import load_forecast_log, realized_accuracy
    from tsops.pipeline import steps

    config, _ = steps.load(root, model)
    log_dir = _log_dir(root, log)
    records = _of_model(load_forecast_log(log_dir), model, log_dir)
    return realized_accuracy(
        records,
        _load_actuals(root, config, actuals) if observed is None else observed,
        config.season_length,
        now=now,
        period=(since, until),
    )


def _of_model(log: pd.DataFrame, model: str, log_dir: Path) -> pd.DataFrame:
    """The records of ``model``'s registered versions (a log directory can hold others)."""
    from tsops.monitor.accuracy import MonitorError

    if "registered_model" not in log.columns:
        return log
    mine = log["registered_model"].astype(str) == model
    if not mine.any():
        others = ", ".join(sorted(log["registered_model"].astype(str).unique()))
        raise MonitorError(
            f"{log_dir} has no forecasts of registered model {model!r} (it has: {others}); "
            "pass the --model those forecasts belong to, or the --log of this model's server"
        )
    if not mine.all():
        others = ", ".join(sorted(log.loc[~mine, "registered_model"].astype(str).unique()))
        typer.echo(
            f"note: {int((~mine).sum())} record(s) of other registered models ignored ({others})",
            err=True,
        )
    return log[mine].reset_index(drop=True)


def _load_actuals(root: Path, config: Any, override: Path | None) -> pd.DataFrame:
    from tsops.core.io import read_frame
    from tsops.monitor.accuracy import prepare_actuals
    from tsops.pipeline.ingest import load_source

    if override is not None:
        return prepare_actuals(read_frame(override))
    source = config.source
    raw = load_source(source, config.freq, root)
    return prepare_actuals(
        raw, id_col=source.id_col, time_col=source.time_col, target_col=source.target_col
    )


def _served_version(
    result: AccuracyResult, wanted: str | None = None
) -> tuple[str | None, float | None, int]:
    """The version the policy judges, its realized MASE and scored pairs.

    ``wanted``, or else the version with the most scored pairs (the one taking most of
    the traffic: during a canary, the champion), the most recently served on a tie.
    """
    import pandas as pd

    pairs = result.pairs()
    if pairs.empty:
        return None, None, 0
    versions = result.by_version.assign(model_version=lambda f: f["model_version"].astype(str))
    if wanted is None:
        latest = pairs.groupby(pairs["model_version"].astype(str))["served_at"].max()
        totals = versions.groupby("model_version")["n"].sum()
        ranked = pd.DataFrame({"n": totals, "latest": latest}).fillna({"n": 0})
        wanted = str(ranked.sort_values(["n", "latest"], ascending=False).index[0])
    rows = versions[versions["model_version"] == wanted]
    if rows.empty:
        return wanted, None, 0
    best = rows.sort_values("n", ascending=False).iloc[0]
    return wanted, float(best["mase"]), int(best["n"])


def _backtest_mase(root: Path, model: str, version: str) -> float | None:
    """The backtest MASE the registry recorded for ``version`` (None if unknown)."""
    from mlflow.exceptions import MlflowException

    from tsops.registry.store import RegistryError, client

    try:
        c = client(root)
        run_id = c.get_model_version(model, version).run_id
        value = c.get_run(run_id).data.metrics.get("selected.mase")
    except (MlflowException, RegistryError):
        return None  # the decision reports the expectation as unknown
    return None if value is None else float(value)


def _drift_of(
    config: Any, trained: pd.DataFrame, observed: pd.DataFrame
) -> tuple[bool | None, str]:
    """Evidently's dataset drift of the actuals after the training data, for the policy."""
    from tsops.monitor.accuracy import MonitorError
    from tsops.monitor.drift import drift_report

    current = _after_training(trained, observed)
    try:
        report = drift_report(
            trained,
            current,
            season_length=config.season_length,
            threshold=config.monitoring.drift_threshold,
            freq=config.freq,
        )
    except MonitorError as exc:
        return None, f"not measured: {exc}"
    return report.dataset_drift, (
        f"share of drifted features {report.drift_share:.2f} "
        f"(dataset drift at >= {config.monitoring.drift_threshold})"
    )


def _after_training(trained: pd.DataFrame, observed: pd.DataFrame) -> pd.DataFrame:
    """The actuals after each series' training data (all of a series not trained on)."""
    from tsops.core.schema import ID_COL, TIME_COL

    trained_until = observed[ID_COL].map(trained.groupby(ID_COL)[TIME_COL].max())
    return observed[trained_until.isna() | (observed[TIME_COL] > trained_until)]


def _pipeline_runner(root: Path) -> Callable[[list[str]], None]:
    import subprocess
    import sys

    from tsops.monitor.accuracy import MonitorError

    tools = Path(sys.executable).parent

    def run(cmd: list[str]) -> None:
        exe = tools / cmd[0]
        full = [str(exe) if exe.exists() else cmd[0], *cmd[1:]]
        done = subprocess.run(full, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-1500:]
            raise MonitorError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")

    return run


@reports_errors
def retrain_command(
    model: Annotated[str, typer.Argument(help="model folder under models/")],
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="when a trigger fires: on a branch retrain/<model>-<data hash>, ingest the "
            "new data, update data.dvc, run the pipeline, commit (once per data)",
        ),
    ] = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="registry version whose realized error counts (default: the one with "
            "the most scored forecasts, i.e. the champion during a canary)",
        ),
    ] = None,
    out: Out = None,
    root: Root = Path("."),
) -> None:
    """Decide whether MODEL needs retraining, by the policy in its model.yaml.

    Triggers (monitoring.retrain): new complete periods of actuals since the training
    data, the served version's realized MASE above max_error_ratio times its backtest
    MASE (the registry's), drift. Prints the decision as JSON (every trigger with its
    numbers); with --apply and a fired trigger, also the branch and whether it was
    created now (false: prepared before for the same data).
    """
    from tsops.core.io import read_frame, write_json
    from tsops.monitor.accuracy import MonitorError
    from tsops.monitor.retrain import data_fingerprint, decide, new_complete_periods
    from tsops.monitor.retrain import prepare_branch as prepare
    from tsops.pipeline import steps

    config, paths = steps.load(root, model)
    if not paths.data.exists():
        raise MonitorError(
            f"{paths.data} does not exist: run `tsops ingest {model}` or `dvc pull` first"
        )
    current = _load_actuals(root, config, actuals)
    trained = read_frame(paths.data)
    log_dir = _log_dir(root, log)
    realized, n_scored, expected = None, 0, None
    if log_dir.exists() and any(log_dir.rglob("part-*")):
        version, realized, n_scored = _served_version(
            _score(root, model, log, actuals, now, None, None, observed=current), version
        )
        if version is not None:
            expected = _backtest_mase(root, model, version)
    drift_detected, drift_detail = None, "off (on_drift: false)"
    if config.monitoring.retrain.on_drift:
        drift_detected, drift_detail = _drift_of(config, trained, current)
    decision = decide(
        model,
        config.monitoring.retrain,
        new_periods=new_complete_periods(trained, current, config.freq),
        realized_mase=realized,
        n_scored=n_scored,
        expected_mase=expected,
        served_version=version,
        drift_detected=drift_detected,
        drift_detail=drift_detail,
        data_fingerprint=data_fingerprint(current),
    )
    typer.echo(decision.summary(), err=True)
    document = decision.to_dict()
    if apply and decision.fire:
        branch, created = prepare(root, decision, _pipeline_runner(root))
        document.update(branch=branch, created=created)
        state = "prepared" if created else "already prepared (same data): nothing new"
        typer.echo(f"{branch}: {state}", err=True)
    if out is not None:
        write_json(document, out / "retrain.json")
    typer.echo(_json(document))


def _write_plots(root: Path, model: str, result: AccuracyResult, out: Path) -> None:
    """Realized error over time and forecast vs actual, with a markdown page linking them."""
    from tsops.monitor.plots import forecast_vs_actual, plots_markdown, realized_error_over_time

    versions = sorted(result.scored["model_version"].astype(str).unique())
    expected = {v: m for v in versions if (m := _backtest_mase(root, model, v)) is not None}
    paths = [
        realized_error_over_time(result.scored, out / "realized_error.png", expected=expected),
        forecast_vs_actual(result.scored, out / "forecast_vs_actual.png"),
    ]
    _write_text(
        plots_markdown(paths, f"{model}: realized accuracy", relative_to=out), out / "report.md"
    )
    typer.echo(f"wrote {out}/report.md with {len(paths)} plots")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    from tsops.core.io import atomic_path

    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def _write_text(text: str, path: Path) -> None:
    from tsops.core.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str)


@monitor_app.command()
@reports_errors
def accuracy(
    model: Model,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    since: Since = None,
    until: Until = None,
    out: Out = None,
    root: Root = Path("."),
) -> None:
    """Realized MASE, sMAPE and interval coverage per model version, series and step.

    Forecasts whose target time has passed but whose actual is missing are reported
    as late, those with a target time in the future as pending. With --out, writes
    accuracy.json, by_version.csv, by_series.csv, by_step.csv, late.csv and
    pairs.parquet (every record with its status).
    """
    from tsops.core.io import write_json, write_parquet

    result = _score(root, model, log, actuals, now, since, until)
    typer.echo(result.summary())
    if out is not None:
        write_json(result.to_dict(), out / "accuracy.json")
        _write_csv(result.by_version, out / "by_version.csv")
        _write_csv(result.by_series, out / "by_series.csv")
        _write_csv(result.by_step, out / "by_step.csv")
        _write_csv(result.late, out / "late.csv")
        write_parquet(result.pairs(), out / "pairs.parquet")
        typer.echo(f"wrote {out}/accuracy.json and tables")
        if not result.scored.empty:
            _write_plots(root, model, result, out)


@monitor_app.command()
@reports_errors
def canary(
    model: Model,
    baseline: Annotated[
        str,
        typer.Option(
            "--baseline", help="version serving now: 3, a served name (champion) or NAME:VERSION"
        ),
    ],
    candidate: Annotated[
        str,
        typer.Option(
            "--candidate", help="version under test: 4, a served name (challenger) or NAME:VERSION"
        ),
    ],
    alpha: Annotated[float, typer.Option("--alpha", help="significance level")] = 0.05,
    margin: Annotated[
        float,
        typer.Option(
            "--margin", help="non-inferiority margin: relative to the baseline's MASE (0.02 = 2%)"
        ),
    ] = 0.02,
    min_targets: Annotated[
        int, typer.Option("--min-targets", help="paired target times needed before any verdict")
    ] = 12,
    power: Annotated[
        float, typer.Option("--power", help="power of the sample size reported with hold")
    ] = 0.8,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="turn promote or rollback into the GitOps change (tsops canary --percent "
            "100 / tsops rollback) committed on a branch canary/<model>-<env>-<verdict>-v<N>, "
            "ready to open as a pull request; the working copy stays where it is",
        ),
    ] = False,
    env: Annotated[
        str, typer.Option("--env", help="overlay the canary runs in (with --apply)")
    ] = "production",
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    since: Since = None,
    until: Until = None,
    out: Out = None,
    root: Root = Path("."),
) -> None:
    """Diebold–Mariano test of candidate against baseline on the same series and targets.

    Prints the verdict as JSON on stdout (the summary goes to stderr) and exits 0 for
    promote or hold, 3 for rollback, 1 on an error. With --apply the JSON's "applied"
    names the branch holding the change (null for hold). With --out, writes canary.json,
    canary.md and canary_targets.csv (the loss differential per target time).
    """
    from tsops.core.io import write_json
    from tsops.monitor.canary import compare_versions

    result = _score(root, model, log, actuals, now, since, until)
    typer.echo(result.summary().splitlines()[0], err=True)
    verdict = compare_versions(
        result.scored,
        baseline,
        candidate,
        alpha=alpha,
        margin=margin,
        min_targets=min_targets,
        power=power,
    )
    document = verdict.to_dict()
    if apply:
        from tsops.monitor.canary import apply_verdict

        document["applied"] = apply_verdict(root, model, env, verdict)
    if out is not None:
        write_json(document, out / "canary.json")
        _write_text(verdict.to_markdown(), out / "canary.md")
        _write_csv(verdict.per_target, out / "canary_targets.csv")
    typer.echo(_json(document))
    if verdict.verdict == "rollback":
        raise typer.Exit(ROLLBACK_EXIT)


# ------------------------------------------------------------------- drift and staleness

#: exit code of ``drift`` and ``staleness`` when an alert fires (1 is an error, 2 a
#: usage error, 3 a canary rollback), so a CronJob or workflow can tell them apart
ALERT_EXIT = 4

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


def _log_dir(root: Path, log: Path | None) -> Path:
    return log or Path(os.environ.get(LOG_DIR_ENV) or root / "forecast-logs")


def _latest_served(model: str, log_dir: Path) -> tuple[str, pd.DataFrame]:
    """The version served most recently and its log records.

    "Most recently" is the newest ``served_at``. During a canary both versions answer
    and whichever answered last is taken: point --log at one server's folder to choose.
    """
    from tsops.monitor.accuracy import load_forecast_log

    records = _of_model(load_forecast_log(log_dir), model, log_dir)
    version = str(records.loc[records["served_at"].idxmax(), "model_version"])
    return version, records[records["model_version"] == version].reset_index(drop=True)


def _served_cutoffs(records: pd.DataFrame) -> pd.Series:
    """Per series, the cutoff of the most recent forecast served of it.

    That is the cutoff clients last got: the model's training cutoff, or a later one
    when the request sent history (the forecast then starts after that history).
    """
    latest = records.sort_values(["served_at", "cutoff"], kind="stable").drop_duplicates(
        "unique_id", keep="last"
    )
    return latest.set_index("unique_id")["cutoff"]


def _publish(
    numbers: dict[str, float],
    model: str,
    version: str,
    check: str,
    root: Path,
    to_mlflow: bool,
    prometheus: Path | None,
    pushgateway: str | None,
) -> None:
    from tsops.monitor.accuracy import MonitorError
    from tsops.monitor.publish import log_to_mlflow, push_prometheus, write_prometheus
    from tsops.registry.store import RegistryError

    labels = {"model": model, "version": version}
    if prometheus is not None:
        write_prometheus(numbers, labels, prometheus)
        typer.echo(f"wrote {prometheus}")
    if pushgateway is not None:
        push_prometheus(
            numbers,
            labels,
            pushgateway,
            job=f"tsops_monitor_{check}",
            grouping_key={"model": model},
        )
        typer.echo(f"pushed to {pushgateway} (job tsops_monitor_{check})")
    if to_mlflow:
        try:
            run_id = log_to_mlflow(numbers, model, version, root=root)
        except RegistryError as exc:
            raise MonitorError(f"the numbers were not logged to MLflow: {exc}") from exc
        typer.echo(f"logged to MLflow run {run_id} (monitor-{model}, version {version})")


@monitor_app.command()
@reports_errors
def drift(
    model: Model,
    log: LogDir = None,
    actuals: Actuals = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="start of the current window; the reference is the training data before "
            "it (default: each series' actuals after its training data)",
        ),
    ] = None,
    out: Out = None,
    to_mlflow: ToMlflow = False,
    prometheus: PrometheusFile = None,
    pushgateway: Pushgateway = None,
    root: Root = Path("."),
) -> None:
    """Evidently data drift of the actuals since training against the training data.

    The reference is the model's ingested data (data/<model>/series.parquet), the
    current window the actuals (the model's source, or --actuals) after it. Both become
    per-series scaled features (level, seasonal change, period-over-period change) so
    series of different scales compare. With a forecast log (--log, or the default when
    it exists) the served version's realized forecast quality is added, and the numbers
    are labelled with that version.

    Exits 0 without drift, 4 when the share of drifted features reaches
    monitoring.drift_threshold in model.yaml, 1 on an error. With --out, writes
    Evidently's drift.html and drift.json (quality.html and quality.json with scored
    forecasts) and drift_summary.json.
    """
    from tsops.core.schema import TIME_COL
    from tsops.monitor.accuracy import _as_utc_naive, realized_accuracy
    from tsops.monitor.drift import drift_report
    from tsops.pipeline import steps

    config, paths = steps.load(root, model)
    reference = steps.read_data(paths, config)
    observed = _load_actuals(root, config, actuals)
    if since is not None:
        start = _as_utc_naive(since)
        reference = reference[reference[TIME_COL] < start]
        current = observed[observed[TIME_COL] >= start]
    else:
        current = _after_training(reference, observed)

    log_dir = _log_dir(root, log)
    version, scored = "unknown", None
    if log is None and not (log_dir.is_dir() and any(log_dir.rglob("part-*"))):
        # drift needs no forecasts; without any, there is just no quality to report
        typer.echo(
            f"note: no forecast log in {log_dir}, so no forecast quality and version "
            "'unknown' (pass --log)",
            err=True,
        )
    else:
        version, records = _latest_served(model, log_dir)
        scored = realized_accuracy(
            records, observed, config.season_length, period=(since, None)
        ).scored
    result = drift_report(
        reference,
        current,
        season_length=config.season_length,
        threshold=config.monitoring.drift_threshold,
        scored=scored,
        freq=config.freq,
    )
    typer.echo(f"{model} (served version {version})")
    typer.echo(result.summary())
    if out is not None:
        written = result.save(out)
        typer.echo(f"wrote {', '.join(str(p) for p in written)}")
    _publish(result.numbers(), model, version, "drift", root, to_mlflow, prometheus, pushgateway)
    if result.dataset_drift:
        typer.secho(
            f"alert: the data drifted ({', '.join(result.drifted_columns)}); look at "
            f"drift.html (--out), then retrain on the new data (`tsops retrain {model}`) "
            "if the change is real",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(ALERT_EXIT)


@monitor_app.command()
@reports_errors
def staleness(
    model: Model,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Annotated[
        str | None, typer.Option("--now", help="the time ages are counted to (default: now, UTC)")
    ] = None,
    out: Out = None,
    to_mlflow: ToMlflow = False,
    prometheus: PrometheusFile = None,
    pushgateway: Pushgateway = None,
    root: Root = Path("."),
) -> None:
    """Is the served model stale, are the actuals overdue? Ages in periods of freq.

    The served cutoff of a series is the cutoff of its most recent forecast in the
    forecast log, from the version served most recently. Stale: that cutoff is more
    than monitoring.stale_after_periods periods old; overdue: the newest actual of a
    series (the model's source, or --actuals) is more than
    monitoring.actuals_overdue_periods periods old.

    Exits 0 when both are fine, 4 when either alert fires, 1 on an error. With --out,
    writes staleness.json and staleness_by_series.csv.
    """
    from tsops.core.io import write_json
    from tsops.core.schema import ID_COL, TIME_COL
    from tsops.monitor.accuracy import _utc_now
    from tsops.monitor.staleness import staleness as check_staleness
    from tsops.pipeline import steps

    config, _ = steps.load(root, model)
    version, records = _latest_served(model, _log_dir(root, log))
    observed = _load_actuals(root, config, actuals)
    result = check_staleness(
        now if now is not None else _utc_now(),
        _served_cutoffs(records),
        observed.groupby(ID_COL)[TIME_COL].max(),
        config.freq,
        config.monitoring.stale_after_periods,
        config.monitoring.actuals_overdue_periods,
    )
    typer.echo(f"{model} (served version {version}) at {result.now.isoformat()}")
    typer.echo(result.summary())
    if out is not None:
        write_json(result.to_dict(), out / "staleness.json")
        _write_csv(result.by_series, out / "staleness_by_series.csv")
        typer.echo(f"wrote {out}/staleness.json and staleness_by_series.csv")
    _publish(
        result.numbers(), model, version, "staleness", root, to_mlflow, prometheus, pushgateway
    )
    if result.alert:
        alerts = [
            name
            for name, fired in (
                ("model stale", result.model_stale),
                ("actuals overdue", result.actuals_overdue),
            )
            if fired
        ]
        typer.secho(f"alert: {' and '.join(alerts)} (see above)", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(ALERT_EXIT)
