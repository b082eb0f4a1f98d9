"""``tsops bandit`` end to end: a bandit in git, a forecast log, the weights as a git change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from ruamel.yaml import YAML

from tests.helpers.commands import BIN, ROOT, run
from tests.helpers.commands import tsops as tsops_here
from tests.helpers.git_repo import git, init_repo
from tests.monitor.test_accuracy import (
    MODEL_YAML,
    VALUE_COLS,
    rolling_forecasts,
    served_requests,
    write_log,
)
from tsops.deploy import gitops as g
from tsops.deploy.strategies import AB_WEIGHTS, live_strategies
from tsops.monitor.bandit import branch_name

MODEL = "m3-monthly"
WEIGHTS = Path("manifests/overlays/production") / AB_WEIGHTS
REPO = "ghcr.io/acme/tsops-serving"


def release(version: str, model_version: str) -> tuple[str, str, str]:
    """(release, registry version, image ref) as ``tsops ab`` pins it from the registry."""
    digest = "sha256:" + model_version * 64
    return f"{MODEL}/v{version}", model_version, f"{REPO}:{MODEL}-v{version}@{digest}"


def start_bandit(repo: Path, weights: str = "current=50,candidate=50", third=None) -> None:
    """``tsops ab --bandit`` in production: v1.0.0 (current, registry version 1) against
    v1.1.0 (candidate, version 2), the default policy beside the Splitter weights."""
    policy = {"floor": 0.1, "max_step": 0.2, "min_scored": 60}
    edits = g.ab_edits(repo, MODEL, "production", weights, candidate=release("1.1.0", "2"),
                       third=third, policy=policy)  # fmt: skip
    g.apply(edits)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"bandit: {weights}")


@pytest.fixture
def repo(tmp_path) -> Path:
    """manifests/ and the model folder (six M3 monthly series) in a new git repository,
    a bandit running in production, and a forecast log of both arms beside it (not in
    git): seasonal naive is v1, Theta (clearly better on these series) v2."""
    repo = init_repo(tmp_path / "repo", {"README.md": "a copy for tsops bandit\n"})
    shutil.copytree(ROOT / "manifests", repo / "manifests", ignore=shutil.ignore_patterns("crds"))
    (repo / "models" / MODEL).mkdir(parents=True)
    (repo / "models" / MODEL / "model.yaml").write_text(
        MODEL_YAML.replace("name: tiny", f"name: {MODEL}")
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "copy")
    start_bandit(repo)
    logs = tmp_path / "logs"
    for served, version, kind in (
        (MODEL, "1", "seasonal_naive"),
        (f"{MODEL}-candidate", "2", "theta"),
    ):
        requests = served_requests(rolling_forecasts(kind), served, version, registered_model=MODEL)
        write_log(logs / served, requests)
    return repo


def bandit(repo: Path, *args: str, process: bool = False):
    """``tsops bandit`` in the repository, in this process or (``process``) as a user
    runs it, a real process."""
    logs = repo.parent / "logs"
    cmd = ["bandit", MODEL, "--env", "production", "--log", str(logs), "--now", "2020-03-15"]
    if process:
        return run([str(BIN / "tsops"), *cmd, *args], repo)
    return tsops_here(*cmd, *args, cwd=repo)


def tree(repo: Path) -> dict[str, str]:
    return {str(p): p.read_text() for p in sorted((repo / "manifests").rglob("*.yaml"))}


def test_dry_run_prints_the_move_and_writes_nothing(repo):
    before, head = tree(repo), git(repo, "rev-parse", "HEAD")
    done = bandit(repo, "--dry-run", "--out", str(repo.parent / "out"), process=True)
    document = json.loads(done.stdout)
    assert document["weights"] == {"current": 30, "candidate": 70}
    assert document["previous"] == {"current": 50, "candidate": 50}
    assert document["moved"] is True and document["applied"] is None
    assert document["policy"]["floor"] == 0.1 and document["policy"]["min_scored"] == 60
    evidence = {e["arm"]: e for e in document["evidence"]}
    assert evidence["candidate"]["model_version"] == "2"
    assert evidence["candidate"]["p_best"] > 0.99
    assert evidence["candidate"]["mean_loss"] < evidence["current"]["mean_loss"]
    assert evidence["current"]["n_scored"] == 774  # 6 series x 129 scored (series, cutoff, step)
    assert [a["release"] for a in document["arms"]] == [f"{MODEL}/v1.0.0", f"{MODEL}/v1.1.0"]
    assert "moved: current 50% -> 30%, candidate 50% -> 70%" in done.stderr
    assert tree(repo) == before and git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""
    assert json.loads((repo.parent / "out" / "bandit.json").read_text()) == document
    table = pd.read_csv(repo.parent / "out" / "bandit_evidence.csv")
    assert table["arm"].tolist() == ["current", "candidate"]
    assert table["weight"].tolist() == [30, 70]


def test_branch_commits_the_weights_and_leaves_head_where_it_was(repo):
    before = tree(repo)
    done = bandit(repo, "--branch")
    name = branch_name(MODEL, "production", {"current": 30, "candidate": 70})
    assert name == "bandit/m3-monthly-production-current30-candidate70"
    assert json.loads(done.stdout)["applied"] == {"branch": name, "created": True}
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert tree(repo) == before
    diff = git(repo, "diff", "--unified=0", "main", name, "--", str(WEIGHTS)).splitlines()
    changed = [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    # exactly the two weights change: comments, policy annotations and layout are kept
    assert changed == [f"{sign}          weight: {w}" for sign, w in
                       (("-", 50), ("+", 30), ("-", 50), ("+", 70))]  # fmt: skip
    assert git(repo, "diff", "--name-only", "main", name) == str(WEIGHTS)
    steps = YAML(typ="safe").load(git(repo, "show", f"{name}:{WEIGHTS}"))["spec"]["nodes"]
    assert [(s["name"], s["weight"]) for s in steps["root"]["steps"]] == [
        ("current", 30),
        ("candidate", 70),
    ]
    message = git(repo, "log", "-1", "--format=%B", name)
    assert message.startswith(f"Bandit weights of {MODEL} in production: current 50% -> 30%")
    assert "| candidate | 2 |" in message
    # the same evidence again proposes nothing new
    again = bandit(repo, "--branch")
    assert json.loads(again.stdout)["applied"] == {"branch": name, "created": False}


def test_without_flags_the_overlay_is_written_and_git_reads_the_new_weights(repo):
    ran = bandit(repo)
    assert json.loads(ran.stdout)["applied"] == {"files": [str(WEIGHTS)]}
    assert git(repo, "status", "--porcelain") == f"M {WEIGHTS}"
    (bandit_now,) = live_strategies(repo, "production")
    assert bandit_now.kind == "bandit"
    assert bandit_now.weights == {"current": 30, "candidate": 70}
    # the policy annotations are kept beside the weights
    assert bandit_now.policy == {"floor": 0.1, "max_step": 0.2, "min_scored": 60}


def test_options_override_the_policy_and_no_move_writes_nothing(repo):
    before = tree(repo)
    ran = bandit(repo, "--min-scored", "1000", "--max-step", "0.3", "--root", str(repo))
    document = json.loads(ran.stdout)
    assert document["moved"] is False and document["applied"] is None
    assert document["policy"]["min_scored"] == 1000 and document["policy"]["max_step"] == 0.3
    assert "every arm needs 1000 (min_scored)" in document["reason"]
    assert tree(repo) == before


def test_an_environment_without_a_bandit_says_what_runs(repo):
    ran = tsops_here(
        "bandit", MODEL, "--env", "staging", "--log", str(repo.parent / "logs"),
        "--root", str(repo), cwd=repo, check=False,
    )  # fmt: skip
    assert ran.returncode == 1
    assert "staging runs no bandit for m3-monthly (it runs: single)" in ran.stderr
    assert "--bandit" in ran.stderr
    both = tsops_here(
        "bandit", MODEL, "--dry-run", "--branch", "--root", str(repo), cwd=repo, check=False
    )
    assert both.returncode == 1 and "pass one of them" in both.stderr


def test_three_arms_walk_toward_the_thompson_target(repo):
    # a third release (registry version 3): Theta's forecasts 30% too high, the worst arm
    git(repo, "checkout", "-q", "--", ".")
    theta = rolling_forecasts("theta")
    biased = theta.assign(**{c: theta[c] * 1.3 for c in VALUE_COLS})
    write_log(repo.parent / "logs" / f"{MODEL}-third",
              served_requests(biased, f"{MODEL}-third", "3", registered_model=MODEL))  # fmt: skip
    g.apply(g.ab_edits(repo, MODEL, "production", "current=40,candidate=30,third=30",
                       third=release("1.2.0", "3")))  # fmt: skip
    git(repo, "commit", "-q", "-am", "third arm")
    document = json.loads(bandit(repo).stdout)
    assert document["previous"] == {"current": 40, "candidate": 30, "third": 30}
    # the target is about 10/80/10 (floor 10%, the rest by P(best), Theta's ~1): the
    # candidate, the farthest from it, moves the full 20 points, the others in proportion
    targets = [e["target"] for e in document["evidence"]]
    assert targets == pytest.approx([10, 80, 10], abs=1.5)
    assert document["weights"] == {"current": 28, "candidate": 50, "third": 22}
    (now,) = live_strategies(repo, "production")
    assert now.weights == document["weights"]
    assert document["evidence"][2]["model_version"] == "3"
    git(repo, "commit", "-q", "-am", "bandit weights")
    assert json.loads(bandit(repo).stdout)["weights"] == {
        "current": 16,
        "candidate": 70,
        "third": 14,
    }
