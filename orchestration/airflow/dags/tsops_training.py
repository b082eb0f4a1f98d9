"""Continuous training: for every model folder in params.yaml (dynamic task mapping),
ingest the new actuals, decide whether to retrain, and when a trigger fires prepare
the training change as a branch, run the model's pipeline and register the result.

Per model (one mapped task group instance each; skipping one model skips only its own
instance):

    ingest    tsops ingest MODEL --out STAGE/...        the source, validated (nothing
                                                        written if validation fails)
    decide    tsops retrain MODEL --actuals STAGE/...   the decision JSON; exit 99 (task
                                                        skipped, and so the rest) when
                                                        no trigger fires
    prepare   tsops retrain MODEL --apply               branch retrain/MODEL-<hash>:
                                                        ingest, dvc add, dvc repro
                                                        (validate..evaluate), commit
    repro     dvc repro gate@MODEL                      the gate on the branch's outputs
    register  tsops register MODEL                      a registered version; challenger
                                                        moves only if the gate passed
                                                        (exit 1 otherwise: the task fails)

STAGE is a folder per run and model outside the repository (``$TSOPS_STAGING``, default
``$TMPDIR/tsops-airflow``). Scheduled when new actuals land (the ``NEW_ACTUALS`` Asset)
or daily at 06:00 UTC, whichever comes first; one run at a time, no catch-up.
"""

from __future__ import annotations

import pendulum
from _tsops import (
    DEFAULT_ARGS,
    MODEL_REGISTERED,
    NEW_ACTUALS,
    SKIP_EXIT_CODE,
    model_names,
    tsops_task,
)
from airflow.sdk import dag, task_group
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

#: the per-run, per-model staging folder (the shell expands it; run_id by Jinja)
STAGE = (
    '"${TSOPS_STAGING:-${TMPDIR:-/tmp}/tsops-airflow}/'
    "{{ run_id | replace(':', '-') | replace('+', '-') }}/$MODEL\""
)
#: exit SKIP_EXIT_CODE unless the decision JSON says a trigger fired (the tsops venv's
#: python: the same one that wrote it)
IF_FIRED = (
    '&& "$(dirname "$BIN")/python" -c "import json, sys; '
    "sys.exit(0 if json.load(open(sys.argv[1]))['fire'] else "
    f'{SKIP_EXIT_CODE})" ' + STAGE + "/retrain.json"
)


@dag(
    dag_id="tsops_training",
    description="ingest -> retrain decision -> branch + dvc repro -> register, per model",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=NEW_ACTUALS
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tsops", "training"],
    doc_md=__doc__,
)
def tsops_training() -> None:
    models = model_names()

    @task_group
    def per_model(model: str) -> None:
        env = {"MODEL": model}
        ingest = tsops_task(
            "ingest", "ingest", '"$MODEL"', "--out", STAGE + "/series.parquet", env=env
        )
        decide = tsops_task(
            "decide",
            "retrain",
            '"$MODEL"',
            "--actuals",
            STAGE + "/series.parquet",
            "--out",
            STAGE,
            then=IF_FIRED,
            env=env,
        )
        prepare = tsops_task("prepare", "retrain", '"$MODEL"', "--apply", env=env)
        repro = tsops_task("repro", "repro", "-q", 'gate@"$MODEL"', program="dvc", env=env)
        # a failed gate is not transient: no retries
        register = tsops_task(
            "register", "register", '"$MODEL"', env=env, retries=0, outlets=[MODEL_REGISTERED]
        )
        ingest >> decide >> prepare >> repro >> register

    per_model.expand(model=models.output)


tsops_training()
