"""The alert rules, the Grafana dashboard and the monitor CronJob in manifests/base, held
to what tsops publishes and runs: every metric an alert or a panel queries is one tsops
publishes (each expression parsed by promql-parser, the Prometheus parser's Rust port,
from the dev dependencies), the rule file validates strictly against
the vendored prometheus-operator CRD, the dashboard ships in a ConfigMap Grafana's
sidecar loads, and the CronJob's command exists with every option it passes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tsops.monitor.cli import monitor_app
from tsops.monitor.publish import METRIC_NAMES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
RULES = BASE / "prometheusrule-tsops.yaml"
DASHBOARD = BASE / "dashboards" / "tsops-monitoring.json"
#: metrics of other exporters an alert may read, and why
EXTERNAL = {
    "kube_job_status_failed": "kube-state-metrics: a monitor job that died before it pushed",
}


def server_metric_names() -> set[str]:
    """The names the model server's counters expose (``<name>_total``)."""
    # (tsops.serving.model's counters too, once a rule or panel reads one: importing it
    # imports kserve, seconds of a test that needs none of it today)
    from tsops.serving import forecast_log, shadow

    names = set()
    for counter in (shadow.SHADOW_REQUESTS, forecast_log.WRITTEN):
        # a labelled counter has no sample before its first increment: name it from its
        # description, as Prometheus will see it
        names |= {f"{metric.name}_total" for metric in counter.describe()}
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def selected_names(expr: str) -> dict:
    """The metric names of an expression's selectors (None for a selector without one),
    or the parse error."""
    import promql_parser

    names: list[str | None] = []

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)

    try:
        promql_parser.walk(promql_parser.parse(expr), visit)
    except Exception as exc:  # the parser's own error types: report any as "not PromQL"
        return {"error": str(exc)}
    return {"names": names}


def test_every_queried_metric_is_one_tsops_publishes():
    queries = [(f"alert {r['alert']}", r["expr"]) for r in rules()]
    queries += [(f"panel {title!r}", expr) for title, expr in panel_exprs()]
    # Grafana's template variables interpolate into strings only; parse what Prometheus gets
    answers = [selected_names(expr.replace("$", "")) for _, expr in queries]
    published = set(METRIC_NAMES) | server_metric_names()
    for (where, expr), answer in zip(queries, answers, strict=True):
        assert "error" not in answer, f"{where}: {expr!r} is not PromQL: {answer.get('error')}"
        assert answer["names"], f"{where}: {expr!r} selects no metric"
        for name in answer["names"]:
            assert name, f"{where}: a selector without a metric name in {expr!r}"
            assert name in published or name in EXTERNAL, (
                f"{where}: {name} is not a metric tsops publishes (tsops.monitor.publish."
                "DESCRIPTIONS, the server's counters) nor an allowed external one"
            )
    # the exit conditions each have an alert
    alerts = {r["alert"]: r["expr"] for r in rules()}
    for metric in (
        "tsops_monitor_verdict_rollback",
        "tsops_monitor_model_stale",
        "tsops_monitor_actuals_overdue",
        "tsops_monitor_dataset_drift",
        "tsops_monitor_check_exit_code",
        "tsops_monitor_last_run_timestamp_seconds",
        "tsops_shadow_requests_total",
    ):
        assert any(metric in expr for expr in alerts.values()), f"no alert reads {metric}"
    # and the dashboard shows realized error per release, traffic shares and staleness
    shown = " ".join(expr for _, expr in panel_exprs())
    for metric in (
        "tsops_monitor_arm_realized_mase",
        "tsops_monitor_traffic_share",
        "tsops_monitor_cutoff_age_periods",
    ):
        assert metric in shown, f"no panel shows {metric}"


def test_a_metric_tsops_does_not_publish_is_caught():
    answer = selected_names("max(tsops_monitor_verdict_rolback) == 1")
    assert answer["names"] == ["tsops_monitor_verdict_rolback"]
    assert "tsops_monitor_verdict_rolback" not in METRIC_NAMES
    broken = selected_names("max(tsops_monitor_verdict_rollback == 1")
    assert "error" in broken


def test_the_rules_validate_strictly_against_the_vendored_crd():
    from tsops.deploy.manifests.schemas import crd_schemas, schema_findings

    crd = ROOT / "manifests" / "crds" / "monitoring.coreos.com_prometheusrules.yaml"
    schemas = crd_schemas(yaml.safe_load_all(crd.read_text()))
    doc = yaml.safe_load(RULES.read_text())
    assert schema_findings(doc, schemas) == []
    # strict: a misspelt field is a finding, not ignored
    doc["spec"]["groups"][0]["rules"][0]["expresion"] = "1"
    (finding,) = schema_findings(doc, schemas)
    assert "expresion" in finding.problem
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_dashboard_and_the_rules_ship_in_base_where_grafana_and_prometheus_load_them():
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, check=True
    ).stdout
    docs = list(yaml.safe_load_all(rendered))
    (configmap,) = [
        d for d in docs if d["kind"] == "ConfigMap" and "tsops-dashboards" in d["metadata"]["name"]
    ]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    # the alert rules ship beside it, in every overlay (each validates them strictly)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "PrometheusRule"] == [
        "tsops-monitoring"
    ]
    shipped = json.loads(configmap["data"]["tsops-monitoring.json"])
    assert shipped == dashboard() and shipped["uid"] == "tsops-monitoring"
    variables = {v["name"] for v in shipped["templating"]["list"]}
    assert variables == {"datasource", "model", "env"}
    for panel in shipped["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    for variable in shipped["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\((\w+)", variable["definition"])
            assert metric in METRIC_NAMES


def test_the_monitor_job_runs_the_checks_from_the_repository_argo_cd_deploys():
    cronjob = yaml.safe_load((BASE / "cronjob-monitor.yaml").read_text())
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    clone, ingest = pod["initContainers"]
    (monitor,) = pod["containers"]
    assert {c["image"] for c in (clone, ingest, monitor)} == {"tsops-batch:pin-in-overlay"}
    assert clone["command"] == ["git"] and clone["args"][-1] == "/git/repo"
    args = monitor["args"]
    assert monitor["command"] == ["tsops"] and args[:2] == ["monitor", "run"]
    assert args[args.index("--root") + 1] == "/git/repo"
    assert ingest["args"][ingest["args"].index("--root") + 1] == "/git/repo"
    help_text = CliRunner().invoke(monitor_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for option in (a for a in args if a.startswith("--")):
        assert option in help_text, f"tsops monitor run has no {option}"
    # the clone follows Argo CD's repository and the revision local and staging deploy
    settings = dict(
        line.split("=", 1) for line in (BASE / "monitor.env").read_text().split() if "=" in line
    )
    gitops = yaml.safe_load((ROOT / "argocd" / "gitops-settings.yaml").read_text())["data"]
    assert settings["TSOPS_GITOPS_REPO"] == gitops["repoURL"]
    assert settings["TSOPS_GITOPS_REF"] == gitops["targetRevision"]
    # production's job clones the branch a merged promotion fast-forwards, as Argo CD does
    production = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / "overlays" / "production")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (config,) = [
        d["data"]
        for d in yaml.safe_load_all(production)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tsops-monitor-")
    ]
    assert config["TSOPS_GITOPS_REF"] == gitops["productionRevision"]
