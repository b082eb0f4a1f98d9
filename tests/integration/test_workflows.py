"""The GitHub workflows in .github/workflows, held to the rules the project promises.

Least privilege (top-level ``permissions: {}``, every job its own, write access only in
jobs that run no project code), every action pinned to a commit, no ``${{ }}`` expansion
inside a shell script, a concurrency group everywhere, and every command a ``make``
target or a ``tsops``/``dvc`` command that exists here (checked with ``--help``), from a
small allow-list of glue. zizmor (auditor persona, offline) and GitHub's workflow schema
run on them too, each from PyPI through ``uv tool run``, apart from the project's lock.
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

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent

# Pinned tool versions; ci.yml runs the same zizmor.
ZIZMOR = "zizmor==1.32.0"
CHECK_JSONSCHEMA = "check-jsonschema==0.39.0"

EXPECTED = {"ci", "train", "release", "promote", "monitor"}

# What a `run:` script may call. The project's own entry points, and GitHub's and
# Sigstore's CLIs on the runner:
PROJECT = {"make", "tsops", "dvc"}
PLATFORM = {"gh", "cosign", "docker"}
# ...and a little glue, each held to one use below:
#   echo  writes the files GitHub reads (step outputs, PATH) and the training report's
#         markdown around the tsops/dvc output; it must redirect into a file.
#   curl  fetches the KServe and Argo CD CRDs that `tsops manifests validate` needs, from
#         raw.githubusercontent.com at a 40-hex commit, over https only.
#   git   commits the overlay change a tsops command made and pushes its branch, for
#         `gh pr create` (switch, add, commit, push only).
#   uv    `uv tool run` of the pinned zizmor, as this file runs it.
#   jq    only inside `$(...)`, to read the registry version out of release.json.
GLUE = {"echo", "curl", "git", "uv"}
GIT_SUBCOMMANDS = {"switch", "add", "commit", "push"}

SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
CRD_URL = re.compile(
    r"^https://raw\.githubusercontent\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[0-9a-f]{40}/\S+\.yaml$"
)
CRD_FILES = {
    "serving.kserve.io_inferenceservices.yaml",
    "serving.kserve.io_inferencegraphs.yaml",
    "application-crd.yaml",
    "applicationset-crd.yaml",
    "appproject-crd.yaml",
}
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


def test_the_five_workflows_are_there():
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


def test_jobs_that_can_write_run_no_project_code():
    # A token that can push or comment never sits beside the project's dependencies or
    # a pull request's code: those jobs only move what an earlier, read-only job made.
    for wf, name, job in jobs():
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        if writes & {"contents", "pull-requests"}:
            ran = {words[0] for _, words in commands(job)}
            assert not ran & (PROJECT | {"uv"}), (
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
    allowed = PROJECT | PLATFORM | GLUE
    for where, words in commands():
        assert words[0] in allowed, (
            f"{where}: `{words[0]}` is not allowed in a workflow: call a make target or a "
            "tsops command (one the tests run) or extend the allow-list with a reason"
        )


def test_glue_is_used_only_for_its_purpose():
    for where, words in by_program("echo"):
        assert ">" in words or ">>" in words, f"{where}: echo only writes into a file"
    for where, words in by_program("curl"):
        urls = [w for w in words if w.startswith("http")]
        assert len(urls) == 1 and CRD_URL.match(urls[0]), (
            f"{where}: curl fetches a CRD from raw.githubusercontent.com at a commit SHA"
        )
        assert "--proto" in words and "=https" in words, f"{where}: curl --proto =https"
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
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [str(BIN / program), *path, "--help"], capture_output=True, text=True, env=env
    )
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


def test_every_crd_fetch_takes_the_same_pinned_files():
    fetched: dict[str, set[str]] = {}
    for where, words in by_program("curl"):
        url = next(w for w in words if w.startswith("https://"))
        fetched.setdefault(where.split(":")[0], set()).add(url)
    assert fetched, "no workflow fetches the CRDs"
    first = next(iter(fetched.values()))
    assert {url.rsplit("/", 1)[1] for url in first} == CRD_FILES
    for where, urls in fetched.items():
        assert urls == first, f"{where}: fetches other CRDs than the other jobs"


def test_validation_follows_every_crd_fetch():
    for wf, name, job in jobs():
        scripts = [s.get("run", "") for s in job["steps"]]
        if any(s.startswith("curl") for s in scripts):
            assert any(s.startswith(("tsops manifests validate", "make test")) for s in scripts), (
                f"{wf}.yml job {name}: fetches the CRDs and validates nothing with them"
            )


def test_train_fails_its_check_when_the_gate_fails():
    train = workflows()["train"]["jobs"]["train"]["steps"]
    gate = next(s for s in train if s.get("id") == "gate")
    assert "tsops gate" in gate["run"] and gate.get("continue-on-error") is True
    assert train[-1].get("if") == "steps.gate.outcome == 'failure'"
    assert train[-1]["run"].startswith("tsops gate")


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
