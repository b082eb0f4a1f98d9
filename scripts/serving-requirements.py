"""What the serving image installs: tsops's runtime dependencies less the pipeline-only ones.

Used by the Dockerfile's deps and builder stages:

    python serving-requirements.py pins pyproject.toml requirements.lock dvc > serving.txt
    pip install --require-hashes -r serving.txt
    python serving-requirements.py check dvc

``pins`` copies from requirements.lock (made by ``make lock`` with ``--generate-hashes``)
the entries, version and ``--hash`` lines as they are, of ``[project].dependencies``
(never the dev extras) without the excluded distributions, and of everything they need:
the closure over the lock's ``# via`` annotations, uv's record of which locked package
requires which. pip's hash-checking mode then installs exactly those files and fails if
one of them needs a distribution that is not in the list, so a wrong closure cannot
slip through. The excluded ones serve the training pipeline (DVC) and pull in hundreds
of MB (celery, pygit2, ray, ...) that no container of the image imports; a package that
only they need stays out.

``list`` prints the kept ``[project].dependencies`` themselves (the requirement strings).

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


def read_lock(lock: str) -> dict[str, tuple[list[str], set[str]]]:
    """requirements.lock as {name: (its lines, the names in its ``# via`` comments)}.

    An entry is a pin line (``name==version``, continued by ``\\`` onto ``--hash``
    lines) followed by ``# via PARENT`` or ``# via`` and one ``#   PARENT`` per line.
    """
    entries: dict[str, tuple[list[str], set[str]]] = {}
    current: tuple[list[str], set[str]] | None = None
    in_via = False
    with open(lock, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            stripped = line.strip()
            if not line.startswith((" ", "#")) and stripped:  # a pin: name==version [\]
                if "==" not in stripped.split()[0]:
                    raise SystemExit(f"error: {lock}: not a pinned requirement: {line!r}")
                current = ([line], set())
                entries[requirement_name(stripped)] = current
                in_via = False
            elif current is None or not stripped:
                continue
            elif stripped.startswith("--hash="):
                current[0].append(line)
            elif stripped.startswith("# via"):
                parent = stripped.removeprefix("# via").strip()
                if parent:
                    current[1].add(parent)
                in_via = not parent
            elif in_via and stripped.startswith("#   "):
                current[1].add(stripped.removeprefix("#").strip())
            else:
                in_via = False
    return entries


def pins(pyproject: str, lock: str, excluded: set[str]) -> None:
    """The lock's entries (hashes included) of the kept dependencies and their closure."""
    with open(pyproject, "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    names = {requirement_name(r) for r in dependencies}
    unknown = excluded - names
    if unknown:
        raise SystemExit(f"error: {sorted(unknown)} are not dependencies in {pyproject}")
    entries = read_lock(lock)
    wanted = names - excluded
    missing = wanted - entries.keys()
    if missing:
        raise SystemExit(f"error: {sorted(missing)} are not pinned in {lock}: run make lock")
    unhashed = sorted(n for n, (lines, _) in entries.items() if len(lines) < 2)
    if unhashed:
        raise SystemExit(
            f"error: {lock} has no --hash for {unhashed[:5]}...: run make lock "
            "(uv pip compile --generate-hashes)"
        )
    # A via names a locked package ("mlflow", "dask[distributed]" is recorded as "dask")
    # or the project itself ("tsops (pyproject.toml)"): only the wanted roots count there.
    keep = set(wanted)
    changed = True
    while changed:
        changed = False
        for name, (_, parents) in entries.items():
            if name not in keep and any(
                requirement_name(p) in keep for p in parents if not p.endswith("(pyproject.toml)")
            ):
                keep.add(name)
                changed = True
    print(f"# {len(keep)} of the {len(entries)} pins of {lock} (serving-requirements.py pins)")
    for name in sorted(keep):
        print("\n".join(entries[name][0]))


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
    elif command == "pins":
        pins(rest[0], rest[1], {canonical(n) for n in rest[2:]})
    elif command == "check":
        check({canonical(n) for n in rest})
    else:
        raise SystemExit(
            f"usage: {sys.argv[0]} list PYPROJECT [EXCLUDED...] | "
            "pins PYPROJECT LOCK [EXCLUDED...] | check [EXCLUDED...]"
        )


if __name__ == "__main__":
    main()
