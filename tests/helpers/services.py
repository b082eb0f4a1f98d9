"""Real PostgreSQL and Redis servers for the tests, one of each per test run.

- ``postgres_server`` / ``redis_server`` (session): the run's shared servers, started
  by the first xdist worker that asks (``built_once``) and used by all; the controller
  process stops and deletes them in ``pytest_sessionfinish`` (below). Never stop or
  restart these: other workers' tests are using them.
- ``postgres_url`` (function): a new empty database on the shared server, for this
  test only (SQLAlchemy URL, ``postgresql+psycopg://tsops@127.0.0.1:PORT/NAME``).
- ``redis_url`` (function): a database number of its own on the shared Redis, flushed
  (``redis://127.0.0.1:PORT/N``).
- ``private_postgres`` / ``private_redis`` (function): a server of the test's own, for
  tests that stop, kill or restart it; deleted after the test.

tests/conftest.py registers this module as a plugin (``pytest_plugins``). Every server
also gets a watchdog (``remove_when_gone``) that stops and deletes it when the run's
process exits, so a run killed mid-way leaves no server behind.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers.once import built_once, shared_dir
from tsops.platform.services import (
    PostgresServer,
    RedisServer,
    ServiceError,
    postgres_in,
    redis_in,
    start_postgres,
    start_redis,
)

#: folders (under the run's shared temporary folder) of the shared servers
_POSTGRES = "postgres-server"
_REDIS = "redis-server"
_REDIS_DATABASES = 1024
_counter = itertools.count()


def run_owner() -> int:
    """The process whose end ends the test run: xdist's controller (a worker's parent),
    else this one."""
    return os.getppid() if os.environ.get("PYTEST_XDIST_WORKER") else os.getpid()


def _start_shared_postgres(folder: Path) -> None:
    start_postgres(folder / "server", durable=False).remove_when_gone(run_owner())


def _start_shared_redis(folder: Path) -> None:
    start_redis(folder / "server").remove_when_gone(run_owner())


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> PostgresServer:
    """The run's shared PostgreSQL server (see the module docstring)."""
    folder = built_once(tmp_path_factory, _POSTGRES, _start_shared_postgres)
    return postgres_in(folder / "server")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh empty database on the shared server, for this test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return postgres_server.create_database(f"t_{worker}_{next(_counter)}_{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """The run's shared Redis server (see the module docstring)."""
    folder = built_once(tmp_path_factory, _REDIS, _start_shared_redis)
    return redis_in(folder / "server")


@pytest.fixture
def redis_url(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Redis database number of this test's own on the shared server, empty."""
    import redis

    root = shared_dir(tmp_path_factory)
    counter = root / "redis-databases.txt"
    with FileLock(str(root / "redis-databases.lock")):
        number = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(number + 1))
    url = f"{redis_server.url}/{number % _REDIS_DATABASES}"
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (stop and restart it at will)."""
    server = start_postgres(tmp_path / "private-postgres", durable=False)
    server.remove_when_gone(run_owner())
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own (stop and restart it at will)."""
    server = start_redis(tmp_path / "private-redis")
    server.remove_when_gone(run_owner())
    try:
        yield server
    finally:
        server.remove()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The controller (not an xdist worker) stops and deletes the shared servers once
    every worker is done."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    root = shared_dir(factory)
    for name, find in ((_POSTGRES, postgres_in), (_REDIS, redis_in)):
        if (root / name / "server").exists():
            try:
                find(root / name / "server").remove()
            except ServiceError as exc:  # report, but do not fail the run for it
                print(f"\nwarning: shared test server in {root / name} not stopped: {exc}")
