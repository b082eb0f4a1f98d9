"""Monitoring numbers where people and alerts look: MLflow and Prometheus.

``numbers`` is a flat ``{name: value}`` mapping, as ``DriftResult.numbers()`` and
``StalenessResult.numbers()`` give it (booleans count as 0/1). :func:`publish` sends
one check's numbers everywhere the command asked for.

- MLflow: one run per model version, named ``monitor-<model>`` and tagged
  ``tsops.kind=monitoring``, ``tsops.model``, ``tsops.model_version``, in the model's
  experiment (where its training runs are). Every check appends to that run's metric
  histories, so the MLflow UI charts drift and staleness of a version over time. The
  store is the one the registry uses (``tsops.registry.client``: ``MLFLOW_TRACKING_URI``,
  or the embedded SQLite store at the repo root).
- Prometheus: gauges ``tsops_monitor_<name>{model, version}``, in the text format the
  node-exporter textfile collector reads (a CronJob writes ``*.prom`` into the
  collector's directory) or pushed to a Pushgateway. Checks that report several label
  sets at once (accuracy per version and role, verdicts per arm) go through
  :func:`publish_samples`: one registry, one push, so none replaces another.

Every name tsops publishes is in ``DESCRIPTIONS`` (``METRIC_NAMES`` with the prefix):
the alert rules and the dashboard in manifests/base query only those (a test checks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tsops.monitor.errors import MonitorError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from prometheus_client import CollectorRegistry

METRIC_PREFIX = "tsops_monitor_"
RUN_PREFIX = "monitor-"
KIND_TAG = "tsops.kind"
MODEL_TAG = "tsops.model"
VERSION_TAG = "tsops.model_version"
MONITORING = "monitoring"

#: help text of the numbers tsops publishes; others get a generic one
DESCRIPTIONS = {
    "drift_share": "share of drifted feature columns (Evidently DataDriftPreset)",
    "dataset_drift": "1 when the share of drifted columns reached the drift threshold",
    "drifted_columns": "number of drifted feature columns",
    "drift_threshold": "share of drifted columns at which the dataset counts as drifted",
    "drift_score_level": "drift score of y scaled by the series' training mean level",
    "drift_score_seasonal_change": "drift score of the scaled seasonal change",
    "drift_score_step_change": "drift score of the scaled period-over-period change",
    "reference_rows": "training observations the drift test compared against",
    "current_rows": "observations after training the drift test compared",
    "realized_mase": "realized MASE of served forecasts (series first, then the mean)",
    "scaled_mae": "MAE of served forecasts in units of each series' seasonal-naive MAE",
    "scaled_rmse": "RMSE of served forecasts in units of each series' seasonal-naive MAE",
    "scaled_mean_error": "mean error (forecast - actual) on the same scale",
    "scaled_abs_max_error": "largest absolute error on the same scale",
    "mape": "mean absolute percentage error of served forecasts (percent)",
    "r2": "R squared of served forecasts against actuals, scaled per series",
    "scored_pairs": "forecast/actual pairs scored",
    "cutoff_age_periods": "periods between the oldest served cutoff and now",
    "stale_after_periods": "cutoff age in periods above which the model is stale",
    "model_stale": "1 when some series is served from a cutoff older than allowed",
    "stale_series": "series served from a cutoff older than allowed",
    "actuals_age_periods": "periods between the oldest newest-actual of a series and now",
    "actuals_overdue_periods": "age in periods above which a series' actuals are overdue",
    "actuals_overdue": "1 when some series' actuals are overdue",
    "actuals_overdue_series": "series whose newest actual is older than allowed",
    # tsops monitor accuracy: per served name, version and role (live or shadow)
    "accuracy_mase": "realized MASE of one version's forecasts of one role (live or shadow)",
    "accuracy_smape": "realized sMAPE (0..200) of one version's forecasts of one role",
    "accuracy_scored": "forecasts of one version and role scored against their actuals",
    "accuracy_late": "forecasts whose target time passed without an actual yet",
    "accuracy_pending": "forecasts whose target time is still in the future",
    # tsops monitor verdicts: per arm of a strategy git runs
    "traffic_share": "percent of user requests git sends to the arm (0: shadow, idle colour)",
    "arm_realized_mase": "realized MASE of the arm's release on the forecasts of its role",
    "arm_scored_forecasts": "scored forecasts of the arm's release and role",
    "bandit_weight": "percent of user requests the bandit proposes for the arm",
    # ... and per verdict
    "verdict": "verdict of the candidate against the baseline: -1 rollback, 0 hold, 1 promote",
    "verdict_rollback": "1 when users get answers from a release judged worse (exit 3)",
    "verdict_p_value": "Diebold-Mariano p-value of the verdict",
    "verdict_relative_difference": "candidate's mean loss minus the baseline's, relative",
    "verdict_targets": "paired target times the verdict rests on",
    # tsops monitor run: one per check and model
    "check_exit_code": "exit code of the check: 0 fine, 3 rollback, 4 alert, 1 error",
    "last_run_timestamp_seconds": "unix time the scheduled checks last finished",
}
#: every gauge name tsops monitor publishes
METRIC_NAMES = tuple(f"{METRIC_PREFIX}{name}" for name in DESCRIPTIONS)

_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def checked_numbers(numbers: Mapping[str, float | int | bool | None]) -> dict[str, float]:
    """``numbers`` as floats; None is dropped, a bad name or value is an error."""
    out = {}
    for name, value in numbers.items():
        if value is None:
            continue
        if not _NAME.match(name):
            raise MonitorError(
                f"metric name {name!r} is not usable in Prometheus: use letters, digits "
                "and underscores, not starting with a digit"
            )
        try:
            out[name] = float(value)
        except (TypeError, ValueError) as exc:
            raise MonitorError(f"metric {name!r} is not a number: {value!r}") from exc
    return out


# ------------------------------------------------------------------------------------ MLflow


def log_to_mlflow(
    numbers: Mapping[str, float | int | bool | None],
    model_name: str,
    version: str,
    *,
    client: MlflowClient,
    at: pd.Timestamp | None = None,
) -> str:
    """Append ``numbers`` as metrics to the monitoring run of ``model_name`` ``version``
    in the store of ``client`` (``tsops.registry.client.connect``).

    The run is found by its tags or created; ``at`` (default: now) is the metrics'
    timestamp, and each metric's step counts up from 0 per run. Non-finite values are
    left out (MLflow cannot chart them). Returns the run id.
    """
    from mlflow.entities import Metric, RunTag

    from tsops.registry.client import ensure_experiment

    values = {k: v for k, v in checked_numbers(numbers).items() if math.isfinite(v)}
    c = client
    experiment_id = ensure_experiment(c, model_name)
    run_id = _monitoring_run(c, experiment_id, model_name, str(version))
    stamp = pd.Timestamp.now(tz="UTC") if at is None else pd.Timestamp(at)
    millis = int(stamp.timestamp() * 1000)
    metrics = []
    for key, value in values.items():
        history = c.get_metric_history(run_id, key)
        step = max((m.step for m in history), default=-1) + 1
        metrics.append(Metric(key, value, millis, step))
    c.log_batch(run_id, metrics=metrics, tags=[RunTag("tsops.last_check", stamp.isoformat())])
    return run_id


def _monitoring_run(c, experiment_id: str, model_name: str, version: str) -> str:
    runs = c.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{KIND_TAG}` = '{MONITORING}' and tags.`{MODEL_TAG}` = '{model_name}' "
            f"and tags.`{VERSION_TAG}` = '{version}'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        return runs[0].info.run_id
    run = c.create_run(
        experiment_id,
        run_name=f"{RUN_PREFIX}{model_name}",
        tags={KIND_TAG: MONITORING, MODEL_TAG: model_name, VERSION_TAG: version},
    )
    # a monitoring run collects checks for as long as the version is served; FINISHED
    # keeps the UI from showing it as a run still in progress (it can still be logged to)
    c.set_terminated(run.info.run_id)
    return run.info.run_id


# -------------------------------------------------------------------------------- Prometheus


def prometheus_registry(
    numbers: Mapping[str, float | int | bool | None], labels: Mapping[str, str]
) -> CollectorRegistry:
    """A fresh registry with one gauge ``tsops_monitor_<name>`` per number."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    names = list(labels)
    for name, value in checked_numbers(numbers).items():
        gauge = Gauge(
            f"{METRIC_PREFIX}{name}",
            DESCRIPTIONS.get(name, f"tsops monitor: {name.replace('_', ' ')}"),
            labelnames=names,
            registry=registry,
        )
        gauge.labels(**{k: str(v) for k, v in labels.items()}).set(value)
    return registry


def samples_registry(
    samples: list[tuple[Mapping[str, str], Mapping[str, float | int | bool | None]]],
) -> CollectorRegistry:
    """One registry with a gauge per name and one sample per (labels, numbers) pair.

    Samples of one name must share their label names (Prometheus' rule for a metric
    family); a name given twice for the same labels keeps the last value.
    """
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    gauges: dict[str, tuple[Gauge, tuple[str, ...]]] = {}
    for labels, numbers in samples:
        names = tuple(labels)
        for name, value in checked_numbers(numbers).items():
            if name not in gauges:
                help_text = DESCRIPTIONS.get(name, f"tsops monitor: {name.replace('_', ' ')}")
                gauge = Gauge(
                    f"{METRIC_PREFIX}{name}", help_text, labelnames=names, registry=registry
                )
                gauges[name] = (gauge, names)
            gauge, expected = gauges[name]
            if names != expected:
                raise MonitorError(
                    f"gauge {name} is labelled {expected} and {names}: one name, one label set"
                )
            gauge.labels(**{k: str(v) for k, v in labels.items()}).set(value)
    return registry


def publish_samples(
    samples: list[tuple[Mapping[str, str], Mapping[str, float | int | bool | None]]],
    model: str,
    check: str,
    *,
    prometheus: Path | None = None,
    pushgateway: str | None = None,
    env: str | None = None,
    timeout: float = 10,
) -> list[str]:
    """Send one check's samples (several label sets) to Prometheus, in one file or one
    push (job ``tsops_monitor_<check>``, grouped by model and ``env`` when given,
    replacing only that group: staging's push never replaces production's)."""
    from prometheus_client import push_to_gateway, write_to_textfile

    done = []
    registry = samples_registry(samples)
    if prometheus is not None:
        path = Path(prometheus)
        if path.suffix != ".prom":
            raise MonitorError(
                f"{path}: the node-exporter textfile collector only reads files ending in "
                f".prom; name it e.g. {path.with_suffix('.prom').name}"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(path), registry)
        done.append(f"wrote {path}")
    if pushgateway is not None:
        job = f"tsops_monitor_{check}"
        try:
            push_to_gateway(
                pushgateway, job=job, registry=registry, grouping_key=_group(model, env),
                timeout=timeout,
            )  # fmt: skip
        except OSError as exc:
            raise MonitorError(
                f"could not push to the Pushgateway at {pushgateway} ({exc}); check the URL "
                "(e.g. http://pushgateway.monitoring:9091) or leave out --pushgateway"
            ) from exc
        done.append(f"pushed to {pushgateway} (job {job})")
    return done


def write_prometheus(
    numbers: Mapping[str, float | int | bool | None], labels: Mapping[str, str], path: Path
) -> Path:
    """Write the gauges for the node-exporter textfile collector (atomic rename)."""
    from prometheus_client import write_to_textfile

    path = Path(path)
    if path.suffix != ".prom":
        raise MonitorError(
            f"{path}: the node-exporter textfile collector only reads files ending in "
            f".prom; name it e.g. {path.with_suffix('.prom').name}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), prometheus_registry(numbers, labels))
    return path


def push_prometheus(
    numbers: Mapping[str, float | int | bool | None],
    labels: Mapping[str, str],
    gateway: str,
    *,
    job: str,
    grouping_key: Mapping[str, str] | None = None,
    timeout: float = 10,
) -> None:
    """Push the gauges to a Pushgateway, replacing the group's previous push.

    A push replaces every metric of its ``job`` and ``grouping_key``, so give each
    check its own job (``tsops_monitor_drift``, ``tsops_monitor_staleness``): a number
    that is gone from this check (no scored pairs yet) then disappears, while the
    other check's numbers stay.
    """
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(
            gateway,
            job=job,
            registry=prometheus_registry(numbers, labels),
            grouping_key=dict(grouping_key or {}),
            timeout=timeout,
        )
    except OSError as exc:
        raise MonitorError(
            f"could not push to the Pushgateway at {gateway} ({exc}); check the URL "
            "(e.g. http://pushgateway.monitoring:9091) or leave out --pushgateway"
        ) from exc


def _group(model: str, env: str | None) -> dict[str, str]:
    """The Pushgateway group of a check's numbers: one per model and environment."""
    return {"model": model} | ({"env": env} if env else {})


def publish(
    numbers: Mapping[str, float | int | bool | None],
    model: str,
    version: str,
    check: str,
    *,
    root: Path,
    to_mlflow: bool = False,
    tracking_uri: str | None = None,
    prometheus: Path | None = None,
    pushgateway: str | None = None,
    env: str | None = None,
) -> list[str]:
    """Send one check's ``numbers`` (``check``: ``drift``, ``staleness``) to each place
    asked for, labelled with the model and the served version; returns a line per
    place saying where they went.

    MLflow is the store at ``tracking_uri`` (None: the embedded one at ``root``); one
    that does not answer is an error of this check (exit 1), not its alert (4). The
    Pushgateway job is ``tsops_monitor_<check>``, grouped by model (and ``env``, which
    also labels the numbers, when given), so each check replaces only its own numbers.
    """
    from tsops.registry.client import RegistryError, RegistryUnavailable, connect

    done = []
    labels = {"model": model, "version": version} | ({"env": env} if env else {})
    if prometheus is not None:
        write_prometheus(numbers, labels, prometheus)
        done.append(f"wrote {prometheus}")
    if pushgateway is not None:
        job = f"tsops_monitor_{check}"
        push_prometheus(numbers, labels, pushgateway, job=job, grouping_key=_group(model, env))
        done.append(f"pushed to {pushgateway} (job {job})")
    if to_mlflow:
        try:
            client = connect(root, tracking_uri)
            run_id = log_to_mlflow(numbers, model, version, client=client)
        except (RegistryError, RegistryUnavailable) as exc:
            raise MonitorError(f"the numbers were not logged to MLflow: {exc}") from exc
        done.append(f"logged to MLflow run {run_id} (monitor-{model}, version {version})")
    return done
