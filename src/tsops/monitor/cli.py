"""``tsops monitor`` and ``tsops retrain``: options in, reports and exit codes out.

Each command reads its options, calls the monitor modules (what is read:
``inputs``; which version is judged: ``served``; the checks: ``accuracy``,
``canary``, ``drift``, ``staleness``, ``retrain``), prints and writes the reports.
Failures are ``TsopsError`` subclasses raised where they happen; ``reports_errors``
turns them into one line and an exit code.

Over 400 lines because of what ``--help`` prints: five commands, most of their length
the options' help and the docstrings; the logic is in the modules named above.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tsops.core.errors import ALERT_EXIT, ROLLBACK_EXIT, reports_errors
from tsops.core.options import ModelName, Root
from tsops.core.settings import load_settings
from tsops.monitor.options import (
    Actuals,
    LogDir,
    Model,
    Now,
    Out,
    PrometheusFile,
    Pushgateway,
    Since,
    ToMlflow,
    Until,
)

if TYPE_CHECKING:
    import pandas as pd

    from tsops.core.settings import Settings
    from tsops.monitor.accuracy import AccuracyResult
    from tsops.monitor.served import ModelLog

monitor_app = typer.Typer(
    help="Realized accuracy of served forecasts and canary verdicts, per model version.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# ----------------------------------------------------------------------------- reading


def _log_dir(root: Path, log: Path | None, settings: Settings) -> Path:
    from tsops.monitor.scoring import log_location

    return log_location(root, log, settings)


def _model_log(log_dir: Path, model: str) -> ModelLog:
    from tsops.monitor.scoring import model_log

    return model_log(log_dir, model)


def _score(
    root: Path,
    model: str,
    log_dir: Path,
    actuals: Path | None,
    now: str | None,
    since: str | None,
    until: str | None,
) -> AccuracyResult:
    from tsops.monitor.scoring import score

    return score(root, model, log_dir, actuals, now, since, until)


# ----------------------------------------------------------------------------- writing


def _write_plots(
    root: Path, model: str, result: AccuracyResult, out: Path, tracking_uri: str | None
) -> None:
    """Realized error over time and forecast vs actual, with a markdown page linking them."""
    from tsops.monitor.inputs import VERSION_COL
    from tsops.monitor.plots import plots_markdown, realized_error_over_time
    from tsops.monitor.plots_forecasts import forecast_vs_actual
    from tsops.monitor.served import backtest_mases, registry_or_none

    versions = sorted(result.scored[VERSION_COL].astype(str).unique())
    expected = backtest_mases(registry_or_none(root, tracking_uri), model, versions)
    paths = [
        realized_error_over_time(result.scored, out / "realized_error.png", expected=expected),
        forecast_vs_actual(result.scored, out / "forecast_vs_actual.png"),
    ]
    _write_text(
        plots_markdown(paths, f"{model}: realized accuracy", relative_to=out), out / "report.md"
    )
    typer.echo(f"wrote {out}/report.md with {len(paths)} plots")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    from tsops.monitor.scoring import write_csv

    write_csv(frame, path)


def _write_text(text: str, path: Path) -> None:
    from tsops.core.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n")


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str)


def _publish(numbers: dict[str, float], model: str, version: str, check: str, **where) -> None:
    from tsops.monitor.publish import publish

    for line in publish(numbers, model, version, check, **where):
        typer.echo(line)


# ---------------------------------------------------------------------------- commands


@reports_errors
def retrain_command(
    model: ModelName,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="when a trigger fires: on a branch retrain/<model>-<data hash>, ingest the "
            "new data, update data.dvc, run the pipeline, commit (once per data; refused "
            "while tracked files have uncommitted changes)",
        ),
    ] = False,
    version: Annotated[
        str | None,
        typer.Option(
            "--version",
            help="registry version whose realized error counts (default: the served "
            "version, the one that answered the most forecasts in the log's last day: the "
            "champion during a canary)",
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
    from tsops.core.config import load
    from tsops.core.io import write_json
    from tsops.monitor.inputs import has_forecast_log
    from tsops.monitor.retrain import decide, measure, pipeline_runner, prepare_branch

    settings = load_settings()
    config, paths = load(root, model)
    log_dir = _log_dir(root, log, settings)
    served = _model_log(log_dir, model) if has_forecast_log(log_dir) else None
    evidence = measure(
        root, config, paths, served, actuals=actuals, now=now, version=version,
        tracking_uri=settings.mlflow_tracking_uri,
    )  # fmt: skip
    decision = decide(model, config.monitoring.retrain, evidence)
    typer.echo(decision.summary(), err=True)
    document = decision.to_dict()
    if apply and decision.fire:
        branch, created = prepare_branch(root, decision, pipeline_runner(root))
        document.update(branch=branch, created=created)
        state = "prepared" if created else "already prepared (same data): nothing new"
        typer.echo(f"{branch}: {state}", err=True)
    if out is not None:
        write_json(document, out / "retrain.json")
    typer.echo(_json(document))


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

    settings = load_settings()
    result = _score(root, model, _log_dir(root, log, settings), actuals, now, since, until)
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
            _write_plots(root, model, result, out, settings.mlflow_tracking_uri)


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
            "ready to open as a pull request; the working copy stays where it is (refused "
            "while tracked files have uncommitted changes)",
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
    from tsops.monitor.canary_change import apply_change, plan_change

    log_dir = _log_dir(root, log, load_settings())
    result = _score(root, model, log_dir, actuals, now, since, until)
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
        change = plan_change(root, model, env, verdict)
        document["applied"] = None if change is None else apply_change(root, change)
    if out is not None:
        write_json(document, out / "canary.json")
        _write_text(verdict.to_markdown(), out / "canary.md")
        _write_csv(verdict.per_target, out / "canary_targets.csv")
    typer.echo(_json(document))
    if verdict.verdict == "rollback":
        raise typer.Exit(ROLLBACK_EXIT)


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
    it exists) the served version's realized forecast quality is added (the version
    that answered the most forecasts in the log's last day), and the numbers are
    labelled with that version.

    Exits 0 without drift, 4 when the share of drifted features reaches
    monitoring.drift_threshold in model.yaml, 1 on an error. With --out, writes
    Evidently's drift.html and drift.json (quality.html and quality.json with scored
    forecasts) and drift_summary.json.
    """
    code = _drift_check(
        root, model, log, actuals, since, out, trained_model=None,
        where={"to_mlflow": to_mlflow, "prometheus": prometheus, "pushgateway": pushgateway},
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


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
    forecast log, from the served version (the one that answered the most forecasts in
    the log's last day: the champion during a canary). Stale: that cutoff is more
    than monitoring.stale_after_periods periods old; overdue: the newest actual of a
    series (the model's source, or --actuals) is more than
    monitoring.actuals_overdue_periods periods old.

    Exits 0 when both are fine, 4 when either alert fires, 1 on an error. With --out,
    writes staleness.json and staleness_by_series.csv.
    """
    code = _staleness_check(
        root, model, log, actuals, now, out,
        where={"to_mlflow": to_mlflow, "prometheus": prometheus, "pushgateway": pushgateway},
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


# ------------------------------------------------------------------- the checks, as functions
# Each check prints its report and returns its exit code (0, ROLLBACK_EXIT, ALERT_EXIT);
# the single-check commands above raise it, `tsops monitor run` collects them.


def _drift_check(
    root: Path,
    model: str,
    log: Path | None,
    actuals: Path | None,
    since: str | None,
    out: Path | None,
    *,
    trained_model: str | None,
    where: dict[str, Any],
) -> int:
    from tsops.core.config import load
    from tsops.core.io import read_series
    from tsops.monitor.accuracy import realized_accuracy
    from tsops.monitor.drift import drift_report
    from tsops.monitor.drift_features import windows
    from tsops.monitor.inputs import has_forecast_log, read_actuals
    from tsops.monitor.served import of_version, served_version

    config, paths = load(root, model)
    settings = load_settings()
    trained = read_series(paths)
    if trained_model is not None:
        trained = _trained_part(root, trained, trained_model, settings)
    observed = read_actuals(root, config, actuals)
    reference, current = windows(trained, observed, since)

    log_dir = _log_dir(root, log, settings)
    version, scored = "unknown", None
    if log is None and not has_forecast_log(log_dir):
        # drift needs no forecasts; without any, there is just no quality to report
        typer.echo(
            f"note: no forecast log in {log_dir}, so no forecast quality and version "
            "'unknown' (pass --log)",
            err=True,
        )
    else:
        records = _model_log(log_dir, model).records
        version = served_version(records)
        scored = realized_accuracy(
            of_version(records, version), observed, config.season_length, period=(since, None)
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
    _publish(
        result.numbers(), model, version, "drift", root=root,
        tracking_uri=settings.mlflow_tracking_uri, **where,
    )  # fmt: skip
    if result.dataset_drift:
        typer.secho(
            f"alert: the data drifted ({', '.join(result.drifted_columns)}); look at "
            f"drift.html (--out), then retrain on the new data (`tsops retrain {model}`) "
            "if the change is real",
            fg=typer.colors.YELLOW,
            err=True,
        )
        return ALERT_EXIT
    return 0


def _trained_part(root: Path, series: pd.DataFrame, reference: str, settings: Settings):
    """``series`` up to each series' training cutoff in the model ``reference`` (a model
    directory such as the image's /mnt/models, or models:/<name>/<version>): the data it
    was trained on, when ``series`` is a newer ingest of the same source (the CronJob's)."""
    from tsops.core.schema import ID_COL, TIME_COL
    from tsops.monitor.errors import MonitorError
    from tsops.registry.loading import is_reference, load_model

    client = None
    if is_reference(reference):
        from tsops.registry.client import connect

        client = connect(root, settings.mlflow_tracking_uri)
    cutoffs = load_model(reference, client).forecaster.cutoffs_
    ends = series[ID_COL].map(cutoffs)
    trained = series[ends.notna() & (series[TIME_COL] <= ends)].reset_index(drop=True)
    if trained.empty:
        raise MonitorError(
            f"none of the ingested series is one {reference} was trained on: ingest the "
            "model's own source, or drop --trained-model when data/ is the training snapshot"
        )
    typer.echo(
        f"reference: {len(trained)} of {len(series)} ingested observations, up to the "
        f"training cutoffs of {reference}",
        err=True,
    )
    return trained


def _staleness_check(
    root: Path,
    model: str,
    log: Path | None,
    actuals: Path | None,
    now: str | None,
    out: Path | None,
    *,
    where: dict[str, Any],
) -> int:
    from tsops.core.config import load
    from tsops.core.io import write_json
    from tsops.core.schema import ID_COL, TIME_COL
    from tsops.monitor.inputs import read_actuals
    from tsops.monitor.served import of_version, served_cutoffs, served_version
    from tsops.monitor.staleness import staleness as check_staleness

    config, _ = load(root, model)
    settings = load_settings()
    records = _model_log(_log_dir(root, log, settings), model).records
    version = served_version(records)
    observed = read_actuals(root, config, actuals)
    result = check_staleness(
        now,
        served_cutoffs(of_version(records, version)),
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
        result.numbers(), model, version, "staleness", root=root,
        tracking_uri=settings.mlflow_tracking_uri, **where,
    )  # fmt: skip
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
        return ALERT_EXIT
    return 0


def _verdicts_check(
    root: Path,
    model: str,
    env: str,
    result: AccuracyResult,
    options: Any,
    apply: bool,
    out: Path | None,
    *,
    prometheus: Path | None,
    pushgateway: str | None,
) -> int:
    from tsops.core.io import write_json
    from tsops.deploy.strategies import live_strategies
    from tsops.monitor.publish import publish_samples
    from tsops.monitor.verdicts import apply_changes, gauges, judge, plan_changes

    running = live_strategies(root, env)
    strategies = [s for s in running if s.model == model]
    if not strategies:
        # a model of the repository that this environment does not serve: nothing to
        # judge (the scheduled workflow runs every model against production)
        served = ", ".join(sorted({s.model for s in running})) or "none"
        typer.echo(
            f"note: manifests/overlays/{env} serves no release of {model} (it serves: "
            f"{served}); no verdict",
            err=True,
        )
        if out is not None:
            write_json({"model": model, "env": env, "rollback": False, "verdicts": []},
                       out / "verdicts.json")  # fmt: skip
        return 0
    found = judge(strategies, result.scored, result.by_version, options)
    if apply:
        found = apply_changes(root, plan_changes(root, found))
    typer.echo(found.summary(), err=True)
    if out is not None:
        write_json(found.to_dict(), out / "verdicts.json")
        _write_text(found.to_markdown(), out / "verdicts.md")
        typer.echo(f"wrote {out}/verdicts.json and verdicts.md", err=True)
    for line in publish_samples(
        gauges(found), model, "verdicts", prometheus=prometheus, pushgateway=pushgateway, env=env
    ):
        typer.echo(line, err=True)
    typer.echo(_json(found.to_dict()))
    return ROLLBACK_EXIT if found.rollback else 0


Env = Annotated[
    str, typer.Option("--env", help="overlay whose strategies are judged (manifests/overlays/ENV)")
]
Alpha = Annotated[float, typer.Option("--alpha", help="significance level")]
Margin = Annotated[
    float,
    typer.Option(
        "--margin", help="non-inferiority margin: relative to the baseline's MASE (0.02 = 2%)"
    ),
]
MinTargets = Annotated[
    int, typer.Option("--min-targets", help="paired target times needed before any verdict")
]
Power = Annotated[
    float, typer.Option("--power", help="power of the sample size reported with hold")
]
ApplyVerdicts = Annotated[
    bool,
    typer.Option(
        "--apply",
        help="commit the change each verdict asks for on its own branch (canary: "
        "canary/<model>-<env>-<verdict>-v<N>; A/B rollback, bandit weights, blue/green "
        "switch: <kind>/<model>-<env>-...), ready to open as a pull request; the working "
        "copy stays where it is (refused while tracked files have uncommitted changes)",
    ),
]
PrometheusSamples = Annotated[
    Path | None,
    typer.Option(
        "--prometheus",
        help="write the gauges (tsops_monitor_*) to this .prom file for the node-exporter "
        "textfile collector (replaced atomically)",
    ),
]


@monitor_app.command()
@reports_errors
def verdicts(
    model: Model,
    env: Env = "production",
    alpha: Alpha = 0.05,
    margin: Margin = 0.02,
    min_targets: MinTargets = 12,
    power: Power = 0.8,
    apply: ApplyVerdicts = False,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    since: Since = None,
    until: Until = None,
    out: Out = None,
    prometheus: PrometheusSamples = None,
    pushgateway: Pushgateway = None,
    root: Root = Path("."),
) -> None:
    """A verdict for every strategy git runs in ENV for MODEL, from the realized error.

    Canary, A/B and shadow: Diebold–Mariano of each candidate arm against the baseline
    on the same series and targets (a shadow on its copies of the requests, role
    shadow); blue/green: the newer release's colour against the older one's, the idle
    colour scored on the copies it gets; bandit: the new Splitter weights
    (tsops.monitor.bandit). Prints the verdicts as JSON on stdout (a summary on stderr);
    exits 3 when users get answers from a release judged worse (canary, A/B step or
    live colour: rollback), 0 otherwise, 1 on an error. With --out, writes
    verdicts.json and verdicts.md.
    """
    from tsops.monitor.verdicts import Options

    settings = load_settings()
    result = _score(root, model, _log_dir(root, log, settings), actuals, now, since, until)
    typer.echo(result.summary().splitlines()[0], err=True)
    code = _verdicts_check(
        root, model, env, result, Options(alpha, margin, min_targets, power), apply, out,
        prometheus=prometheus, pushgateway=pushgateway,
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


#: which exit code a run of several checks ends with: a rollback first (users get a worse
#: release), then a check that could not run, then an alert
_SEVERITY = (ROLLBACK_EXIT, 69, 1, ALERT_EXIT)


def worst(codes: list[int]) -> int:
    """The exit code of several checks: the most severe of ``_SEVERITY``, else the first
    other non-zero code (a usage error), else 0."""
    for code in _SEVERITY:
        if code in codes:
            return code
    return next((c for c in codes if c), 0)


@monitor_app.command("run")
@reports_errors
def run_checks(
    model: Model,
    env: Env = "production",
    apply: ApplyVerdicts = False,
    trained_model: Annotated[
        str | None,
        typer.Option(
            "--trained-model",
            help="the served model (a directory such as the image's /mnt/models, or "
            "models:/<name>/<version>) whose training cutoffs end drift's reference: for "
            "when data/ is a newer ingest of the source than the training data",
        ),
    ] = None,
    log: LogDir = None,
    actuals: Actuals = None,
    now: Now = None,
    out: Out = None,
    to_mlflow: ToMlflow = False,
    prometheus_dir: Annotated[
        Path | None,
        typer.Option(
            "--prometheus-dir",
            help="write each check's gauges to <dir>/<model>-<check>.prom (the node-exporter "
            "textfile collector's folder)",
        ),
    ] = None,
    pushgateway: Pushgateway = None,
    root: Root = Path("."),
) -> None:
    """The scheduled checks of MODEL in one process: accuracy, verdicts, drift, staleness.

    Each check runs whatever the others found (a drift error does not hide a rollback)
    and publishes its gauges; the run adds tsops_monitor_check_exit_code per check and
    tsops_monitor_last_run_timestamp_seconds. Exits with the most severe code: 3
    (a rollback verdict), then 69 or 1 (a check could not run), then 4 (drift or
    staleness alert), else 0. With --out, every check's reports and run.json.
    """
    import time

    from tsops.core.errors import TsopsError
    from tsops.core.io import write_json
    from tsops.monitor.publish import publish_samples
    from tsops.monitor.verdicts import Options

    settings = load_settings()

    def prom(check: str) -> Path | None:
        return None if prometheus_dir is None else prometheus_dir / f"{model}-{check}.prom"

    state: dict[str, Any] = {}

    def accuracy_check() -> int:
        result = _score(root, model, _log_dir(root, log, settings), actuals, now, None, None)
        state["accuracy"] = result
        typer.echo(result.summary())
        if out is not None:
            from tsops.core.io import write_json as write

            write(result.to_dict(), out / "accuracy.json")
            _write_csv(result.by_version, out / "by_version.csv")
        for line in publish_samples(
            result.samples(model, env), model, "accuracy", prometheus=prom("accuracy"),
            pushgateway=pushgateway, env=env,
        ):  # fmt: skip
            typer.echo(line, err=True)
        return 0

    def verdicts_check() -> int:
        if "accuracy" not in state:
            typer.echo("not judged: realized accuracy could not be computed (above)", err=True)
            return 1
        return _verdicts_check(
            root, model, env, state["accuracy"], Options(), apply, out,
            prometheus=prom("verdicts"), pushgateway=pushgateway,
        )  # fmt: skip

    where = {"to_mlflow": to_mlflow, "pushgateway": pushgateway, "env": env}
    checks = {
        "accuracy": accuracy_check,
        "verdicts": verdicts_check,
        "drift": lambda: _drift_check(
            root,
            model,
            log,
            actuals,
            None,
            out,
            trained_model=trained_model,
            where={**where, "prometheus": prom("drift")},
        ),
        "staleness": lambda: _staleness_check(
            root, model, log, actuals, now, out, where={**where, "prometheus": prom("staleness")}
        ),
    }
    if out is not None:
        # what the workflow reads for a verdict branch exists even when no verdict could
        # be made (no forecast log yet): the judging check replaces it
        nothing = {"model": model, "env": env, "rollback": False, "verdicts": [], "judged": False}
        write_json(nothing, out / "verdicts.json")
    codes: dict[str, int] = {}
    for name, check in checks.items():
        typer.echo(f"--- {name}", err=True)
        try:
            codes[name] = check()
        except TsopsError as exc:
            typer.secho(f"error: {exc.report()}", fg=typer.colors.RED, err=True)
            codes[name] = exc.exit_code
        except FileNotFoundError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            codes[name] = 1
    code = worst(list(codes.values()))
    summary = {"model": model, "env": env, "exit_code": code, "checks": codes}
    labels = {"model": model, "env": env}
    samples = [(labels | {"check": c}, {"check_exit_code": v}) for c, v in codes.items()]
    samples.append((labels | {"check": "run"}, {"check_exit_code": code}))
    samples.append((labels, {"last_run_timestamp_seconds": time.time()}))
    for line in publish_samples(
        samples, model, "run", prometheus=prom("run"), pushgateway=pushgateway, env=env
    ):
        typer.echo(line, err=True)
    if out is not None:
        write_json(summary, out / "run.json")
    typer.echo(_json(summary))
    if code:
        raise typer.Exit(code)
