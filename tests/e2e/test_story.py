"""The whole story as one test, on a throwaway git repository: a branch adds data, the
pull request's training registers the reviewed model and reports a real metrics diff, a
tag on main releases that very version (no retraining), staging serves it, production
takes it as a canary (10 %, then 50 % moved with kubectl and made permanent in git),
rolls it back, promotes it fully, and an A/B test pins it as a candidate; a base change
reaches staging at once and production only with a promotion. Each workflow step is the
`run:` script of .github/workflows run with bash, so the test breaks when a workflow
changes under it; the steps people run by hand (README "Deploying") are the same `tsops`
commands. Real git (branches, merges, tags, a bare origin), real DVC, a real MLflow
registry (SQLite in the temporary directory) and real `kubectl kustomize` renders.

Every command is the process a user or a workflow runs; `tsops` is forked from one that
has imported everything already (tests/helpers/warm.py), and six series are fitted
without worker processes (TSOPS_N_JOBS=1).

After every change, Argo CD's sync and KServe's canary revisions are played on the renders
(tests/deploy/cluster_model.py, which cites the behaviour it assumes), and the test
asserts what each environment SERVES: which release takes which share, what the CronJobs
run, and that the registry's champion is the release production serves.

The model is the small test model of tests/conftest.py under the name the overlays
deploy, m3-monthly: the real one (60 series, five methods) would take minutes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ruamel.yaml import YAML

from tests.deploy.cluster_model import Cluster, application
from tests.deploy.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tests.helpers.commands import IN_SERIES, ROOT, run
from tests.helpers.once import empty_mlflow_store
from tsops.deploy.manifests.render import render
from tsops.deploy.manifests.validate import validate_all

# slow: a minute or more; conftest hands slow files to the xdist workers first
pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "m3-monthly"
SHIPPED_IMAGE = "ghcr.io/tsops/tsops-serving"  # what the overlays pin in the repository
OWNER = "TSOPS"  # a GitHub owner with capitals: GHCR wants them lowercased
RELEASED_IMAGE = "ghcr.io/tsops/tsops-serving"  # covered by the ClusterImagePolicy glob
PRODUCTION_OVERLAY = "manifests/overlays/production"


def shipped_pin() -> str:
    """The serving image the repository's production overlay pins (repository:tag@digest)."""
    doc = YAML(typ="safe").load((ROOT / PRODUCTION_OVERLAY / "kustomization.yaml").read_text())
    entry = next(i for i in doc["images"] if i["name"] == "tsops-serving")
    return f"{entry['newName']}:{entry['newTag']}@{entry['digest']}"


def inference_service(env_dir: Path) -> dict:
    docs = render(env_dir)
    found = [d for d in docs if d["kind"] == "InferenceService"]
    assert [d["metadata"]["name"] for d in found] == [MODEL], f"{env_dir}: {found}"
    return found[0]


WORKFLOWS = ROOT / ".github" / "workflows"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


class Story:
    """The repository, its origin, the shared registry, and how each step is run."""

    def __init__(self, repo: Path, registry_uri: str, crds_dir: Path):
        self.repo = repo
        self.registry_uri = registry_uri
        self.crds = crds_dir
        # What CI's jobs get from the repository's settings: the shared tracking server
        # (vars.MLFLOW_TRACKING_URI), and the folder it fetches the CRDs to.
        self.ci = {"MLFLOW_TRACKING_URI": registry_uri, "TSOPS_CRDS_DIR": str(crds_dir)}
        self.timings: dict[str, float] = {}
        self._start = time.perf_counter()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """A developer's shell here: the shared registry, six series fitted in series."""
        return {
            **GIT_IDENTITY,
            **IN_SERIES,
            "MLFLOW_TRACKING_URI": self.registry_uri,
            **(extra or {}),
        }

    def sh(self, *cmd: str, env: dict[str, str] | None = None) -> str:
        """A command in the repository, from a shell that uses the shared registry."""
        return run(list(cmd), self.repo, env=self.env(env)).stdout

    def git(self, *args: str) -> str:
        return self.sh("git", *args).strip()

    def step(self, workflow: str, name: str, **values: str) -> tuple[str, dict[str, str]]:
        """Run one step of a workflow as GitHub does (bash -eo pipefail) with ``values`` for
        the variables its step and job take from ``${{ }}`` expressions; return its stdout
        and the outputs it wrote to $GITHUB_OUTPUT."""
        doc = YAML(typ="safe").load((WORKFLOWS / f"{workflow}.yml").read_text())
        found = [
            (job, step)
            for job in doc["jobs"].values()
            for step in job["steps"]
            if step.get("name") == name
        ]
        assert len(found) == 1, f"{workflow}.yml has {len(found)} steps named {name!r}, not 1"
        job, step = found[0]
        declared = {**(job.get("env") or {}), **(step.get("env") or {})}
        missing = sorted(set(declared) - set(values) - set(self.ci))
        assert not missing, f"{workflow}.yml step {name!r} now also takes {missing}"
        unused = sorted(set(values) - set(declared))
        assert not unused, f"{workflow}.yml step {name!r} no longer takes {unused}"
        # the step sees what it declares and nothing else (no registry it does not name)
        env = {k: "" for k in self.ci} | {k: {**self.ci, **values}[k] for k in declared}
        outputs = self.repo.parent / "github-output"
        outputs.write_text("")
        stdout = self.sh(
            "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"],
            env={**env, "GITHUB_OUTPUT": str(outputs)},
        )  # fmt: skip
        written = dict(
            line.split("=", 1) for line in outputs.read_text().splitlines() if "=" in line
        )
        return stdout, written

    def merge(self, branch: str, title: str) -> None:
        """The pull request of ``branch`` merged into main, and main pushed; when it changed
        the production overlay, deploy-production.yml moves deploy/production to it."""
        self.git("switch", "-q", "main")
        self.git("merge", "-q", "--no-ff", "-m", title, branch)
        self.git("push", "-q", "origin", "main")
        if self.git("diff", "--name-only", "HEAD^1", "HEAD", "--", PRODUCTION_OVERLAY):
            # the command of deploy-production.yml's step (gh only authenticates it)
            self.git("push", "-q", "origin", "main:refs/heads/deploy/production")

    def by_hand(self, branch: str, title: str, *cmd: str) -> str:
        """A change people make with a tsops command (README "Deploying"), merged."""
        self.git("switch", "-q", "-c", branch, "main")
        out = self.sh(*cmd)
        self.git("add", "manifests")
        self.git("commit", "-q", "-m", title)
        self.merge(branch, title)
        return out

    def champion_follows_git(self) -> str:
        """What .github/workflows/champion.yml does when deploy/production moves: it checks
        out that branch and runs its step."""
        self.git("switch", "-q", "--detach", "origin/deploy/production")
        try:
            return self.step("champion", "Point champion at what production serves")[0]
        finally:
            self.git("switch", "-q", "main")

    def alias(self, name: str) -> str:
        client = MlflowClient(tracking_uri=self.registry_uri, registry_uri=self.registry_uri)
        return str(client.get_model_version_by_alias(MODEL, name).version)

    def tree(self, ref: str) -> Path:
        """The manifests at ``ref`` of origin, what Argo CD checks out for a sync."""
        self.git("fetch", "-q", "origin")
        dest = self.repo.parent / "argocd-checkout" / ref.replace("/", "-")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", f"origin/{ref}", "manifests"],
            cwd=self.repo, capture_output=True, check=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest / "manifests" / "overlays"

    def lap(self, label: str) -> None:
        now = time.perf_counter()
        self.timings[label] = now - self._start
        self._start = now


class Argo:
    """Argo CD syncing staging (targetRevision main) and production (deploy/production)."""

    def __init__(self, story: Story):
        self.story = story
        self.clusters = {
            env: Cluster(application(story.repo, f"tsops-{env}"))
            for env in ("staging", "production")
        }

    def revision(self, env: str) -> str:
        return self.clusters[env].application["spec"]["source"]["targetRevision"]

    def sync(self) -> None:
        for env, cluster in self.clusters.items():
            cluster.sync(self.story.tree(self.revision(env)) / env)


def image(version: str) -> str:
    """The serving image of a release as the overlays pin it (repository:tag@digest)."""
    if version == "1.0.0":
        return shipped_pin()
    return f"{RELEASED_IMAGE}:{MODEL}-v{version}@{fake_digest(version)}"


def fake_digest(version: str) -> str:
    """The digest the build step would output (no image is built in this test)."""
    return "sha256:" + hashlib.sha256(version.encode()).hexdigest()


def on_main(
    story: Story,
    argo: Argo,
    served: dict[str, dict[str, int]],
    batch: str,
    champion: str,
    says: str,
) -> None:
    """A change reached main (and deploy/production where the test moved it): main is
    validated, Argo CD syncs both environments, champion.yml moves the alias. Each
    environment then serves ``served`` (release -> %), production's CronJobs run the
    ``batch`` release, and the registry's aliases agree with what is served."""
    report = validate_all(story.repo, story.crds, checkov=False)
    assert report.ok, "\n".join(map(str, report.findings))
    argo.sync()
    for env, want in served.items():
        got = argo.clusters[env].served(MODEL)
        assert got == want, f"{env} serves {got}, expected {want}"
    images = argo.clusters["production"].batch_images()
    assert images == {image(batch)}, f"production's CronJobs run {images}, expected {batch}"
    synced = story.champion_follows_git()
    assert says in synced, synced
    # registry == cluster: champion is the stable release (the one the CronJobs run and
    # that takes the traffic a canary does not), challenger the release staging serves
    assert story.alias("champion") == champion == VERSIONS[f"{MODEL}/v{batch}"]
    assert f"{MODEL}/v{batch}" in served["production"]
    assert VERSIONS[next(iter(served["staging"]))] == story.alias("challenger")


@pytest.fixture
def story(
    repo_copy: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    crds: Path,  # noqa: F811
) -> Story:
    """repo_copy with its small model named m3-monthly, pushed to a bare origin; the
    shared registry starts empty (tables created once per run: empty_mlflow_store)."""
    registry = empty_mlflow_store(tmp_path_factory, tmp_path / "registry" / "mlflow.db")
    s = Story(repo_copy, f"sqlite:///{registry}", crds)
    s.git("mv", "models/tiny", f"models/{MODEL}")
    config = repo_copy / "models" / MODEL / "model.yaml"
    config.write_text(config.read_text().replace("name: tiny", f"name: {MODEL}", 1))
    (repo_copy / "params.yaml").write_text(f"models:\n  - {MODEL}\n")
    s.git("commit", "-q", "-am", "The small test model under the name the overlays deploy")
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], tmp_path)
    s.git("remote", "add", "origin", str(tmp_path / "origin.git"))
    s.git("push", "-q", "origin", "main", "main:refs/heads/deploy/production")
    return s


V1, V2 = f"{MODEL}/v1.0.0", f"{MODEL}/v1.1.0"
VERSIONS = {V1: "1", V2: "2"}


def test_new_data_to_production_and_back(story: Story):
    s, repo = story, story.repo
    config = repo / "models" / MODEL / "model.yaml"
    argo = Argo(s)
    assert (argo.revision("staging"), argo.revision("production")) == ("main", "deploy/production")

    # 0. Where the story starts: the overlays serve m3-monthly/v1.0.0 = registry version 1,
    # trained on six series (production: a canary share set, but no release before it, so
    # KServe gives the only revision everything).
    s.sh("tsops", "ingest", MODEL)
    s.sh("dvc", "add", "-q", "data")
    s.sh("dvc", "repro")
    s.git("add", "data.dvc", "dvc.lock", f"artifacts/{MODEL}/metrics.json")
    s.git("commit", "-q", "-m", "Data and pipeline of m3-monthly v1.0.0")
    s.git("tag", f"{MODEL}/v1.0.0")
    s.git("push", "-q", "origin", "main", f"{MODEL}/v1.0.0")
    assert "registered version 1" in s.sh("tsops", "register", MODEL)
    # what release.yml recorded for v1.0.0: the registry knows its image
    pin = shipped_pin()
    s.sh(
        "tsops", "release", MODEL, "1.0.0", "--model-version", "1",
        "--image", pin.split(":")[0], "--digest", pin.split("@")[1],
    )  # fmt: skip
    s.git("commit", "-q", "-am", "Release m3-monthly/v1.0.0 to staging (its lineage)")
    s.git("push", "-q", "origin", "main")
    everything_on_v1 = {"staging": {V1: 100}, "production": {V1: 100}}
    on_main(s, argo, everything_on_v1, batch="1.0.0", champion="1", says="champion -> version 1")
    s.lap("0 baseline")

    # 1. A branch adds data: two more series, ingested, versioned with DVC, pipeline rerun.
    s.git("switch", "-q", "-c", "data/more-series")
    config.write_text(config.read_text().replace("series: 6", "series: 8"))
    assert "8 series" in s.sh("tsops", "ingest", MODEL)
    s.sh("dvc", "add", "-q", "data")
    s.sh("dvc", "push", "-q")
    assert "Running stage 'backtest@m3-monthly'" in s.sh("dvc", "repro")
    s.git("add", str(config.relative_to(repo)), "data.dvc", "dvc.lock", "artifacts")
    s.git("commit", "-q", "-m", "Two more series")
    s.git("push", "-q", "origin", "data/more-series")
    assert s.git("diff", "--name-only", "main", "--", "data.dvc") == "data.dvc"
    s.lap("1 new data")

    # 2. The pull request's training (train.yml): CI's ingest gives the bytes data.dvc
    # names and the committed dvc.lock is current, so nothing reruns; the gate compares
    # with the champion and passes; the reviewed model is registered (no alias moves);
    # the report compares the metrics with main's committed ones.
    pr = {"MODEL": MODEL, "BASE_REF": "main", "REPORT": f"report-{MODEL}.md"}
    s.step("train", "Get the data", **pr)
    assert "Running stage" not in s.step("train", "Validate, backtest, train, evaluate", **pr)[0]
    s.step("train", "Gate", **pr)
    registered = s.step("train", "Register the reviewed model", **pr)[0]
    assert "registered version 2" in registered and "alias" not in registered, registered
    s.step("train", "Metrics against the base branch", **pr)
    s.step("train", "Forecast plots against the base branch", **pr)
    s.step("train", "Link the plots", PLOTS_URL="https://example.invalid/plots", **pr)
    report = (repo / pr["REPORT"]).read_text()
    assert report.startswith(f"### `{MODEL}`\n```text\n"), report
    assert "gate: passed" in report and "vs champion v1" in report, report
    # a real diff: main's committed metrics (6 series) against the pull request's (8)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in report.splitlines()]
    n_series = [r for r in rows if r[:2] == [f"artifacts/{MODEL}/metrics.json", "n_series"]]
    assert [r[2:5] for r in n_series] == [["6", "8", "2"]], report
    assert (repo / "dvc_plots" / MODEL / "index.html").exists()
    s.merge("data/more-series", "Merge pull request: two more series")
    s.lap("2 pull request training")

    # 3. A tag releases it (release.yml): no training; the version the pull request
    # registered is found by the tagged commit's data hash and dvc.lock, exported for the
    # image, and staging pinned to the pushed image by digest. A tag off main is refused.
    s.git("switch", "-q", "-c", "unreviewed", "data/more-series~1")
    s.git("commit", "-q", "--allow-empty", "-m", "Not merged")
    off_main = s.git("rev-parse", "HEAD")
    s.git("switch", "-q", "main")
    refused = run(
        ["tsops", "reviewed", MODEL, "--commit", off_main, "--main", "origin/main"],
        repo,
        check=False,
        env={"MLFLOW_TRACKING_URI": s.registry_uri},
    )
    assert refused.returncode == 1 and "is not on origin/main" in refused.stderr, refused
    tag = V2
    s.git("tag", tag)
    s.git("push", "-q", "origin", tag)
    s.git("switch", "-q", "--detach", tag)  # what actions/checkout does for a tag
    _, read = s.step("release", "Read the tag", TAG=tag, OWNER=OWNER)
    assert read == {"model": MODEL, "version": "1.1.0", "image": RELEASED_IMAGE}
    commit = s.git("rev-parse", "HEAD")
    found = s.step(
        "release",
        "Find the version the pull request registered",
        MODEL=MODEL,
        COMMIT=commit,
        DEFAULT_BRANCH="main",
    )[0]
    assert "version 2" in found, found
    _, exported = s.step("release", "Read the registry version")
    assert exported == {"version": "2"}
    s.step(
        "release",
        "Export the reviewed version to bake into the image",
        MODEL=MODEL,
        MODEL_VERSION="2",
    )
    s.step(
        "release",
        "Point the staging overlay at the release",
        MODEL=MODEL,
        VERSION=read["version"],
        MODEL_VERSION=exported["version"],
        IMAGE=read["image"],
        DIGEST=fake_digest("1.1.0"),
    )
    client = MlflowClient(tracking_uri=s.registry_uri, registry_uri=s.registry_uri)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 2, "a release retrained"
    branch = f"release/{MODEL}-v1.1.0"
    s.step(
        "release",
        "Commit the overlay change on a release branch",
        BRANCH=branch,
        MESSAGE=f"Release {tag} to staging",
    )
    assert s.git("diff", "--name-only", "main", branch) == "\n".join(
        f"manifests/overlays/staging/{f}" for f in ("kustomization.yaml", "model-version.yaml")
    )
    s.merge(branch, f"Merge pull request: release {tag} to staging")
    staged = {"staging": {V2: 100}, "production": {V1: 100}}
    on_main(s, argo, staged, batch="1.0.0", champion="1", says="champion stays on version 1")
    # staging names where the model came from: the reviewed commit, its data, its run
    notes = inference_service(repo / "manifests/overlays/staging")["metadata"]["annotations"]
    assert notes["tsops.io/git-commit"] == s.git("rev-parse", "data/more-series")
    data_dvc = YAML(typ="safe").load(s.git("show", f"{tag}:data.dvc"))
    assert notes["tsops.io/data-md5"] == data_dvc["outs"][0]["md5"]
    assert notes["tsops.io/mlflow-run"] == client.get_model_version(MODEL, "2").run_id
    s.lap("3 release")

    # 4. Promotion to production as a canary with 10 % (promote.yml): image pin and
    # version file copied; v1.0.0 keeps 90 % and the CronJobs, so it stays champion.
    copy = "Copy the staging release to the target overlay"
    s.step("promote", copy, MODEL=MODEL, TARGET="production", CANARY="10")
    title = f"Promote {MODEL} from staging to production (canary 10%)"
    s.step(
        "promote",
        "Commit the overlay change on a promotion branch",
        BRANCH=f"promote/production/{MODEL}",
        MESSAGE=title,
        TARGET="production",
    )
    s.merge(f"promote/production/{MODEL}", title)
    canary = {"staging": {V2: 100}, "production": {V1: 90, V2: 10}}
    on_main(s, argo, canary, batch="1.0.0", champion="1", says="champion stays on version 1")
    s.lap("4 canary 10")

    # 5. Half the traffic, the way scripts/canary.sh does it: git's change on a branch,
    # then the live patch. Until the branch is merged, a sync puts git's 10 % back.
    assert "prepared" in s.sh("tsops", "canary", MODEL, "--percent", "50", "--branch")
    assert s.git("rev-parse", "--abbrev-ref", "HEAD") == "main"
    argo.clusters["production"].kubectl_patch_canary(MODEL, 50)
    assert argo.clusters["production"].served(MODEL) == {V1: 50, V2: 50}
    argo.sync()
    assert argo.clusters["production"].served(MODEL) == {V1: 90, V2: 10}
    s.merge(f"canary/{MODEL}-production-50", "Merge pull request: canary 50%")
    half = {"staging": {V2: 100}, "production": {V1: 50, V2: 50}}
    on_main(s, argo, half, batch="1.0.0", champion="1", says="champion stays on version 1")
    s.lap("5 canary 50")

    # 6. Rollback (canary 0): everything back on v1.0.0, which never stopped running.
    s.by_hand("rollback", "Roll back", "tsops", "rollback", MODEL)
    back = {"staging": {V2: 100}, "production": {V1: 100}}
    on_main(s, argo, back, batch="1.0.0", champion="1", says="champion stays on version 1")
    s.lap("6 rollback")

    # 7. The canary resumed and promoted fully (the field removed): v1.1.0 takes all the
    # traffic, the CronJobs move to it, and it is champion.
    s.by_hand("canary/100", "Promote fully", "tsops", "canary", MODEL, "--percent", "100")
    full = {"staging": {V2: 100}, "production": {V2: 100}}
    on_main(s, argo, full, batch="1.1.0", champion="2", says="champion -> version 2")
    s.lap("7 full promotion")

    # 8. A change to manifests/base/ reaches staging at once, production only with the
    # next promotion (production's Application tracks deploy/production).
    s.git("switch", "-q", "-c", "settings", "main")
    settings = repo / "manifests/base/settings.env"
    settings.write_text(settings.read_text() + "TSOPS_EXAMPLE_SETTING=on\n")
    s.git("commit", "-q", "-am", "A new setting")
    s.merge("settings", "Merge pull request: a new setting")
    argo.sync()

    def has_setting(env: str) -> bool:
        live = argo.clusters[env].live
        return any(
            kind == "ConfigMap" and "TSOPS_EXAMPLE_SETTING" in (obj.get("data") or {})
            for (kind, _), obj in live.items()
        )

    assert has_setting("staging") and not has_setting("production")
    s.lap("8 base change")

    # 9. An A/B test in production between what it serves and v1.0.0 as the candidate,
    # pinned from the registry by release; merging it also promotes the new setting.
    s.by_hand(
        "ab",
        "A/B v1.1.0 against v1.0.0",
        "tsops", "ab", MODEL, "--candidate", V1, "--weights", "current=80,candidate=20",
    )  # fmt: skip
    argo.sync()
    assert has_setting("production")
    graph = argo.clusters["production"].live[("InferenceGraph", f"{MODEL}-ab")]
    steps = {st["serviceName"]: st["weight"] for st in graph["spec"]["nodes"]["root"]["steps"]}
    assert steps == {MODEL: 80, f"{MODEL}-candidate": 20}
    assert argo.clusters["production"].served(MODEL) == {V2: 100}
    assert argo.clusters["production"].served(f"{MODEL}-candidate") == {V1: 100}
    candidate = argo.clusters["production"].live[("InferenceService", f"{MODEL}-candidate")]
    assert candidate["spec"]["predictor"]["containers"][0]["image"] == image("1.0.0")
    s.lap("9 a/b")

    # git's history tells the same story
    log = s.git("log", "--first-parent", "--format=%s", "main").splitlines()
    assert log[:7] == [
        "A/B v1.1.0 against v1.0.0",
        "Merge pull request: a new setting",
        "Promote fully",
        "Roll back",
        "Merge pull request: canary 50%",
        title,
        f"Merge pull request: release {tag} to staging",
    ]
    print("\nstory timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in s.timings.items()))
