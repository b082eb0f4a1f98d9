"""Shared by the tsops DAGs: where the repository and its ``tsops`` are, the default
arguments (retries, timeout), the helper that makes a task of a ``tsops`` command, and
the Asset names the DAGs produce and consume.

Nothing here reads a file or runs a command when Airflow parses the DAG folder: the
locations are environment variables (defaults computed from this file's path), and the
commands run when a task runs.

- ``TSOPS_REPO``: the repository the commands run in (default: the checkout holding
  this file, ``orchestration/airflow/dags/`` -> three levels up);
- ``TSOPS_BIN``: the ``tsops`` executable (default: ``$TSOPS_REPO/.venv/bin/tsops``);
  its directory is put first on the tasks' PATH, so ``dvc`` and ``git``-driven steps
  use the same environment.

Both are read at run time by the task's shell (``${TSOPS_REPO:-default}``), so a
worker's environment decides, not the scheduler's.
"""

from __future__ import annotations

import os
import shlex
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset

#: the repository root this file belongs to (no filesystem access: string arithmetic)
DEFAULT_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)

#: The Asset updated when new actuals land (A2's monitoring/ingest side emits it);
#: the continuous-training DAG is scheduled on it.
NEW_ACTUALS = Asset(name="tsops_new_actuals", uri="tsops://actuals/new")
#: The Asset updated when a retrained version is registered (challenger moved or not).
MODEL_REGISTERED = Asset(name="tsops_model_registered", uri="tsops://registry/registered")
#: The Asset updated when the feature store has been materialised.
FEATURES_MATERIALIZED = Asset(name="tsops_features_materialized", uri="tsops://features/online")

#: exit code a task's command uses to say "nothing to do": the task is skipped, and so
#: is everything downstream of it (for a mapped task, only that model's instance)
SKIP_EXIT_CODE = 99

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "tsops",
    # TSOPS_TASK_RETRIES: 0 in the tests (`airflow dags test` waits out retry delays)
    "retries": int(os.environ.get("TSOPS_TASK_RETRIES", "2")),
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=1),
}

#: the prologue of every task's shell: into the repository, the tsops venv first on PATH
PROLOGUE = (
    'set -euo pipefail; REPO="${TSOPS_REPO:-' + DEFAULT_REPO + '}"; '
    'BIN="${TSOPS_BIN:-$REPO/.venv/bin/tsops}"; '
    'export PATH="$(dirname "$BIN"):$PATH"; cd "$REPO"; '
)


def tsops_command(*args: str, program: str = "tsops") -> str:
    """``tsops ARGS...`` as one shell line (``$VARS`` in ``args`` left to the shell:
    pass them double-quoted, e.g. ``'"$MODEL"'``); ``program``: ``dvc`` for the
    pipeline's own runner (from the same venv)."""
    return " ".join([program, *args])


def bash(command: str) -> str:
    """The full shell script of a task: the prologue, then ``command``."""
    return PROLOGUE + command


def tsops_task(
    task_id: str,
    *args: str,
    then: str = "",
    before: str = "",
    program: str = "tsops",
    **kwargs: Any,
) -> BashOperator:
    """A task running ``tsops ARGS...`` in the repository; ``then`` is appended to
    the command line (e.g. a pipe), ``before`` is shell run first (a guard, a staging
    folder's layout). Retries and timeout from DEFAULT_ARGS (the DAG's default_args),
    overridable with ``kwargs``. The command (without the prologue and ``before``) is
    the task's ``doc``, which the tests check against ``--help``."""
    command = tsops_command(*args, program=program) + (f" {then}" if then else "")
    return BashOperator(
        task_id=task_id,
        bash_command=bash(before + command),
        append_env=True,
        skip_on_exit_code=SKIP_EXIT_CODE,
        doc=f"`{command}`",
        **kwargs,
    )


def model_names(before: str = "") -> BashOperator:
    """The task ``models``: the model folders' names, read when the run starts (not at
    parse time), as its XCom list, which each DAG maps its per-model tasks over."""
    return tsops_task(
        "models",
        "models",
        then="| awk '{print $1}' | paste -sd ' '",
        before=before,
        do_xcom_push=True,
        output_processor=str.split,
    )


def quoted(value: str) -> str:
    """``value`` quoted for the shell."""
    return shlex.quote(value)
