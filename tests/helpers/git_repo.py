"""A throwaway git repository for tests of the commands that commit on branches."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; its standard output, stripped (fails the test on an error)."""
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def init_repo(repo: Path, files: dict[str, str]) -> Path:
    """A new repository at ``repo`` on ``main`` with ``files`` (path: text) committed."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "start")
    return repo
