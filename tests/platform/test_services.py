"""The local PostgreSQL and Redis servers: the shared fixtures, a private server's
restart, and ``tsops platform up/down`` (a private PostgreSQL's stop and start is in
test_sql_source's database-down test)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from typer.testing import CliRunner

from tsops.cli import app
from tsops.platform.services import RedisServer, postgres_in

pytestmark = pytest.mark.integration


def test_each_test_gets_an_empty_database_of_its_own(postgres_url: str, postgres_server) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            assert connection.execute(sa.text("SELECT current_user")).scalar() == "tsops"
            tables = connection.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar()
            assert tables == 0
        assert postgres_url.startswith(postgres_server.url.rsplit("/", 1)[0])
    finally:
        engine.dispose()


def test_each_test_gets_an_empty_redis_database(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0
        client.set("k", "v")
        assert client.get("k") == b"v"


def test_a_private_redis_restarts_on_its_port(private_redis: RedisServer) -> None:
    client = redis.Redis.from_url(private_redis.url)
    assert client.ping()
    private_redis.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    private_redis.start()
    assert client.ping()


def test_platform_up_writes_the_environment_and_down_stops_everything(tmp_path: Path) -> None:
    folder = tmp_path / ".platform"
    runner = CliRunner()
    up = runner.invoke(app, ["platform", "up", "--dir", str(folder)])
    try:
        assert up.exit_code == 0, up.output
        env = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in (folder / "env").read_text().splitlines()
            if line.startswith("export ")
        )
        for name in ("TSOPS_SERIES_DATABASE_URL", "TSOPS_FORECAST_LOG_URL", "REDIS_URL"):
            assert name in env, env
        engine = sa.create_engine(env["TSOPS_SERIES_DATABASE_URL"])
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
        assert redis.Redis.from_url(env["REDIS_URL"]).ping()
        again = runner.invoke(app, ["platform", "up", "--dir", str(folder)])
        assert again.exit_code == 0, again.output  # running already: says so, keeps them
    finally:
        down = runner.invoke(app, ["platform", "down", "--dir", str(folder)])
        postgres_in(folder / "postgres").remove()  # its data may live outside tmp_path
        assert down.exit_code == 0, down.output
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(env["REDIS_URL"]).ping()
    assert "stopped" in down.output
