"""Feature materialisation: for every model folder (dynamic task mapping), the latest
observations of every series and the gbm's lag/rolling features into the Feast online
store that `tsops serve --feature_store` reads, as the CronJob `<model>-features` does.

    models       the model folders, when the feature store is configured: the Feast
                 repository ``$TSOPS_FEATURE_REPO`` (default ``features/`` of the
                 repository) holds ``feature_store.yaml``. Otherwise the task exits 99:
                 it is skipped, and so is the rest of the run (a skip, not a failure).
    ingest       tsops ingest MODEL --out STAGE/data/MODEL/series.parquet
                 the model's source, validated (nothing written if validation fails)
    materialize  tsops features materialize MODEL --root STAGE --repo FEATURE_REPO
                 the offline tables, the views and the latest row of every series
                 into the online store; FEATURES_MATERIALIZED Asset event on success

STAGE is a folder per run and model (``$TSOPS_STAGING``, default
``$TMPDIR/tsops-airflow``) laid out as a repository root: ``models/`` is a link to the
repository's, ``data/`` the fresh ingest. The repository's own data/ is never written:
it is the training data, against which `tsops retrain` counts new periods. Where the
stores are comes from the worker's environment, as for the CronJob:
``TSOPS_FEATURE_STORE_REDIS_URL`` (online store) and ``TSOPS_FEATURE_REGISTRY_URL``
(registry); without them, the SQLite files of ``feature_store.yaml``.

Hourly at :20, so an actual that reaches the source is in the online store within the
hour; one run at a time, no catch-up.
"""

from __future__ import annotations

import pendulum
from _tsops import DEFAULT_ARGS, FEATURES_MATERIALIZED, SKIP_EXIT_CODE, model_names, tsops_task
from airflow.sdk import dag, task_group
from airflow.timetables.trigger import CronTriggerTimetable

#: the Feast feature repository (the shell expands it, relative to the repository)
FEATURE_REPO = '"$(realpath -m "${TSOPS_FEATURE_REPO:-features}")"'
#: the per-run staging root (run_id by Jinja)
STAGE = (
    '"${TSOPS_STAGING:-${TMPDIR:-/tmp}/tsops-airflow}/features/'
    "{{ run_id | replace(':', '-') | replace('+', '-') }}/$MODEL\""
)
#: exit SKIP_EXIT_CODE (the run is skipped) when no feature store is configured
IF_CONFIGURED = (
    'if [ ! -f "${TSOPS_FEATURE_REPO:-features}/feature_store.yaml" ]; then '
    'echo "no feature store: ${TSOPS_FEATURE_REPO:-features}/feature_store.yaml is missing '
    '(set TSOPS_FEATURE_REPO to the Feast repository)"; '
    f"exit {SKIP_EXIT_CODE}; fi; "
)


@dag(
    dag_id="tsops_features",
    description="ingest -> tsops features materialize, per model, where a feature store is",
    schedule=CronTriggerTimetable("20 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tsops", "features"],
    doc_md=__doc__,
)
def tsops_features() -> None:
    models = model_names(before=IF_CONFIGURED)

    @task_group
    def per_model(model: str) -> None:
        env = {"MODEL": model}
        ingest = tsops_task(
            "ingest",
            "ingest",
            '"$MODEL"',
            "--out",
            STAGE + '/data/"$MODEL"/series.parquet',
            before=f'mkdir -p {STAGE} && ln -sfn "$REPO/models" {STAGE}/models && ',
            env=env,
        )
        materialize = tsops_task(
            "materialize",
            *("features", "materialize", '"$MODEL"', "--root", STAGE, "--repo", FEATURE_REPO),
            env=env,
            outlets=[FEATURES_MATERIALIZED],
            # one model at a time: a file registry (SQLite) takes one writer
            max_active_tis_per_dagrun=1,
        )
        ingest >> materialize

    per_model.expand(model=models.output)


tsops_features()
