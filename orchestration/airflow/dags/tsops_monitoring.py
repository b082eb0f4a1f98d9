"""Monitoring of the served models: for every model folder (dynamic task mapping), ingest
the latest actuals, then `tsops monitor run`: realized accuracy per release and role, the
verdict of every strategy git runs in the environment (canary, A/B, shadow, blue/green,
bandit), Evidently drift and staleness, in one process, as the CronJob `<model>-monitor`
and the workflow monitor.yml run it.

Per model (one mapped task group instance each):

    ingest   tsops ingest MODEL --out STAGE/actuals.parquet
             the model's source, validated (nothing written if validation fails); the
             task's success is the NEW_ACTUALS Asset event the training DAG is
             scheduled on (its decision short-circuits when no new period landed)
    monitor  tsops monitor run --model MODEL --env ENV --actuals STAGE/actuals.parquet
             --out STAGE/reports [--log] [--now] [--pushgateway] [--mlflow]
             fails with the command's exit code, the most severe of its checks: 3 a
             rollback verdict, 1 or 69 a check could not run, 4 a drift or staleness
             alert (0: the task succeeds); never retried: a verdict or an alert is an
             answer, not a transient failure (the CronJob's backoffLimit is 0 too)

The repository's data/ is never written: it is what the served model was trained on,
the reference of drift and of `tsops retrain`'s new-period trigger. STAGE is a folder per
run and model (``$TSOPS_STAGING``, default ``$TMPDIR/tsops-airflow``), so the reports of
a run stay beside its actuals. Nothing here pushes to git: the pull requests a verdict
asks for are opened by monitor.yml (`tsops monitor run --apply`).

DAG params (the UI's "Trigger DAG w/ config", or `airflow dags test -c`): ``env``, the
overlay judged (default ``$TSOPS_ENVIRONMENT``, else production); ``log``, the forecast
log folder (default: what the command reads, ``$TSOPS_FORECAST_LOG_URL`` or
``$TSOPS_FORECAST_LOG_DIR``); ``now``, the time target times are judged at (default:
now), for replays. From the worker's environment: ``TSOPS_PUSHGATEWAY_URL`` (push the
gauges: the alert rules and the dashboard read them) and ``MLFLOW_TRACKING_URI`` (also
append the numbers to the served version's monitor run).

Daily at 06:30 UTC, after the nightly batch forecasts and the actuals feed; one run at a
time, no catch-up.
"""

from __future__ import annotations

import pendulum
from _tsops import DEFAULT_ARGS, NEW_ACTUALS, model_names, tsops_task
from airflow.sdk import Param, dag, task_group
from airflow.timetables.trigger import CronTriggerTimetable

#: the per-run, per-model staging folder (the shell expands it; run_id by Jinja)
STAGE = (
    '"${TSOPS_STAGING:-${TMPDIR:-/tmp}/tsops-airflow}/monitoring/'
    "{{ run_id | replace(':', '-') | replace('+', '-') }}/$MODEL\""
)
#: options given only when their variable is set (the task's env holds the DAG params)
OPTIONAL = (
    '${TSOPS_MONITOR_LOG:+--log "$TSOPS_MONITOR_LOG"}',
    '${TSOPS_MONITOR_NOW:+--now "$TSOPS_MONITOR_NOW"}',
    '${TSOPS_PUSHGATEWAY_URL:+--pushgateway "$TSOPS_PUSHGATEWAY_URL"}',
    "${MLFLOW_TRACKING_URI:+--mlflow}",
)


@dag(
    dag_id="tsops_monitoring",
    description="ingest -> tsops monitor run (accuracy, verdicts, drift, staleness), per model",
    schedule=CronTriggerTimetable("30 6 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "env": Param(
            "",
            type="string",
            description="overlay judged (empty: $TSOPS_ENVIRONMENT, else production)",
        ),
        "log": Param("", type="string", description="forecast log folder (empty: the default)"),
        "now": Param("", type="string", description="judge at this time (empty: now)"),
    },
    tags=["tsops", "monitoring"],
    doc_md=__doc__,
)
def tsops_monitoring() -> None:
    models = model_names()

    @task_group
    def per_model(model: str) -> None:
        env = {
            "MODEL": model,
            "TSOPS_MONITOR_ENV": "{{ params.env }}",
            "TSOPS_MONITOR_LOG": "{{ params.log }}",
            "TSOPS_MONITOR_NOW": "{{ params.now }}",
        }
        ingest = tsops_task(
            "ingest",
            "ingest",
            '"$MODEL"',
            "--out",
            STAGE + "/actuals.parquet",
            env=env,
            outlets=[NEW_ACTUALS],
        )
        monitor = tsops_task(
            "monitor",
            "monitor",
            "run",
            "--model",
            '"$MODEL"',
            "--env",
            '"${TSOPS_MONITOR_ENV:-${TSOPS_ENVIRONMENT:-production}}"',
            "--actuals",
            STAGE + "/actuals.parquet",
            "--out",
            STAGE + "/reports",
            *OPTIONAL,
            env=env,
            retries=0,
        )
        ingest >> monitor

    per_model.expand(model=models.output)


tsops_monitoring()
