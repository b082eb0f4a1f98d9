"""What the serving image installs: tsops's runtime dependencies less the pipeline-only ones.

Used by the Dockerfile's builder stage:

    python serving-requirements.py list pyproject.toml dvc evidently   > runtime.in
    python serving-requirements.py check dvc evidently

``list`` prints ``[project].dependencies`` (never the dev extras) without the excluded
distributions; pip then installs them with requirements.lock as constraints, so each
gets the locked version and so do their dependencies. The excluded ones serve the
training pipeline (DVC, drift reports, dataset download) and pull in hundreds of MB
(plotly, celery, pygit2, ...) that the model server never imports.

``check`` runs ``pip check`` and fails on any problem except "tsops requires <excluded>".
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise SystemExit(f"error: cannot read a name in requirement {requirement!r}")
    return canonical(match[1])


def list_requirements(pyproject: str, excluded: set[str]) -> None:
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    names = {requirement_name(r) for r in dependencies}
    unknown = excluded - names
    if unknown:  # a typo would silently exclude nothing
        raise SystemExit(f"error: {sorted(unknown)} are not dependencies in {pyproject}")
    for requirement in dependencies:
        if requirement_name(requirement) not in excluded:
            print(requirement)


def check(excluded: set[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    problems = []
    for line in result.stdout.splitlines():
        match = re.match(r"tsops \S+ requires ([^,]+), which is not installed", line)
        if match and canonical(match[1]) in excluded:
            continue
        if line.strip() and line.strip() != "No broken requirements found.":
            problems.append(line)
    if problems or (result.returncode != 0 and not result.stdout.strip()):
        raise SystemExit("pip check:\n" + "\n".join(problems or [result.stderr]))
    left_out = f" (left out on purpose: {', '.join(sorted(excluded))})" if excluded else ""
    print(f"pip check: consistent{left_out}")


def main() -> None:
    command, *rest = sys.argv[1:]
    if command == "list":
        list_requirements(rest[0], {canonical(n) for n in rest[1:]})
    elif command == "check":
        check({canonical(n) for n in rest})
    else:
        raise SystemExit(f"usage: {sys.argv[0]} list PYPROJECT [EXCLUDED...] | check [EXCLUDED...]")


if __name__ == "__main__":
    main()
