"""The official Airflow Helm chart's values: they parse, git-sync points the DAG folder at
this repository's orchestration/airflow/dags, and every key used is one the chart's
values schema has (additionalProperties is false there: a misspelt key fails the install)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VALUES = ROOT / "orchestration" / "airflow" / "helm" / "values.yaml"

#: the chart's dags.gitSync properties (its values.schema.json, chart releases for Airflow 3)
GIT_SYNC_KEYS = {
    "enabled", "repo", "branch", "rev", "ref", "depth", "maxFailures", "subPath", "wait",
    "period", "containerName", "securityContext", "securityContexts", "livenessProbe",
    "readinessProbe", "emptyDirConfig", "containerLifecycleHooks", "uid",
    "extraVolumeMounts", "credentialsSecret", "sshKey", "sshKeySecret", "knownHosts", "env",
    "envFrom", "resources",
}  # fmt: skip


def test_git_sync_points_the_dag_folder_at_this_repositorys_dags():
    values = yaml.safe_load(VALUES.read_text())
    dags = values["dags"]
    assert set(dags) <= {"mountPath", "persistence", "gitSync"}
    assert dags["persistence"]["enabled"] is False  # git is the only source of DAGs
    sync = dags["gitSync"]
    assert set(sync) <= GIT_SYNC_KEYS, set(sync) - GIT_SYNC_KEYS
    assert sync["enabled"] is True
    folder = ROOT / sync["subPath"]
    assert sync["subPath"] == "orchestration/airflow/dags"
    assert {"_tsops.py", "tsops_monitoring.py", "tsops_features.py"} <= {
        p.name for p in folder.glob("*.py")
    }
    assert sync["branch"] == sync["ref"] == "main" and sync["depth"] == 1
    # the repository Argo CD deploys from, changed in one place for a fork
    settings = yaml.safe_load((ROOT / "argocd" / "gitops-settings.yaml").read_text())
    assert sync["repo"] == settings["data"]["repoURL"]
    assert sync.get("credentialsSecret") in (None, "")  # a Secret's name at most, no token


def test_the_chart_runs_airflow_3_with_the_kubernetes_executor_and_no_secrets():
    values = yaml.safe_load(VALUES.read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == values["defaultAirflowTag"]
    assert values["airflowVersion"].startswith("3.")
    lock = ROOT / "orchestration" / "airflow" / "requirements.lock"
    if lock.exists():  # the version the DAGs are tested with
        assert f"apache-airflow=={values['airflowVersion']}" in lock.read_text()
    assert values["config"]["core"]["load_examples"] == "False"
    # credentials by Secret name only
    assert values["data"] == {"metadataSecretName": "airflow-metadata-db"}
    assert "fernetKey" not in values and "webserverSecretKey" not in values
    assert {e["name"] for e in values["env"]} == {"TSOPS_STAGING", "TSOPS_ENVIRONMENT"}
