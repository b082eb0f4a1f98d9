"""``source: kind: sql`` on a real PostgreSQL: incremental ingest from the watermark,
late corrections reported and accepted, bad input, a database that is down (on the
servers of ``tsops platform up``, whose test this is too), ``tsops platform
load-series`` and monitor's actuals from the same table."""

from __future__ import annotations

import shlex
import threading
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import redis
from typer.testing import CliRunner

from tests.helpers.services import run_owner
from tests.helpers.tiny import TINY_MODEL
from tsops.cli import app
from tsops.core.config import ConfigError, parse_model_config
from tsops.pipeline.validate import ValidationError
from tsops.platform import database, sql_source
from tsops.platform.services import postgres_in
from tsops.platform.sql_source import SqlSourceError

pytestmark = pytest.mark.integration

URL_ENV = "TSOPS_SERIES_DATABASE_URL"
SQL_SOURCE = """\
source:
  kind: sql
  table: sales
  id_col: store
  time_col: month
  target_col: units
"""


def model_yaml(source: str = SQL_SOURCE, fill: str = "none") -> str:
    head, rest = TINY_MODEL.split("source:\n", 1)
    rest = rest.split("freq:", 1)[1]
    return (head + source + "freq:" + rest).replace("fill: none", f"fill: {fill}")


def config(source: str = SQL_SOURCE, fill: str = "none"):
    return parse_model_config(model_yaml(source, fill))


def fill_table(url: str, months: int = 24, stores: tuple[str, ...] = ("a", "b", "c")) -> None:
    with psycopg.connect(sql_source.conninfo(url), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS sales (store text, month date, units double precision)"
        )
        add_rows(connection, stores, pd.date_range("2020-01-01", periods=months, freq="MS"))


def add_rows(connection: psycopg.Connection, stores, months) -> None:
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sales VALUES (%s, %s, %s)",
            [
                (store, month.date(), float(10 * i + m + 1))
                for i, store in enumerate(stores)
                for m, month in enumerate(months, start=months[0].month)
            ],
        )


def execute(url: str, statement: str) -> None:
    with psycopg.connect(sql_source.conninfo(url), autocommit=True) as connection:
        connection.execute(statement)


def test_ingest_reads_only_new_periods_and_equals_a_full_read(
    postgres_url: str, tmp_path: Path
) -> None:
    fill_table(postgres_url, months=24)
    step = tmp_path / "step" / "series.parquet"
    frame, notes = sql_source.ingest(config(), step, url=postgres_url)
    assert (len(frame), notes) == (72, [])
    with psycopg.connect(sql_source.conninfo(postgres_url), autocommit=True) as connection:
        # two new months for every store, and a new store with its whole history
        add_rows(connection, ("a", "b", "c"), pd.date_range("2022-01-01", periods=2, freq="MS"))
        add_rows(connection, ("d",), pd.date_range("2020-01-01", periods=26, freq="MS"))
    frame, notes = sql_source.ingest(config(), step, url=postgres_url)
    assert len(frame) == 4 * 26 and notes == []
    assert frame.groupby("unique_id")["ds"].max().eq(pd.Timestamp("2022-02-01")).all()

    whole = tmp_path / "whole" / "series.parquet"
    sql_source.ingest(config(), whole, url=postgres_url)
    assert step.read_bytes() == whole.read_bytes()  # same input, same bytes
    # a query instead of the table (a % in it means itself)
    query = SQL_SOURCE.replace("table: sales", "query: SELECT * FROM sales WHERE store LIKE '%'")
    by_query = tmp_path / "query" / "series.parquet"
    sql_source.ingest(config(query), by_query, url=postgres_url)
    assert by_query.read_bytes() == whole.read_bytes()

    before = step.read_bytes()
    _, notes = sql_source.ingest(config(), step, url=postgres_url)
    assert step.read_bytes() == before
    assert notes == ["no new periods after the last ingested ones"]


def test_a_late_correction_is_reported_kept_out_and_accepted_on_request(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_table(postgres_url, months=24)
    target = tmp_path / "series.parquet"
    sql_source.ingest(config(), target, url=postgres_url)
    before = target.read_bytes()
    execute(postgres_url, "UPDATE sales SET units = 999 WHERE store = 'b' AND month = '2020-03-01'")

    _, notes = sql_source.ingest(config(), target, url=postgres_url)
    assert len(notes) == 2, notes
    assert "late corrections: 1 period(s) of 1 series" in notes[0]
    assert "b 2020-03-01: 14 -> 999" in notes[0]
    assert "tsops ingest tiny --accept-corrections" in notes[0]
    assert target.read_bytes() == before  # kept the ingested value
    _, again = sql_source.ingest(config(), target, url=postgres_url)
    assert "late corrections" in again[0]  # reported until accepted, not dropped

    with psycopg.connect(sql_source.conninfo(postgres_url), autocommit=True) as connection:
        add_rows(connection, ("a", "b", "c"), pd.date_range("2022-01-01", periods=1, freq="MS"))
    frame, notes = sql_source.ingest(config(), target, url=postgres_url, accept_corrections=True)
    assert "accepted late corrections of 1 period(s) in 1 series (b)" in notes[0]
    value = frame.loc[(frame.unique_id == "b") & (frame.ds == "2020-03-01"), "y"]
    assert value.item() == 999
    whole = tmp_path / "whole.parquet"
    sql_source.ingest(config(), whole, url=postgres_url)
    assert target.read_bytes() == whole.read_bytes()  # as if read in one go
    _, notes = sql_source.ingest(config(), target, url=postgres_url)
    assert notes == ["no new periods after the last ingested ones"]

    # the same through the command line, with the URL from the environment
    root = tmp_path / "repo"
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "model.yaml").write_text(model_yaml())
    monkeypatch.setenv(URL_ENV, postgres_url)
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", "tiny", "--root", str(root)])
    assert first.exit_code == 0, first.output
    execute(postgres_url, "UPDATE sales SET units = 5 WHERE store = 'c' AND month = '2020-01-01'")
    reported = runner.invoke(app, ["ingest", "tiny", "--root", str(root)])
    assert reported.exit_code == 0 and "c 2020-01-01: 22 -> 5" in reported.output
    accepted = runner.invoke(app, ["ingest", "tiny", "--root", str(root), "--accept-corrections"])
    assert accepted.exit_code == 0 and "accepted late corrections" in accepted.output


def test_filled_periods_are_not_taken_for_deleted_rows(postgres_url: str, tmp_path: Path) -> None:
    fill_table(postgres_url, months=24)
    execute(postgres_url, "DELETE FROM sales WHERE store = 'a' AND month = '2020-05-01'")
    target = tmp_path / "series.parquet"
    frame, _ = sql_source.ingest(config(fill="zero"), target, url=postgres_url)
    assert len(frame) == 72
    assert '"a": [\n  "2020-05-01T00:00:00"' in target.with_name("series.filled.json").read_text()
    _, notes = sql_source.ingest(config(fill="zero"), target, url=postgres_url)
    assert notes == ["no new periods after the last ingested ones"]
    # a gap right after the watermark is filled as in a read of the whole table
    with psycopg.connect(sql_source.conninfo(postgres_url), autocommit=True) as connection:
        add_rows(connection, ("a", "b", "c"), pd.date_range("2022-02-01", periods=1, freq="MS"))
    frame, notes = sql_source.ingest(config(fill="zero"), target, url=postgres_url)
    assert len(frame) == 78 and notes == []
    whole = tmp_path / "whole" / "series.parquet"
    sql_source.ingest(config(fill="zero"), whole, url=postgres_url)
    assert target.read_bytes() == whole.read_bytes()
    filled = target.with_name("series.filled.json").read_text()
    assert filled == whole.with_name("series.filled.json").read_text()
    assert '"2022-01-01T00:00:00"' in filled


def test_bad_sources_say_what_to_fix_and_write_nothing(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "series.parquet"
    monkeypatch.delenv(URL_ENV, raising=False)
    with pytest.raises(SqlSourceError, match=f"{URL_ENV}, which is not set: export"):
        sql_source.ingest(config(), target)
    with pytest.raises(SqlSourceError, match=r"no table 'sales' .*it has no tables"):
        sql_source.ingest(config(), target, url=postgres_url)
    execute(postgres_url, "CREATE TABLE sales (store text, month date, units float8)")
    with pytest.raises(SqlSourceError, match="returned no rows: fill the table"):
        sql_source.ingest(config(), target, url=postgres_url)
    wrong_column = SQL_SOURCE.replace("target_col: units", "target_col: qty")
    with pytest.raises(SqlSourceError, match=r"no column 'qty' .*columns: store, month, units"):
        sql_source.ingest(config(wrong_column), target, url=postgres_url)
    with pytest.raises(SqlSourceError, match="the source query fails"):
        sql_source.ingest(
            config(SQL_SOURCE.replace("table: sales", "query: SELEC")), target, url=postgres_url
        )
    with pytest.raises(SqlSourceError, match="does not exist; fix the user, password"):
        sql_source.ingest(config(), target, url=postgres_url.rsplit("/", 1)[0] + "/nowhere")
    with pytest.raises(ConfigError, match=r"keep the URL, and its password, out of model.yaml"):
        config(SQL_SOURCE + "  url_env: postgresql://me:secret@db/x\n")

    fill_table(postgres_url, months=24)
    sql_source.ingest(config(), target, url=postgres_url)
    before = target.read_bytes()
    # out of order is fine (rows are sorted); the same period twice is not, new or old
    execute(postgres_url, "INSERT INTO sales VALUES ('a', '2022-02-01', 1), ('a', '2022-01-01', 2)")
    frame, _ = sql_source.ingest(config(), target, url=postgres_url)
    assert frame.loc[frame.unique_id == "a", "y"].tail(2).tolist() == [2.0, 1.0]
    before = target.read_bytes()
    execute(postgres_url, "INSERT INTO sales VALUES ('a', '2022-03-01', 3), ('a', '2022-03-01', 4)")
    with pytest.raises(ValidationError, match="duplicate"):
        sql_source.ingest(config(), target, url=postgres_url)
    assert target.read_bytes() == before
    execute(postgres_url, "DELETE FROM sales WHERE month = '2022-03-01'")
    execute(postgres_url, "INSERT INTO sales VALUES ('a', '2022-02-01', 5)")
    with pytest.raises(SqlSourceError, match="more than one row for series a at 2022-02-01"):
        sql_source.ingest(config(), target, url=postgres_url)
    assert target.read_bytes() == before


def test_other_column_types_integer_ids_zoned_times_text_values(
    postgres_url: str, tmp_path: Path
) -> None:
    execute(
        postgres_url,
        "CREATE TABLE sales (store int, month timestamptz, units text); "
        "INSERT INTO sales SELECT s, make_timestamptz(2020, m, 1, 0, 0, 0, 'UTC'), "
        "(s * 10 + m)::text FROM generate_series(1, 3) s, generate_series(1, 12) m",
    )
    target = tmp_path / "series.parquet"
    frame, _ = sql_source.ingest(config(), target, url=postgres_url)
    assert frame["unique_id"].tolist()[:2] == ["1", "1"] and frame["ds"].dt.tz is None
    before = target.read_bytes()
    new_month = "'2021-01-01 00:00+00'"
    execute(
        postgres_url,
        f"INSERT INTO sales VALUES (1, {new_month}, '5'), (2, {new_month}, 'x'), "
        f"(3, {new_month}, '1')",
    )
    with pytest.raises(ValidationError, match=r"'units' value\(s\) are not numbers.*'x'"):
        sql_source.ingest(config(), target, url=postgres_url)
    assert target.read_bytes() == before
    execute(postgres_url, "UPDATE sales SET units = '7' WHERE units = 'x'")
    frame, notes = sql_source.ingest(config(), target, url=postgres_url)
    assert len(frame) == 39 and notes == []


def test_platform_up_down_and_an_ingest_that_waits_for_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tsops platform up` writes the environment and `down` stops everything; an ingest
    while the database is down is retried, then refused with exit 69 and nothing
    written; one that finds it back within its retries goes through."""
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
        assert {URL_ENV, "TSOPS_FORECAST_LOG_URL", "TSOPS_FEATURE_STORE_REDIS_URL"} <= set(env), env
        assert redis.Redis.from_url(env["TSOPS_FEATURE_STORE_REDIS_URL"]).ping()
        again = runner.invoke(app, ["platform", "up", "--dir", str(folder)])
        assert again.exit_code == 0, again.output  # running already: kept

        url = env[URL_ENV]
        fill_table(url, months=24)
        root = tmp_path / "repo"
        (root / "models" / "tiny").mkdir(parents=True)
        (root / "models" / "tiny" / "model.yaml").write_text(model_yaml())
        target = root / "data" / "tiny" / "series.parquet"
        monkeypatch.setenv(URL_ENV, url)
        assert runner.invoke(app, ["ingest", "tiny", "--root", str(root)]).exit_code == 0
        before = target.read_bytes()
        execute(url, "INSERT INTO sales VALUES ('a', '2022-01-01', 1), ('b', '2022-01-01', 2), "
                     "('c', '2022-01-01', 3)")  # fmt: skip

        down = runner.invoke(app, ["platform", "down", "--dir", str(folder)])
        assert down.output.strip() == "stopped: Redis, PostgreSQL", down.output
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(env["TSOPS_FEATURE_STORE_REDIS_URL"]).ping()
        monkeypatch.setattr(database, "RETRY_FIRST_WAIT", 0.05)  # the test's time
        monkeypatch.setattr(database, "RETRY_ATTEMPTS", 2)
        refused = runner.invoke(app, ["ingest", "tiny", "--root", str(root)])
        assert refused.exit_code == 69, refused.output
        assert "did not answer after 2 attempts" in refused.output
        assert "nothing was written" in refused.output
        assert target.read_bytes() == before

        # back while the retries wait: the ingest goes through
        monkeypatch.setattr(database, "RETRY_ATTEMPTS", 8)
        restart = threading.Timer(0.1, postgres_in(folder / "postgres").start)
        restart.start()
        try:
            frame, _ = sql_source.ingest(config(), target)
        finally:
            restart.join()
        assert len(frame) == 75
    finally:
        runner.invoke(app, ["platform", "down", "--dir", str(folder)])
        # its data may live outside tmp_path: deleted once the run is over (~1.5 s of
        # deleting files that no test waits for)
        postgres_in(folder / "postgres").remove_when_gone(run_owner())


def test_monitor_reads_actuals_from_the_table(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tsops.monitor.inputs import read_actuals

    fill_table(postgres_url, months=3, stores=("a", "b"))
    monkeypatch.setenv(URL_ENV, postgres_url)
    actuals = read_actuals(tmp_path, config())
    assert list(actuals.columns) == ["unique_id", "ds", "y"]
    assert len(actuals) == 6 and actuals["ds"].max() == pd.Timestamp("2020-03-01")


def test_load_series_makes_the_layout_and_updates_corrected_periods(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = pd.DataFrame(
        {
            "unique_id": ["a", "a", "b"],
            "ds": pd.to_datetime(["2020-01-01", "2020-02-01", "2020-01-01"]),
            "y": [1.0, 2.0, 3.0],
        }
    )
    file = tmp_path / "series.parquet"
    frame.to_parquet(file)
    monkeypatch.setenv(URL_ENV, postgres_url)
    runner = CliRunner()
    loaded = runner.invoke(app, ["platform", "load-series", str(file)])
    assert loaded.exit_code == 0, loaded.output
    assert "3 rows from" in loaded.output
    frame.loc[1, "y"] = 20.0
    frame.to_parquet(file)
    assert runner.invoke(app, ["platform", "load-series", str(file)]).exit_code == 0
    with psycopg.connect(sql_source.conninfo(postgres_url)) as connection:
        rows = connection.execute("SELECT unique_id, y FROM series ORDER BY 1, ds").fetchall()
        indexes = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'series' ORDER BY 1"
        ).fetchall()
    assert rows == [("a", 1.0), ("a", 20.0), ("b", 3.0)]  # updated in place, not repeated
    assert [i[0].split(" USING ")[1] for i in indexes] == ["btree (ds)", "btree (unique_id, ds)"]
    timescale = runner.invoke(app, ["platform", "load-series", str(file), "--timescale"])
    assert timescale.exit_code == 1 and "TimescaleDB is not installed" in timescale.output
