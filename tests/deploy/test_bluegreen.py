"""Blue/green: the switch and the switch back are exactly the expected git diffs (the live
step and the CronJobs' pin, nothing else), what a cluster then serves (cluster_model.py:
Argo CD, KServe's revisions and InferenceGraph router, the model server's copies), and
bad input changes no file."""

from __future__ import annotations

import difflib
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.cluster_model import Cluster, application
from tsops.deploy import bluegreen as bg
from tsops.deploy import gitops as g
from tsops.deploy.manifests.render import render
from tsops.deploy.overlays import GitOpsError
from tsops.deploy.strategies import ROLE_LIVE, ROLE_SHADOW, live_strategies

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MODEL = "m3-monthly"
REPO = "ghcr.io/tsops/tsops-serving"
V1, V2, V3 = (f"{MODEL}/v1.{i}.0" for i in range(3))
PROD = "manifests/overlays/production"
GRAPH = f"{MODEL}-bluegreen"


def digest(version: str) -> str:
    """1.0.0: the example digest the shipped overlays pin; 1.N.0: N repeated."""
    minor = version.split(".")[1]
    return "sha256:" + ("0123456789abcdef" * 4 if minor == "0" else minor * 64)


def image(version: str) -> str:
    return f"{REPO}:{MODEL}-v{version}@{digest(version)}"


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(
        ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("crds")
    )
    shutil.copytree(ROOT / "argocd", tmp_path / "argocd")
    return tmp_path


def files(repo: Path) -> dict[str, str]:
    return {
        p.relative_to(repo).as_posix(): p.read_text()
        for p in sorted((repo / "manifests").rglob("*"))
        if p.is_file()
    }


def diff(before: dict[str, str], after: dict[str, str]) -> str:
    """The unified diff of every changed file; hunk headers without line numbers, so that
    an edit elsewhere in an overlay file (a comment above) does not change it."""
    out = []
    for name in sorted(set(before) | set(after)):
        out += difflib.unified_diff(
            before.get(name, "").splitlines(keepends=True),
            after.get(name, "").splitlines(keepends=True),
            f"a/{name}",
            f"b/{name}",
        )
    return "".join("@@\n" if line.startswith("@@ ") else line for line in out)


def graph(repo: Path) -> dict:
    return next(d for d in render(repo / PROD) if d["kind"] == "InferenceGraph")


def kubectl_switch(repo: Path, colour: str) -> dict:
    """scripts/bluegreen.sh's cluster half on the live graph (the rendered one)."""
    live = repo / "graph.yaml"
    live.write_text(yaml.safe_dump(graph(repo)))
    out = subprocess.run(
        [str(ROOT / "scripts/bluegreen.sh"), MODEL, colour, "--local", "-f", str(live)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return yaml.safe_load(out)


SWITCH_TO_GREEN = f"""\
--- a/{PROD}/bluegreen-live.yaml
+++ b/{PROD}/bluegreen-live.yaml
@@
     root:
       routerType: Sequence
       steps:
-        - name: blue
-          serviceName: m3-monthly
+        - name: green
+          serviceName: m3-monthly-green
--- a/{PROD}/kustomization.yaml
+++ b/{PROD}/kustomization.yaml
@@
     digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
   - name: tsops-batch
     newName: ghcr.io/tsops/tsops-serving
-    newTag: m3-monthly-v1.0.0
-    digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
+    newTag: m3-monthly-v1.1.0
+    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
   - name: tsops-serving-green
     newName: ghcr.io/tsops/tsops-serving
     newTag: m3-monthly-v1.1.0
"""


def test_switch_and_switch_back_are_one_step_and_no_new_revision(repo):
    shipped = files(repo)
    cluster = Cluster(application(repo, "tsops-production"))
    cluster.sync(repo / PROD)
    g.apply(bg.release_edits(repo, MODEL, "production", V2, "2", image("1.1.0")))
    cluster.sync(repo / PROD)
    assert cluster.graph_served(GRAPH) == {V1: 100}
    assert cluster.copies(GRAPH) == {V2: 100}, "green gets a copy of every request"
    assert cluster.mirrors(f"{MODEL}-green") == [MODEL], "and would mirror to blue once live"
    revisions = {s: cluster.revisions(s) for s in (MODEL, f"{MODEL}-green")}
    started = files(repo)

    by_kubectl = kubectl_switch(repo, "green")
    g.apply(bg.switch_edits(repo, MODEL, "production", "green"))
    assert diff(started, files(repo)) == SWITCH_TO_GREEN
    assert by_kubectl == graph(repo), "scripts/bluegreen.sh patches what git switches"
    cluster.sync(repo / PROD)
    assert cluster.graph_served(GRAPH) == {V2: 100}
    assert cluster.copies(GRAPH) == {V1: 100}, "blue, now idle, stays warm on copies"
    assert {s: cluster.revisions(s) for s in revisions} == revisions, "no new revision"
    assert cluster.batch_images() == {image("1.1.0")}, "batch follows the live colour"
    (strategy,) = live_strategies(repo, "production")
    assert strategy.kind == "bluegreen" and strategy.baseline == "green"
    assert [(a.name, a.release, a.share, a.role) for a in strategy.arms] == [
        ("blue", V1, 0, ROLE_SHADOW),
        ("green", V2, 100, ROLE_LIVE),
    ]
    switched = files(repo)

    g.apply(bg.switch_edits(repo, MODEL, "production", "blue"))
    assert diff(switched, files(repo)) == diff(switched, started), "back is the same diff"
    assert files(repo) == started
    cluster.sync(repo / PROD)
    assert cluster.graph_served(GRAPH) == {V1: 100}
    assert {s: cluster.revisions(s) for s in revisions} == revisions
    assert cluster.batch_images() == {image("1.0.0")}

    # the next release goes to the idle colour only: a revision where no user is
    g.apply(bg.release_edits(repo, MODEL, "production", V3, "3", image("1.2.0")))
    cluster.sync(repo / PROD)
    assert cluster.graph_served(GRAPH) == {V1: 100} and cluster.copies(GRAPH) == {V3: 100}
    assert cluster.revisions(MODEL) == revisions[MODEL]
    assert cluster.revisions(f"{MODEL}-green") == revisions[f"{MODEL}-green"] + 1
    assert cluster.batch_images() == {image("1.0.0")}

    # ended on blue: the shipped files again, but for the dormant canary share it removed
    g.apply(bg.off_edits(repo, MODEL, "production"))
    changed = {
        k for k in shipped.keys() | files(repo).keys() if shipped.get(k) != files(repo).get(k)
    }
    assert changed == {f"{PROD}/canary.yaml"}
    cluster.sync(repo / PROD)
    assert cluster.served(MODEL) == {V1: 100}
    assert ("InferenceService", f"{MODEL}-green") not in cluster.live, "pruned"


def test_bad_input_and_commands_that_would_break_blue_green_change_nothing(repo):
    with pytest.raises(GitOpsError, match="runs no blue/green"):
        bg.switch_edits(repo, MODEL, "production", "green")
    g.apply(bg.release_edits(repo, MODEL, "production", V2, "2", image("1.1.0")))
    before = files(repo)
    cases = [
        (lambda: bg.switch_edits(repo, MODEL, "production", "purple"), "unknown colour"),
        (lambda: bg.switch_edits(repo, MODEL, "production", "blue"), "blue is live"),
        (lambda: bg.switch_edits(repo, MODEL, "prod", "green"), "unknown environment"),
        (lambda: bg.switch_edits(repo, "other", "production", "green"), "unknown model"),
        (
            lambda: bg.release_edits(repo, MODEL, "production", V3, "3", image("1.1.0")),
            "disagree",
        ),
        (
            lambda: bg.release_edits(repo, MODEL, "production", V3, "3", f"{REPO}:{MODEL}-v1.2.0"),
            "pins images by digest",
        ),
        (
            lambda: g.promote_edits(repo, MODEL, "staging", "production"),
            "runs blue/green \\(blue is live\\): a promotion",
        ),
        (lambda: g.canary_edits(repo, MODEL, "production", 10), "a canary share"),
        (lambda: g.rollback_edits(repo, MODEL, "production"), "switch back"),
        (lambda: g.ab_edits(repo, MODEL, "production", "current=50,candidate=50"), "A/B"),
    ]

    bad = subprocess.run(
        [str(ROOT / "scripts/bluegreen.sh"), MODEL, "purple", "--local", "-f", "x.yaml"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown colour purple" in bad.stderr
    for call, message in cases:
        with pytest.raises(GitOpsError, match=message):
            call()
    assert files(repo) == before
    g.apply(bg.switch_edits(repo, MODEL, "production", "green"))
    before = files(repo)
    with pytest.raises(GitOpsError, match="green is live in production: blue/green ends on blue"):
        bg.off_edits(repo, MODEL, "production")
    assert files(repo) == before
