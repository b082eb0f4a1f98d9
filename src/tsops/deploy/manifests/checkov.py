"""checkov over every render and the serving image's Dockerfile, in one run; and the
form of a checkov skip: ``checkov.io/skipN: CKV_ID=reason`` annotations only."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from tsops.deploy.manifests.report import Finding, ManifestError
from tsops.deploy.manifests.resources import annotations_of, resource_id
from tsops.deploy.manifests.sources import SourceIndex

# checkov pins cachetools<6 while mlflow needs 7: it cannot share the project's
# environment, so it runs as a uv tool at this version unless one is on PATH.
CHECKOV_VERSION = "3.3.30"
CHECKOV_ENV = "TSOPS_CHECKOV"  # named in messages; tsops.core.settings reads it


def check_checkov_skips(doc: dict, where: str = "") -> list[Finding]:
    """checkov skips say which check and why: ``checkov.io/skipN: CKV_ID=reason``."""
    where = where or resource_id(doc)
    findings = []
    for key, value in annotations_of(doc).items():
        if not key.startswith("checkov.io/skip"):
            continue
        check, sep, reason = str(value).partition("=")
        if (
            not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check.strip())
            or not sep
            or len(reason.strip()) < 10
        ):
            findings.append(
                Finding(
                    "checkov",
                    where,
                    f"annotation {key}: {value!r} does not name a check and a reason",
                    f"write {key}: CKV_K8S_<n>=<why the check does not apply here>",
                )
            )
    return findings


def checkov_command(configured: str | None = None) -> list[str]:
    """How to run checkov: ``configured`` (the shell words of $TSOPS_CHECKOV), a checkov
    on PATH or next to this Python, or ``uv tool run`` of the pinned version (uv ships
    with the project's environment)."""
    if configured:
        return shlex.split(configured)
    here = Path(sys.executable).parent
    found = shutil.which("checkov") or (
        str(here / "checkov") if (here / "checkov").exists() else None
    )
    if found:
        return [found]
    uv = shutil.which("uv") or (str(here / "uv") if (here / "uv").exists() else None)
    if uv:
        return [uv, "tool", "run", "--quiet", "--from", f"checkov=={CHECKOV_VERSION}", "checkov"]
    raise ManifestError(
        f"checkov not found: install it apart from the project (`uv tool install "
        f"checkov=={CHECKOV_VERSION}`; its dependencies conflict with mlflow's), set "
        f"{CHECKOV_ENV} to its command, or skip it with --no-checkov"
    )


def parse_checkov(output: str, origin: Callable[[str, str], str]) -> list[Finding]:
    """Failed checks of checkov's JSON report; ``origin(file, resource)`` says where."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError as e:
        raise ManifestError(f"checkov printed no JSON report: {output[:500]!r}") from e
    reports = data if isinstance(data, list) else [data]
    findings = []
    for report in reports:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            check_id = failed.get("check_id")
            findings.append(
                Finding(
                    "checkov",
                    origin(failed.get("file_path", ""), failed.get("resource", "")),
                    f"{check_id} {failed.get('check_name')}",
                    "fix the resource"
                    + (f" (see {failed['guideline']})" if failed.get("guideline") else "")
                    + f", or, if it does not apply, annotate it with checkov.io/skip1: "
                    f"{check_id}=<reason>",
                )
            )
    return findings


def run_checkov(
    renders: dict[str, list[dict]],
    index: SourceIndex | None = None,
    dockerfile: Path | None = None,
    command: str | None = None,
) -> list[Finding]:
    """checkov's Kubernetes checks over every render, and its Dockerfile checks over the
    serving image's ``dockerfile`` (a base pinned by digest, a non-root user, a
    HEALTHCHECK), in one run. ``command`` runs checkov (see :func:`checkov_command`)."""
    with tempfile.TemporaryDirectory(prefix="tsops-checkov-") as tmp:
        files = {}
        for i, (label, docs) in enumerate(renders.items()):
            name = f"{i:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', label).strip('-')}.yaml"
            (Path(tmp) / name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
            files[name] = label
        frameworks = ["kubernetes"]
        if dockerfile is not None and Path(dockerfile).exists():
            shutil.copy(dockerfile, Path(tmp) / "Dockerfile")
            files["Dockerfile"] = "Dockerfile"
            frameworks.append("dockerfile")
        argv = [
            *checkov_command(command),
            "--directory",
            tmp,
            "--framework",
            *frameworks,
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ]
        # checkov inherits the environment (PATH, proxies), quieter
        env = {**os.environ, "ANSI_COLORS_DISABLED": "1", "LOG_LEVEL": "ERROR"}
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        except FileNotFoundError as e:
            raise ManifestError(f"cannot run checkov ({argv[0]}): {e}") from e
        if result.returncode not in (0, 1):
            raise ManifestError(
                f"checkov failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}"
            )

        def origin(file_path: str, resource: str) -> str:
            label = files.get(Path(file_path).name, file_path)
            if label == "Dockerfile":
                return f"Dockerfile: {resource}"
            kind, _, rest = resource.partition(".")
            name = rest.rsplit(".", 1)[-1] if rest else ""
            where = f"{label}: {kind}/{name}"
            if index:
                where += f" ({index({'kind': kind, 'metadata': {'name': name}}, label)})"
            return where

        if not result.stdout.strip():
            return []
        return parse_checkov(result.stdout, origin)
