"""`tsops ingest` / `tsops validate` on bad CSV files.

Each must exit non-zero, name the series and the problem, and write nothing. The real
command line (parsing, error policy, exit code) in this process, on a folder holding
the tiny model: all the commands need.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.commands import tsops
from tests.pipeline.conftest import write_model


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with the tiny model (its data comes from the files the tests write)."""
    return write_model(tmp_path / "repo")


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
    return tsops(
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
        cwd=repo,
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
def test_bad_csv_fails_naming_series_and_problem(root, kind, words):
    good = root / "good.csv"
    _good_csv().to_csv(good, index=False)
    ok = _ingest(root, good)
    assert ok.returncode == 0, ok.stderr
    data = root / "data/tiny/series.parquet"
    before = data.read_bytes()

    bad = root / f"{kind}.csv"
    _corrupt(kind).to_csv(bad, index=False)
    result = _ingest(root, bad)
    assert result.returncode != 0
    assert "south" in result.stderr and words in result.stderr.lower(), result.stderr
    assert "Traceback" not in result.stderr
    assert data.read_bytes() == before, "data/ changed although validation failed"
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")], "temp file left"

    if kind == "gap":
        filled = _ingest(root, bad, ["--fill", "interpolate"])
        assert filled.returncode == 0, filled.stderr


def test_validate_command_rejects_bad_data_file(root):
    bad = root / "dup.parquet"
    df = _corrupt("duplicate").rename(columns={"store": "unique_id", "month": "ds", "sales": "y"})
    df.to_parquet(bad)
    result = tsops("validate", "tiny", "--data", str(bad), cwd=root, check=False)
    assert result.returncode != 0
    assert "south" in result.stderr
    assert not (root / "artifacts/tiny/validation.json").exists()
