"""Build a test fixture once per test run, whatever the number of pytest-xdist workers,
and hand out copies of it.

A session-scoped fixture runs once per worker process; ``built_once`` makes the first
worker build and the others wait for it (a file lock in the run's shared temporary
folder) and then use the same folder. Fixtures built this way are templates: tests
read them, or change a ``copy_built`` copy.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def shared_dir(factory: pytest.TempPathFactory) -> Path:
    """A folder every worker of this run sees: the parent of the workers' own base
    folders under xdist (``.../pytest-N/popen-gw0``), the base folder without it."""
    base = factory.getbasetemp()
    return base.parent if base.name.startswith("popen-gw") else base


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` that ``build(folder)`` filled, built by the first worker
    to ask for it in this run; the others wait, then get the same folder."""
    root = shared_dir(factory)
    folder = root / name
    done = root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            if folder.exists():  # a build that failed part-way in this run
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def copy_built(template: Path, dest: Path) -> Path:
    """A copy of ``template`` (a repository, with git and DVC) at ``dest``. An MLflow
    SQLite store in it (``*.db``) stores absolute paths to its artifacts: they are
    moved to the copy's, so the copy never reads or writes the template's files."""
    shutil.copytree(template, dest, symlinks=True)
    for db in dest.glob("*.db"):
        relocate_paths(db, str(template.resolve()), str(dest.resolve()))
    return dest


def relocate_paths(db: Path, old: str, new: str) -> None:
    """Replace the prefix ``old`` by ``new`` in every text column of a SQLite file
    (MLflow's artifact locations, run and model-version sources): the schema is
    MLflow's, so every column is rewritten rather than a list that could go stale."""
    with sqlite3.connect(db) as connection:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            columns = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
            for column in (
                c[1] for c in columns if "CHAR" in c[2].upper() or "TEXT" in c[2].upper()
            ):
                connection.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE instr("{column}", ?) > 0',
                    (old, new, old),
                )


def _create_mlflow_store(folder: Path) -> None:
    from tsops.registry.client import connect

    connect(folder)  # creates and migrates folder/mlflow.db


def empty_mlflow_store(factory: pytest.TempPathFactory, dest: Path) -> Path:
    """An empty MLflow SQLite store at ``dest`` (a file path), copied from one created
    and migrated once per run by tsops' own ``connect`` (the migrations take seconds,
    most of them waiting for the disk); returns ``dest``."""
    template = built_once(factory, "mlflow-template", _create_mlflow_store)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / "mlflow.db", dest)
    relocate_paths(dest, str(template.resolve()), str(dest.parent.resolve()))
    return dest
