"""The whole story as one test, on a throwaway git repository (issue 4): a branch adds
data, the pull request's training report passes the gate, a tag releases the model,
staging renders it, production takes it as a canary (10 %, 50 %), promotes it fully and
rolls it back. Each workflow step is the `run:` script of .github/workflows run with
bash, so the test breaks when a workflow changes under it; the steps people run by hand
(README "Deploying") are the same `tsops` commands. Real git (branches, merges, tags, a
bare origin), real DVC, a real MLflow registry (SQLite in the temporary directory) and
real `kubectl kustomize` renders: after every change that reaches main the manifests are
rendered, validated and checked, and the registry's aliases against what git deploys.

The model is the small test model of tests/conftest.py under the name the overlays
deploy, m3-monthly: the real one (60 series, five methods) would take minutes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow import MlflowClient
from ruamel.yaml import YAML

from tests.conftest import ROOT, run
from tests.integration.test_manifests import crds  # noqa: F401 - the CRD directory fixture
from tsops import manifests as m

pytestmark = pytest.mark.integration

MODEL = "m3-monthly"
SHIPPED_IMAGE = "ghcr.io/tsops/tsops-serving"  # what the overlays pin in the repository
OWNER = "Acme"  # a GitHub owner with capitals: GHCR wants them lowercased
RELEASED_IMAGE = "ghcr.io/acme/tsops-serving"
PREVIOUS_VERSION = "tsops.io/previous-model-version"
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

    def sh(self, *cmd: str, env: dict[str, str] | None = None) -> str:
        """A command in the repository, from a shell that uses the shared registry."""
        full = {**GIT_IDENTITY, "MLFLOW_TRACKING_URI": self.registry_uri, **(env or {})}
        return run(list(cmd), self.repo, env=full).stdout

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
        """The pull request of ``branch`` merged into main, and main pushed."""
        self.git("switch", "-q", "main")
        self.git("merge", "-q", "--no-ff", "-m", title, branch)
        self.git("push", "-q", "origin", "main")

    def by_hand(self, branch: str, title: str, *cmd: str) -> str:
        """A change people make with a tsops command (README "Deploying"), merged."""
        self.git("switch", "-q", "-c", branch, "main")
        out = self.sh(*cmd)
        self.git("add", "manifests/overlays")
        self.git("commit", "-q", "-m", title)
        self.merge(branch, title)
        return out

    def champion_follows_git(self) -> str:
        """What .github/workflows/champion.yml does when an overlay change reaches main."""
        return self.step("champion", "Point champion at what production serves")[0]

    def alias(self, name: str) -> str:
        client = MlflowClient(tracking_uri=self.registry_uri, registry_uri=self.registry_uri)
        return str(client.get_model_version_by_alias(MODEL, name).version)

    def lap(self, label: str) -> None:
        now = time.perf_counter()
        self.timings[label] = now - self._start
        self._start = now


def inference_service(env_dir: Path) -> dict:
    docs = m.render(env_dir)
    found = [d for d in docs if d["kind"] == "InferenceService"]
    assert [d["metadata"]["name"] for d in found] == [MODEL], f"{env_dir}: {found}"
    return found[0]


def served_by_git(isvc: dict) -> str:
    """The version taking the stable traffic of a rendered InferenceService: with a
    canary, the release it replaced (KServe's last rolled-out revision), else its own."""
    notes = isvc["metadata"]["annotations"]
    if "canaryTrafficPercent" in isvc["spec"]["predictor"] and PREVIOUS_VERSION in notes:
        return notes[PREVIOUS_VERSION]
    return notes["tsops.io/model-version"]


def on_main(story: Story, expected: dict[str, tuple], champion: str, says: str) -> dict[str, dict]:
    """A change reached main: champion.yml moves the alias (its output ``says`` so) while
    main is rendered and validated; each environment serves what ``expected`` says (image,
    release, registry version, canary %) and the registry's aliases agree with it."""
    with ThreadPoolExecutor(1) as pool:  # two cores: the workflow beside the renders
        synced = pool.submit(story.champion_follows_git)
        report = m.validate_all(story.repo, story.crds, checkov=False)
        assert says in synced.result(), synced.result()
    assert report.ok, "\n".join(map(str, report.findings))
    rendered = {}
    for env, (image, release, version, canary) in expected.items():
        isvc = inference_service(story.repo / "manifests" / "overlays" / env)
        notes = isvc["metadata"]["annotations"]
        predictor = isvc["spec"]["predictor"]
        got = (
            predictor["containers"][0]["image"],
            notes["tsops.io/release"],
            notes["tsops.io/model-version"],
            predictor.get("canaryTrafficPercent"),
        )
        want = (f"{image}:{release.replace('/', '-')}", release, version, canary)
        assert got == want, f"{env} renders {got}, expected {want}"
        rendered[env] = isvc
    # registry == git: champion is what production serves, challenger what staging serves
    assert story.alias("champion") == champion == served_by_git(rendered["production"])
    assert (
        story.alias("challenger")
        == rendered["staging"]["metadata"]["annotations"]["tsops.io/model-version"]
    )
    return rendered


@pytest.fixture
def story(repo_copy: Path, tmp_path: Path, crds: Path) -> Story:  # noqa: F811
    """repo_copy with its small model named m3-monthly, pushed to a bare origin."""
    registry = tmp_path / "registry"
    registry.mkdir()
    s = Story(repo_copy, f"sqlite:///{registry / 'mlflow.db'}", crds)
    s.git("mv", "models/tiny", f"models/{MODEL}")
    config = repo_copy / "models" / MODEL / "model.yaml"
    config.write_text(config.read_text().replace("name: tiny", f"name: {MODEL}", 1))
    (repo_copy / "params.yaml").write_text(f"models:\n  - {MODEL}\n")
    s.git("commit", "-q", "-am", "The small test model under the name the overlays deploy")
    run(["git", "init", "-q", "--bare", str(tmp_path / "origin.git")], tmp_path)
    s.git("remote", "add", "origin", str(tmp_path / "origin.git"))
    s.git("push", "-q", "origin", "main")
    return s


def test_new_data_to_production_and_back(story: Story):
    s, repo = story, story.repo
    config = repo / "models" / MODEL / "model.yaml"

    # 0. Where the story starts: the overlays serve m3-monthly/v1.0.0 = registry version 1,
    # trained on six series (production: a canary share set, but no release before it).
    s.sh("tsops", "ingest", MODEL)
    s.sh("dvc", "add", "-q", "data")
    s.sh("dvc", "repro")
    s.git("add", "data.dvc", "dvc.lock")
    s.git("commit", "-q", "-m", "Data and pipeline of m3-monthly v1.0.0")
    s.git("tag", f"{MODEL}/v1.0.0")
    s.git("push", "-q", "origin", "main", f"{MODEL}/v1.0.0")
    assert "registered version 1" in s.sh("tsops", "register", MODEL)
    v1 = (SHIPPED_IMAGE, f"{MODEL}/v1.0.0", "1")
    first = {"staging": (*v1, None), "production": (*v1, 10)}
    on_main(s, first, champion="1", says="champion -> version 1")
    s.lap("0 baseline")

    # 1. A branch adds data: two more series, ingested, versioned with DVC, pipeline rerun.
    s.git("switch", "-q", "-c", "data/more-series")
    config.write_text(config.read_text().replace("series: 6", "series: 8"))
    assert "8 series" in s.sh("tsops", "ingest", MODEL)
    s.sh("dvc", "add", "-q", "data")
    s.sh("dvc", "push", "-q")
    assert "Running stage 'backtest@m3-monthly'" in s.sh("dvc", "repro")
    s.git("add", str(config.relative_to(repo)), "data.dvc", "dvc.lock")
    s.git("commit", "-q", "-m", "Two more series")
    s.git("push", "-q", "origin", "data/more-series")
    assert s.git("diff", "--name-only", "main", "--", "data.dvc") == "data.dvc"
    s.lap("1 new data")

    # 2. The pull request's training (train.yml): CI's ingest gives the bytes data.dvc
    # names and the committed dvc.lock is current, so nothing reruns; the gate compares
    # with the champion (what production serves) and passes; the report is written.
    pr = {"MODEL": MODEL, "BASE_REF": "main", "REPORT": f"report-{MODEL}.md"}
    s.step("train", "Get the data", **pr)
    assert "Running stage" not in s.step("train", "Validate, backtest, train, evaluate", **pr)[0]
    s.step("train", "Gate", **pr)
    s.step("train", "Metrics against the base branch", **pr)
    s.step("train", "Forecast plots against the base branch", **pr)
    s.step("train", "Link the plots", PLOTS_URL="https://example.invalid/plots", **pr)
    report = (repo / pr["REPORT"]).read_text()
    assert report.startswith(f"### `{MODEL}`\n```text\n"), report
    assert "gate: passed" in report and "vs champion v1" in report, report
    # `dvc metrics diff` has this branch's backtest (its base column stays empty: artifacts/
    # is not in git, so DVC finds no metrics of origin/main to compare with)
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in report.splitlines()]
    n_series = [r for r in rows if r[:2] == [f"artifacts/{MODEL}/metrics.json", "n_series"]]
    assert [r[3] for r in n_series] == ["8"], report
    assert (repo / "dvc_plots" / MODEL / "index.html").exists()
    s.merge("data/more-series", "Merge pull request: two more series")
    s.lap("2 pull request training")

    # 3. A tag releases it (release.yml): train and register from the tagged commit, export
    # the challenger for the image, point staging at the image pushed to the owner's GHCR.
    tag = f"{MODEL}/v1.1.0"
    s.git("tag", tag)
    s.git("push", "-q", "origin", tag)
    s.git("switch", "-q", "--detach", tag)  # what actions/checkout does for a tag
    _, read = s.step("release", "Read the tag", TAG=tag, OWNER=OWNER)
    assert read == {"model": MODEL, "version": "1.1.0", "image": RELEASED_IMAGE}
    s.step("release", "Get the data")
    s.step("release", "Validate, backtest, train, evaluate")
    register = "Register (fails, registering nothing as challenger, when the gate fails)"
    registered = s.step("release", register, MODEL=MODEL)[0]
    assert "alias challenger -> version 2" in registered, registered
    s.step("release", "Export the challenger to bake into the image", MODEL=MODEL)
    _, exported = s.step("release", "Read the registry version")
    assert exported == {"version": "2"}
    s.step(
        "release",
        "Point the staging overlay at the release",
        MODEL=MODEL,
        VERSION=read["version"],
        MODEL_VERSION=exported["version"],
        IMAGE=read["image"],
    )
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
    v2 = (RELEASED_IMAGE, tag, "2")
    staged = {"staging": (*v2, None), "production": (*v1, 10)}
    rendered = on_main(s, staged, champion="1", says="champion stays on version 1")
    # staging names where the model came from: the tagged commit, its data, its MLflow run
    notes = rendered["staging"]["metadata"]["annotations"]
    client = MlflowClient(tracking_uri=s.registry_uri, registry_uri=s.registry_uri)
    assert notes["tsops.io/git-commit"] == s.git("rev-parse", f"{tag}^{{commit}}")
    data_dvc = YAML(typ="safe").load(s.git("show", f"{tag}:data.dvc"))
    assert notes["tsops.io/data-md5"] == data_dvc["outs"][0]["md5"]
    assert notes["tsops.io/mlflow-run"] == client.get_model_version(MODEL, "2").run_id
    s.lap("3 release")

    # 4. Promotion to production as a canary with 10 % (promote.yml): the image and the
    # version file are copied; v1.0.0 keeps 90 % of the traffic, so it stays champion.
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
    canary = {"staging": (*v2, None), "production": (*v2, 10)}
    rendered = on_main(s, canary, champion="1", says="champion stays on version 1")
    notes = rendered["production"]["metadata"]["annotations"]
    assert notes["tsops.io/previous-release"] == f"{MODEL}/v1.0.0"
    s.lap("4 canary 10")

    # 5. Half the traffic: v1.0.0 still takes the rest.
    s.by_hand("canary/50", "Canary 50%", "tsops", "canary", MODEL, "--percent", "50")
    half = {"staging": (*v2, None), "production": (*v2, 50)}
    on_main(s, half, champion="1", says="champion stays on version 1")
    s.lap("5 canary 50")

    # 6. Full promotion (the field removed): v1.1.0 takes everything and is champion.
    s.by_hand("canary/100", "Promote fully", "tsops", "canary", MODEL, "--percent", "100")
    full = {"staging": (*v2, None), "production": (*v2, None)}
    on_main(s, full, champion="2", says="champion -> version 2")
    s.lap("6 full promotion")

    # 7. Rollback (canary 0): the traffic and the champion go back to v1.0.0.
    s.by_hand("rollback", "Roll back", "tsops", "rollback", MODEL)
    back = {"staging": (*v2, None), "production": (*v2, 0)}
    on_main(s, back, champion="1", says="champion -> version 1")
    s.lap("7 rollback")

    # git's history tells the same story
    log = s.git("log", "--first-parent", "--format=%s", "main").splitlines()
    assert log[:6] == [
        "Roll back",
        "Promote fully",
        "Canary 50%",
        title,
        f"Merge pull request: release {tag} to staging",
        "Merge pull request: two more series",
    ]
    print("\nstory timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in s.timings.items()))
