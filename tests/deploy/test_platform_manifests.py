"""The data platform in the cluster: what the rendered overlays give the model server and
the jobs (the feature store, the forecast log's database), that the commands the jobs run
exist as written, that every setting reaches a variable tsops reads, and that no secret
value is in git. The whole validation (schemas, policies, checkov) of these files runs in
test_manifests.py; the validator's new checks are tested here on small documents.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer
import yaml

from tsops.cli import app
from tsops.core.paths import ModelPaths
from tsops.core.settings import Settings
from tsops.deploy.manifests.environment import (
    check_secret_values,
    check_tsops_variables,
    settings_variable,
    settings_variables,
)
from tsops.deploy.manifests.policies import policy_findings
from tsops.deploy.manifests.render import render
from tsops.deploy.manifests.resources import containers_of, pod_specs
from tsops.deploy.manifests.sources import SourceIndex
from tsops.monitor.inputs import DatabaseLog, forecast_log_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ROOT / "manifests" / "overlays"
SECRET = "tsops-data-platform"
#: the keys the operator puts in the Secret (manifests/README.md lists them)
SECRET_KEYS = {
    "forecast-log-url",
    "feature-registry-url",
    "feature-store-redis-url",
    "series-database-url",
}
#: Settings fields the model server reads on the data platform
SERVER_FIELDS = (
    "forecast_log_url",
    "feature_store",
    "feature_registry_url",
    "feature_store_redis_url",
)
FEATURES_JOB = "m3-monthly-features"
MONITOR_JOB = "m3-monthly-monitor"


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict]]:
    """The three overlays as kustomize renders them (side by side: one kubectl each)."""
    if not shutil.which("kubectl"):
        pytest.fail("kubectl not found on PATH: the overlays are rendered with `kubectl kustomize`")
    envs = ("local", "staging", "production")
    with ThreadPoolExecutor(len(envs)) as pool:
        return dict(zip(envs, pool.map(lambda env: render(OVERLAYS / env), envs), strict=True))


def _named(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod(cronjob: dict) -> dict:
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def _secret_ref(entry: dict) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def _config_env(docs: list[dict], container: dict) -> dict[str, str]:
    """What the container's envFrom ConfigMaps set, as the kubelet gives it."""
    maps = _named(docs, "ConfigMap")
    out: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        out.update(maps[source["configMapRef"]["name"]]["data"])
    return out


def _settings(env: dict[str, str]) -> Settings:
    """What ``Settings`` reads in a container with environment ``env`` (and nothing else)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in settings_variables():
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        return Settings()


def _expanded(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) expanded from the container's environment, as the kubelet does."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), a) for a in args]


def _parse(argv: list[str]) -> dict:
    """The parameters tsops' own command line parses from ``argv`` (without running the
    command): a command, option or argument that does not exist raises click's error."""
    command, ctx, name, args = typer.main.get_command(app), None, "tsops", list(argv)
    while hasattr(command, "get_command"):  # a group: descend into the subcommand
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        sub = command.get_command(ctx, args[0]) if args else None
        assert sub is not None, f"`{name}` has no command {args[:1]} (argv {argv})"
        command, name, args = sub, args[0], args[1:]
    return command.make_context(name, args, parent=ctx).params


def _mounts(pod: dict, container: dict) -> dict[str, dict]:
    """mountPath -> {mount..., "volume": the volume it mounts}."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    return {m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in container["volumeMounts"]}


def _feature_store_config(docs: list[dict], mount: dict) -> dict:
    """The feature_store.yaml a subPath mount of a ConfigMap puts in the pod."""
    name = mount["volume"]["configMap"]["name"]
    return yaml.safe_load(_named(docs, "ConfigMap")[name]["data"][mount["subPath"]])


@pytest.mark.parametrize("env", ["staging", "production"])
def test_server_and_monitor_get_the_platform_settings_by_reference(renders, env: str):
    docs = renders[env]
    [server] = _named(docs, "InferenceService").values()
    pod = server["spec"]["predictor"]
    container = pod["containers"][0]
    variables = _env(container)
    # exactly the variables Settings reads for the feature store and the log's database
    assert set(variables) == {settings_variable(f) for f in SERVER_FIELDS}
    urls = {name: e for name, e in variables.items() if name.endswith("_URL")}
    assert len(urls) == 3
    for entry in urls.values():
        assert "value" not in entry
        assert _secret_ref(entry)[0] == SECRET
    # the feature repository: the cluster's Feast configuration in a writable folder
    repo = variables[settings_variable("feature_store")]["value"]
    mounts = _mounts(pod, container)
    assert "emptyDir" in mounts[repo]["volume"]
    config = _feature_store_config(docs, mounts[f"{repo}/feature_store.yaml"])
    assert config == yaml.safe_load((ROOT / "features" / "feature_store.yaml").read_text())
    # the forecast log spills to the shared volume while the database is down
    spill = _settings(_config_env(docs, container)).forecast_log_dir
    assert any(
        spill.is_relative_to(p) for p, m in mounts.items() if "persistentVolumeClaim" in m["volume"]
    )

    # the monitor reads the database the servers write to (no --log folder given)
    monitor = _pod(_named(docs, "CronJob")[MONITOR_JOB])["containers"][0]
    log_url = _env(monitor)[settings_variable("forecast_log_url")]
    assert _secret_ref(log_url) == _secret_ref(variables[settings_variable("forecast_log_url")])
    config_env = _config_env(docs, monitor)
    params = _parse(_expanded(monitor["args"], config_env))
    settings = _settings(config_env)
    read = forecast_log_dir(
        params["root"], params["log"], settings.forecast_log_dir, "postgresql://db/x"
    )
    assert isinstance(read, DatabaseLog)
    # the materialisation job runs, unlike local's
    assert not _named(docs, "CronJob")[FEATURES_JOB]["spec"].get("suspend")


def test_both_arms_of_an_a_b_test_answer_from_the_same_platform(tmp_path: Path):
    """The candidate InferenceService gets the server's data-platform settings too (the
    overlay's patch targets every InferenceService), so a request naming only unique_id
    is answered alike by either arm and both log to the one database."""
    shutil.copytree(
        ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("crds")
    )
    staging = tmp_path / "manifests" / "overlays" / "staging"
    kustomization = staging / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "components:\n  - ../../components/ab\n")
    services = _named(render(staging), "InferenceService")
    main, candidate = services["m3-monthly"], services["m3-monthly-candidate"]
    main_pod, candidate_pod = main["spec"]["predictor"], candidate["spec"]["predictor"]
    assert candidate_pod["containers"][0]["env"] == main_pod["containers"][0]["env"]
    assert _mounts(candidate_pod, candidate_pod["containers"][0]) == _mounts(
        main_pod, main_pod["containers"][0]
    )


def test_local_keeps_the_embedded_defaults(renders):
    docs = renders["local"]
    [server] = _named(docs, "InferenceService").values()
    container = server["spec"]["predictor"]["containers"][0]
    assert not [e for e in container.get("env") or [] if e["name"] in settings_variables()]
    cronjobs = _named(docs, "CronJob")
    assert cronjobs[FEATURES_JOB]["spec"]["suspend"] is True
    # without the database the monitor reads the log folder the server writes to
    monitor = _pod(cronjobs[MONITOR_JOB])["containers"][0]
    assert not [e for e in monitor.get("env") or [] if e["name"] in settings_variables()]
    config_env = _config_env(docs, monitor)
    params = _parse(_expanded(monitor["args"], config_env))
    read = forecast_log_dir(params["root"], params["log"], _settings(config_env).forecast_log_dir)
    assert read == Path(config_env[settings_variable("forecast_log_dir")])


def _mount_of(mounts: dict[str, dict], path: Path) -> dict | None:
    """The mount a file at ``path`` lands in (the deepest mountPath above it), or None."""
    above = [m for m in mounts if path == Path(m) or path.is_relative_to(m)]
    return mounts[max(above, key=len)] if above else None


def test_the_materialisation_job_runs_commands_that_exist(renders):
    docs = renders["production"]
    cronjobs = _named(docs, "CronJob")
    pod = _pod(cronjobs[FEATURES_JOB])
    [ingest] = pod["initContainers"]
    [materialize] = pod["containers"]
    # the stable release, like the other jobs
    forecast = _pod(cronjobs["m3-monthly-forecast"])["containers"][0]
    assert ingest["image"] == materialize["image"] == forecast["image"]
    # tsops' own command line parses each step's arguments: the commands exist as written
    params = {}
    for container in (ingest, materialize):
        assert container["command"] == ["tsops"]
        args = _expanded(container["args"], _config_env(docs, container))
        params[container["name"]] = _parse(args)
    assert ingest["args"][0] == "ingest"
    assert materialize["args"][:2] == ["features", "materialize"]
    model, root = params["materialize"]["model"], params["materialize"]["root"]
    assert (params["ingest"]["model"], params["ingest"]["root"]) == (model, root)
    paths = ModelPaths(root, model)
    ingest_mounts, mounts = _mounts(pod, ingest), _mounts(pod, materialize)
    # the model folders are the image's: no volume hides them
    assert _mount_of(ingest_mounts, paths.models_root) is None
    assert _mount_of(mounts, paths.models_root) is None
    # the series file ingest writes is on a writable emptyDir that materialize reads
    written, read = _mount_of(ingest_mounts, paths.data), _mount_of(mounts, paths.data)
    assert written["name"] == read["name"] and not written.get("readOnly")
    assert "emptyDir" in read["volume"]
    # the Feast repository (--repo, relative to --root) is writable (the offline tables
    # go there) and holds the cluster's configuration
    repo = root / params["materialize"]["repo"]
    assert "emptyDir" in _mount_of(mounts, repo / "data" / "offline")["volume"]
    config = _feature_store_config(docs, mounts[str(repo / "feature_store.yaml")])
    assert config == yaml.safe_load(
        (ROOT / "manifests" / "base" / "feature_store.yaml").read_text()
    )
    # each step gets the connections it uses, by reference, under names Settings reads
    assert {n: _secret_ref(e) for n, e in _env(ingest).items()} == {
        settings_variable("series_database_url"): (SECRET, "series-database-url")
    }
    assert {n: _secret_ref(e) for n, e in _env(materialize).items()} == {
        settings_variable("feature_store_redis_url"): (SECRET, "feature-store-redis-url"),
        settings_variable("feature_registry_url"): (SECRET, "feature-registry-url"),
    }


def test_no_secret_value_in_any_render_and_every_reference_is_to_the_platform_secret(renders):
    keys = set()
    for env, docs in renders.items():
        assert not [d for d in docs if d["kind"] == "Secret"], env
        for doc in docs:
            assert check_secret_values(doc) == [], (env, doc["metadata"]["name"])
            for _, pod in pod_specs(doc):
                for _, container in containers_of(pod):
                    for entry in container.get("env") or []:
                        if "secretKeyRef" in entry.get("valueFrom", {}):
                            name, key = _secret_ref(entry)
                            assert name == SECRET, (env, entry)
                            keys.add(key)
        assert check_tsops_variables(docs, env) == [], env
    assert keys == SECRET_KEYS


# -- the validator's checks -------------------------------------------------------------------


def _job(env: list[dict], args: list[str] | None = None) -> dict:
    container = {"name": "c", "image": "x", "env": env, "args": args or []}
    return {
        "kind": "CronJob",
        "metadata": {"name": "job"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [container]}}}}},
    }


def _reference(name: str, key: str = "forecast-log-url") -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (
            {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"url": "x"}},
            "Secret with values in git (url)",
        ),
        (
            {"kind": "Secret", "metadata": {"name": "s"}, "data": {"password": "eA=="}},
            "Secret with values in git (password)",
        ),
        (
            {
                "kind": "ConfigMap",
                "metadata": {"name": "c"},
                "data": {"TSOPS_FORECAST_LOG_URL": "postgresql://tsops:pw@db/log"},
            },
            "data.TSOPS_FORECAST_LOG_URL is a URL with a password in it",
        ),
        (
            _job([{"name": "TSOPS_FEATURE_STORE_REDIS_URL", "value": "redis://:pw@redis:6379/0"}]),
            "env[0] (TSOPS_FEATURE_STORE_REDIS_URL) is a URL with a password",
        ),
        (
            _job([{"name": "DB_PASSWORD", "value": "hunter2"}]),
            "env[0] (DB_PASSWORD) names a credential and has a literal value",
        ),
    ],
)
def test_secret_values_in_git_are_rejected(doc: dict, words: str):
    [finding] = check_secret_values(doc)
    assert finding.check == "secrets" and words in finding.problem
    assert "secretKeyRef" in finding.fix


@pytest.mark.parametrize(
    "doc",
    [
        _job([_reference("TSOPS_FORECAST_LOG_URL")]),
        _job(
            [{"name": "TSOPS_FORECAST_LOG_URL", "value": "postgresql://tsops@db/log"}]
        ),  # no password
        {
            "kind": "ConfigMap",
            "metadata": {"name": "c"},
            "data": {"f.yaml": "# redis://[[user]:password@]host"},
        },
        {
            "kind": "Secret",
            "metadata": {"name": "s"},
            "type": "Opaque",
        },  # declared, filled in the cluster
    ],
)
def test_references_and_urls_without_a_password_pass(doc: dict):
    assert check_secret_values(doc) == []


def test_a_variable_tsops_does_not_read_is_reported_with_the_right_name():
    docs = [
        _job(
            [_reference("TSOPS_FORCAST_LOG_URL"), {"name": "TSOPS_OUT", "value": "/tmp"}],
            ["--out", "$(TSOPS_OUT)/x"],
        ),
        {
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"TSOPS_FEATURE_STOR": "/f"},
        },
    ]
    docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "settings"}}
    ]
    findings = check_tsops_variables(docs, "manifests/overlays/staging")
    # TSOPS_OUT is not a setting, but the command line expands it: used
    assert [f.problem.split(" sets ")[1].split(",")[0] for f in findings] == [
        "TSOPS_FEATURE_STOR",
        "TSOPS_FORCAST_LOG_URL",
    ]
    assert "did you mean TSOPS_FEATURE_STORE?" in findings[0].fix
    assert "did you mean TSOPS_FORECAST_LOG_URL?" in findings[1].fix
    assert findings[1].where == "manifests/overlays/staging: CronJob/job"


def test_a_broken_overlay_patch_fails_naming_the_variable(tmp_path: Path):
    """The checks run on what kustomize renders from the overlay's data-platform.yaml."""
    shutil.copytree(
        ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("crds")
    )
    patch = tmp_path / "manifests" / "overlays" / "staging" / "data-platform.yaml"
    text = patch.read_text()
    text = text.replace("name: TSOPS_FEATURE_STORE\n", "name: TSOPS_FEATURESTORE\n", 1)
    text = text.replace(
        "value: /home/tsops/features\n",
        "value: /home/tsops/features\n    - name: TSOPS_SERIES_DATABASE_URL\n"
        "      value: postgresql+psycopg://tsops:s3cret@series/series\n",
        1,
    )
    patch.write_text(text)
    label = "manifests/overlays/staging"
    index = SourceIndex(tmp_path)
    findings = policy_findings(render(patch.parent), label, lambda doc: index(doc, label))
    problems = {(f.check, f.problem) for f in findings}
    # the patch file that sets them is named with the InferenceService
    assert all("manifests/overlays/staging/data-platform.yaml" in f.where for f in findings)
    assert any(c == "settings" and "TSOPS_FEATURESTORE" in p for c, p in problems), problems
    assert any(
        c == "secrets" and "(TSOPS_SERIES_DATABASE_URL) is a URL with a password" in p
        for c, p in problems
    ), problems
