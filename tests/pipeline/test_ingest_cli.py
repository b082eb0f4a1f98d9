"""`tsops ingest` / `tsops validate` on bad CSV files.

Each must exit non-zero, name the series and the problem, and write nothing.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run

pytestmark = pytest.mark.integration


def _good_csv() -> pd.DataFrame:
    months = pd.date_range("2016-01-01", periods=40, freq="MS")
    frames = [
        pd.DataFrame(
            {
                "store": sid,
                "month": months.strftime("%Y-%m-%d"),
                "sales": [str(100 + i + k) for k in range(40)],
            }
        )
        for i, sid in enumerate(["north", "south"])
    ]
    return pd.concat(frames, ignore_index=True)


def _ingest(repo, csv, extra=()):
    return run(
        [
            "tsops",
            "ingest",
            "tiny",
            "--file",
            str(csv),
            "--id-col",
            "store",
            "--time-col",
            "month",
            "--target-col",
            "sales",
            *extra,
        ],
        repo,
        check=False,
    )


def _corrupt(kind: str) -> pd.DataFrame:
    df = _good_csv()
    south = df.index[df.store == "south"]
    if kind == "duplicate":
        return pd.concat([df, df.loc[[south[5]]]], ignore_index=True)
    if kind == "gap":
        return df.drop(index=south[10])
    if kind == "text":
        df.loc[south[3], "sales"] = "twelve"
        return df
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "words"),
    [("duplicate", "duplicate"), ("gap", "missing"), ("text", "twelve")],
)
def test_bad_csv_fails_naming_series_and_problem(repo_copy, kind, words):
    good = repo_copy / "good.csv"
    _good_csv().to_csv(good, index=False)
    ok = _ingest(repo_copy, good)
    assert ok.returncode == 0, ok.stderr
    data = repo_copy / "data/tiny/series.parquet"
    before = data.read_bytes()

    bad = repo_copy / f"{kind}.csv"
    _corrupt(kind).to_csv(bad, index=False)
    result = _ingest(repo_copy, bad)
    assert result.returncode != 0
    assert "south" in result.stderr and words in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert data.read_bytes() == before, "data/ changed although validation failed"
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")], "temp file left"

    if kind == "gap":
        filled = _ingest(repo_copy, bad, ["--fill", "interpolate"])
        assert filled.returncode == 0, filled.stderr


def test_validate_command_rejects_bad_data_file(repo_copy):
    bad = repo_copy / "dup.parquet"
    df = _corrupt("duplicate").rename(columns={"store": "unique_id", "month": "ds", "sales": "y"})
    df.to_parquet(bad)
    result = run(["tsops", "validate", "tiny", "--data", str(bad)], repo_copy, check=False)
    assert result.returncode != 0
    assert "south" in result.stderr
    assert not (repo_copy / "artifacts/tiny/validation.json").exists()
