"""Staleness alerts on hand-made cases, and monitoring numbers in MLflow and Prometheus."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from typing import ClassVar

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from tests.monitor.test_accuracy import MODEL_YAML, m3_actuals, served_requests, write_log
from tsops.core.schema import FrequencyError
from tsops.monitor.cli import ALERT_EXIT, monitor_app
from tsops.monitor.errors import MonitorError
from tsops.monitor.publish import (
    log_to_mlflow,
    prometheus_registry,
    push_prometheus,
    write_prometheus,
)
from tsops.monitor.staleness import periods_between, staleness

T = pd.Timestamp


def prometheus_text(numbers, labels) -> str:
    """The Prometheus text exposition of ``numbers`` with ``labels`` on every sample."""
    from prometheus_client import generate_latest

    return generate_latest(prometheus_registry(numbers, labels)).decode()


def gauges(text: str) -> dict[str, tuple[dict[str, str], float]]:
    return {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# ------------------------------------------------------------------------------ the checks


def test_stale_cutoff_and_overdue_actuals_on_a_hand_made_case():
    now = "2020-05-01"
    cutoffs = pd.Series({"old": T("2020-01-01"), "edge": T("2020-02-01"), "fresh": T("2020-03-01")})
    last_actuals = pd.Series(
        # "late" has had no actual for 3 periods (Feb, Mar, Apr): 4 periods old
        {
            "old": T("2020-04-01"),
            "edge": T("2020-03-01"),
            "fresh": T("2020-04-01"),
            "late": T("2020-01-01"),
        }
    )
    result = staleness(now, cutoffs, last_actuals, "MS", 3, 2)

    frame = result.by_series.set_index("unique_id")
    # cutoff 4 months old with threshold 3: stale; 3 months (edge): not more than 3
    assert frame["cutoff_age_periods"].to_dict() == pytest.approx(
        {"edge": 3, "fresh": 2, "late": float("nan"), "old": 4}, nan_ok=True
    )
    assert result.stale_series == ["old"]
    assert frame["actuals_age_periods"].to_dict() == {"edge": 2, "fresh": 1, "late": 4, "old": 1}
    assert result.overdue_series == ["late"]
    assert result.alert and result.model_stale and result.actuals_overdue
    assert result.numbers() == {
        "cutoff_age_periods": 4.0,
        "stale_after_periods": 3.0,
        "model_stale": 1.0,
        "stale_series": 1.0,
        "actuals_age_periods": 4.0,
        "actuals_overdue_periods": 2.0,
        "actuals_overdue": 1.0,
        "actuals_overdue_series": 1.0,
    }
    text = result.summary()
    assert "MODEL STALE: 1 of 3 served series" in text
    assert "(oldest: 2020-01-01, 4 periods): old." in text
    assert "newest 2020-01-01 (4 periods old): late" in text
    document = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert document["overdue_series"] == ["late"]
    assert document["series"][2] == {
        "unique_id": "late",
        "cutoff": None,
        "cutoff_age_periods": None,
        "stale": False,
        "last_actual": "2020-01-01T00:00:00",
        "actuals_age_periods": 4.0,
        "actuals_overdue": True,
    }


def test_two_months_old_is_fine_and_a_series_without_actuals_is_overdue():
    cutoffs = pd.Series({"a": T("2020-03-01"), "b": T("2020-03-01")})
    result = staleness(T("2020-05-01"), cutoffs, pd.Series({"a": T("2020-04-01")}), "MS", 3, 2)
    assert not result.model_stale
    assert result.overdue_series == ["b"]
    assert "no actuals at all: b" in result.summary()
    fine = staleness(
        "2020-05-01", cutoffs, pd.Series({"a": T("2020-04-01"), "b": T("2020-04-01")}), "MS", 3, 2
    )
    assert not fine.alert
    assert "model fresh" in fine.summary() and "actuals on time" in fine.summary()


def test_periods_are_calendar_periods_of_the_frequency_not_days():
    # February 2020 has 29 days, March 31: one period each
    assert periods_between(T("2020-02-01"), T("2020-03-01"), "MS") == 1
    assert periods_between(T("2020-03-01"), T("2020-04-01"), "MS") == 1
    # a period that has begun counts; the start itself does not
    assert periods_between(T("2020-01-01"), T("2020-05-20"), "MS") == 4
    assert periods_between(T("2020-01-01"), T("2020-01-01"), "MS") == 0
    assert periods_between(T("2020-01-01"), T("2020-10-01"), "QS") == 3
    assert periods_between(T("2024-01-07"), T("2024-02-04"), "W-SUN") == 4
    assert periods_between(T("2020-05-01"), T("2020-01-01"), "MS") == -4
    # UTC offsets are taken off before counting
    result = staleness(
        "2020-05-01T02:00:00+02:00",
        pd.Series({"a": T("2020-01-01")}),
        pd.Series({"a": T("2020-04-01")}),
        "MS",
        3,
        2,
    )
    assert result.now == T("2020-05-01") and result.stale_series == ["a"]


def test_bad_inputs_say_what_to_fix():
    cutoffs = pd.Series({"a": T("2020-01-01")})
    with pytest.raises(FrequencyError, match="'monthly' is not a pandas offset alias"):
        staleness("2020-05-01", cutoffs, cutoffs, "monthly", 3, 2)
    with pytest.raises(MonitorError, match="stale_after_periods must be a whole number"):
        staleness("2020-05-01", cutoffs, cutoffs, "MS", 0, 2)
    with pytest.raises(MonitorError, match="no served cutoffs"):
        staleness("2020-05-01", cutoffs.iloc[:0], cutoffs, "MS", 3, 2)
    twice = pd.Series([T("2020-01-01")] * 2, index=["a", "a"])
    with pytest.raises(MonitorError, match="names series a more than once"):
        staleness("2020-05-01", twice, cutoffs, "MS", 3, 2)
    with pytest.raises(MonitorError, match=r"not timestamps .*'soon' for series 'a'"):
        staleness("2020-05-01", pd.Series({"a": "soon"}), cutoffs, "MS", 3, 2)


# ------------------------------------------------------------------------------ publishing

NUMBERS = {"drift_share": 0.5, "dataset_drift": True, "cutoff_age_periods": 4, "skipped": None}
LABELS = {"model": "m3-monthly", "version": "3"}


def test_prometheus_text_parses_back_with_labels_and_help(tmp_path):
    text = prometheus_text(NUMBERS, LABELS)
    assert gauges(text) == {
        "tsops_monitor_drift_share": (LABELS, 0.5),
        "tsops_monitor_dataset_drift": (LABELS, 1.0),
        "tsops_monitor_cutoff_age_periods": (LABELS, 4.0),
    }
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["tsops_monitor_drift_share"].type == "gauge"
    assert "share of drifted" in families["tsops_monitor_drift_share"].documentation

    path = write_prometheus(NUMBERS, LABELS, tmp_path / "textfile" / "tsops.prom")
    assert gauges(path.read_text()) == gauges(text)
    assert [p.name for p in path.parent.iterdir()] == ["tsops.prom"]  # no temp file left
    with pytest.raises(MonitorError, match=r"only reads files ending in \.prom"):
        write_prometheus(NUMBERS, LABELS, tmp_path / "tsops.txt")
    with pytest.raises(MonitorError, match="'drift-share' is not usable in Prometheus"):
        prometheus_text({"drift-share": 1.0}, LABELS)


class _Gateway(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, str]]] = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.command, self.path, body.decode()))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_push_to_a_pushgateway_groups_by_check_and_model():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        push_prometheus(
            NUMBERS, LABELS, url, job="tsops_monitor_drift", grouping_key={"model": "m3-monthly"}
        )
    finally:
        server.shutdown()
        server.server_close()
    method, path, body = _Gateway.received[-1]
    assert (method, path) == ("PUT", "/metrics/job/tsops_monitor_drift/model/m3-monthly")
    assert gauges(body)["tsops_monitor_drift_share"] == (LABELS, 0.5)
    with pytest.raises(MonitorError, match="could not push to the Pushgateway at http://127"):
        push_prometheus(NUMBERS, LABELS, url, job="j", timeout=2)


def test_mlflow_metrics_are_appended_to_one_run_per_version(tmp_path, monkeypatch):
    from tsops.registry.client import connect

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    c = connect(tmp_path)
    first = log_to_mlflow(NUMBERS, "m3-monthly", "3", client=c, at=T("2020-05-01", tz="UTC"))
    again = log_to_mlflow({"drift_share": 0.75, "nan": float("nan")}, "m3-monthly", "3", client=c)
    other = log_to_mlflow({"drift_share": 0.1}, "m3-monthly", "4", client=c)
    assert first == again != other
    assert (tmp_path / "mlflow.db").exists()

    run = c.get_run(first)
    assert run.info.run_name == "monitor-m3-monthly"
    assert {k: run.data.tags[k] for k in ("tsops.kind", "tsops.model", "tsops.model_version")} == {
        "tsops.kind": "monitoring",
        "tsops.model": "m3-monthly",
        "tsops.model_version": "3",
    }
    history = c.get_metric_history(first, "drift_share")
    assert [(m.value, m.step) for m in history] == [(0.5, 0), (0.75, 1)]
    assert history[0].timestamp == int(T("2020-05-01", tz="UTC").timestamp() * 1000)
    assert run.data.metrics["dataset_drift"] == 1.0
    assert run.data.metrics["cutoff_age_periods"] == 4.0
    assert "nan" not in run.data.metrics and "skipped" not in run.data.metrics
    assert c.get_run(other).data.metrics == {"drift_share": 0.1}


# --------------------------------------------------------------------------------------- CLI


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The tiny model (actuals end 2019-12) served by version 5 from cutoff 2019-12."""
    from tsops.forecasters import make_forecaster

    monkeypatch.delenv("TSOPS_FORECAST_LOG_DIR", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "model.yaml").write_text(MODEL_YAML)
    model = make_forecaster("seasonal_naive", {}, freq="MS", season_length=12).fit(m3_actuals())
    forecasts = model.predict(6, level=[80, 95]).assign(cutoff=T("2019-12-01"))
    write_log(tmp_path / "forecast-logs" / "tiny", served_requests(forecasts, "tiny", "5"))
    return tmp_path


def test_cli_staleness_exits_4_with_what_to_do_and_0_when_fresh(served):
    prom = served / "metrics" / "staleness.prom"
    args = ["staleness", "--model", "tiny", "--root", str(served)]
    result = CliRunner().invoke(
        monitor_app,
        [*args, "--now", "2020-05-01", "--out", str(served / "out"), "--prometheus", str(prom)],
    )
    assert result.exit_code == ALERT_EXIT, result.output
    assert "tiny (served version 5) at 2020-05-01T00:00:00" in result.stdout
    assert "MODEL STALE: 6 of 6 served series" in result.stdout
    assert "(oldest: 2019-12-01, 5 periods)" in result.stdout
    assert "ACTUALS OVERDUE: 6 series" in result.stdout
    assert "alert: model stale and actuals overdue" in result.stderr
    document = json.loads((served / "out" / "staleness.json").read_text())
    assert len(document["stale_series"]) == 6
    values = gauges(prom.read_text())
    assert values["tsops_monitor_cutoff_age_periods"] == ({"model": "tiny", "version": "5"}, 5.0)
    assert values["tsops_monitor_actuals_overdue_series"][1] == 6.0

    result = CliRunner().invoke(monitor_app, [*args, "--now", "2020-02-01"])
    assert result.exit_code == 0, result.output
    assert "model fresh" in result.stdout


def test_cli_staleness_logs_to_mlflow_and_needs_a_log(served):
    from tsops.registry.client import connect

    args = ["staleness", "--model", "tiny", "--root", str(served), "--now", "2020-02-01"]
    result = CliRunner().invoke(monitor_app, [*args, "--mlflow"])
    assert result.exit_code == 0, result.output
    run_id = result.stdout.split("logged to MLflow run ")[1].split()[0]
    metrics = connect(served).get_run(run_id).data.metrics
    assert metrics["cutoff_age_periods"] == 2.0
    assert metrics["model_stale"] == 0.0

    result = CliRunner().invoke(monitor_app, [*args, "--log", str(served / "nowhere")])
    assert result.exit_code == 1
    assert "forecast log directory" in result.stderr and "does not exist" in result.stderr
