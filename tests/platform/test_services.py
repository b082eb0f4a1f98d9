"""The local PostgreSQL and Redis servers: the shared fixtures and a private Redis'
restart. ``tsops platform up/down`` and a PostgreSQL stopped and started again are
tested with an ingest that waits for the database, in test_sql_source.py."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from tsops.platform.services import RedisServer

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
