"""`tsops init`: a model folder from a data file, that `tsops ingest` and `dvc repro`
take as it is; a bad file gets ingest's own error, and nothing is written.

In this process, on a root holding this repository's params.yaml and dvc.yaml (what
`dvc repro` needs of a model.yaml is that every key its stages list is written out,
checked here against dvc.yaml itself).
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from tests.helpers.commands import ROOT, tsops
from tests.pipeline.conftest import MODEL, write_model
from tsops.core.config import load_model_config
from tsops.core.errors import TsopsError

NAME = "store-sales"


def _sales(months: int = 40, stores=("north", "south", "east")) -> pd.DataFrame:
    """Monthly sales of a few stores, in the user's own column names."""
    dates = pd.date_range("2016-01-01", periods=months, freq="MS").strftime("%Y-%m-%d")
    k = np.arange(months)
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "Store": store,
                    "Month": dates,
                    "Sales": 100 + 10 * i + k + 8 * np.sin(2 * np.pi * k / 12),
                }
            )
            for i, store in enumerate(stores)
        ],
        ignore_index=True,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository root: this repository's params.yaml and dvc.yaml, the tiny model."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return write_model(tmp_path)


def _tracked(dvc_yaml: Path) -> set[str]:
    doc = YAML(typ="safe").load(dvc_yaml.read_text())
    return {
        key
        for stage in doc["stages"].values()
        for entry in stage["do"].get("params", [])
        if isinstance(entry, dict)
        for key in entry.get("models/${item}/model.yaml", [])
    }


def _only_added(before: str, after: str) -> list[str]:
    """The lines ``after`` adds to ``before``; fails if it removes or changes any."""
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    assert not [d for d in diff if d.startswith("- ")], "a line was removed or changed"
    return [d[2:] for d in diff if d.startswith("+ ")]


def test_init_writes_a_model_folder_ingest_and_dvc_take(root: Path) -> None:
    from tsops.pipeline import ingest, validate

    _sales().to_csv(root / "sales.csv", index=False)
    params_before, dvc_before = (root / "params.yaml").read_text(), (root / "dvc.yaml").read_text()
    ran = tsops(
        "init",
        NAME,
        "--file",
        "sales.csv",
        "--id-col",
        "Store",
        "--time-col",
        "Month",
        "--target-col",
        "Sales",
        cwd=root,
    )
    assert "freq MS" in ran.stdout and f"tsops ingest {NAME}" in ran.stdout, ran.stdout

    text = (root / "models" / NAME / "model.yaml").read_text()
    config = load_model_config(root / "models", NAME)
    assert (config.freq, config.season_length) == ("MS", 12)
    # M4's 18 months, shortened so a 40-month series keeps two years to fit on
    assert config.horizon == 16 and "shortened" in text
    assert config.source.model_dump(include={"kind", "path", "id_col"}) == {
        "kind": "file",
        "path": "sales.csv",
        "id_col": "Store",
    }
    assert config.candidates["gbm"].params["lags"] == 36
    assert "# damped trends only" in text and "# inferred" in text  # comments kept
    missing = _tracked(root / "dvc.yaml") - set(YAML(typ="safe").load(text))
    assert not missing, f"dvc repro would stop: model.yaml lacks {missing}"

    assert _only_added(params_before, (root / "params.yaml").read_text()) == [f"  - {NAME}"]
    added = _only_added(dvc_before, (root / "dvc.yaml").read_text())
    assert f"  - artifacts/{NAME}/plots/forecast.png" in added
    assert f"        artifacts/{NAME}/plots/error_by_horizon.csv: [selected, seasonal_naive]" in (
        added
    )

    report = ingest.run(root, NAME)
    assert (report["n_series"], report["n_observations"]) == (3, 120)
    assert validate.run(root, NAME)["valid"]


def test_init_refuses_an_existing_folder_a_bad_name_and_a_broken_dvc_yaml(root: Path) -> None:
    from tsops.pipeline import init

    _sales().rename(columns=str.lower).rename(
        columns={"store": "unique_id", "month": "ds", "sales": "y"}
    ).to_csv(root / "sales.csv", index=False)
    before = _snapshot(root)
    with pytest.raises(init.InitError, match="already exists"):
        init.run(root, MODEL, root / "sales.csv")
    with pytest.raises(init.InitError, match="lower-case letters"):
        init.run(root, "Store_Sales", root / "sales.csv")
    assert _snapshot(root) == before
    (root / "dvc.yaml").write_text("stages: [\n")
    before = _snapshot(root)
    with pytest.raises(init.InitError, match=r"dvc\.yaml is not valid YAML"):
        init.run(root, NAME, root / "sales.csv")
    assert _snapshot(root) == before


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


BAD_FILES = {
    "empty CSV": ("empty.csv", b""),
    "Latin-1 CSV": ("latin.csv", "Store,Month,Sales\nmünchen,2020-01-01,1\n".encode("latin-1")),
    "not Parquet": ("sales.parquet", b"Store,Month,Sales\n"),
    "binary junk": ("junk.csv", bytes(range(256))),
    "missing column": ("cols.csv", b"Store,Month\nnorth,2020-01-01\n"),
}


def _duplicated() -> bytes:
    df = _sales()
    return pd.concat([df, df.iloc[[45]]]).to_csv(index=False).encode()


def _text_in_sales() -> bytes:
    df = _sales()
    df.loc[50, "Sales"] = "twelve"
    return df.to_csv(index=False).encode()


@pytest.mark.parametrize("case", [*BAD_FILES, "duplicate row", "text for a number"])
def test_a_bad_file_gets_ingests_error_and_nothing_is_written(root: Path, case: str) -> None:
    """The very error `tsops ingest` gives for that file, word for word."""
    from tsops.pipeline import ingest, init

    name, content = BAD_FILES.get(case) or (
        f"{case.replace(' ', '-')}.csv",
        _duplicated() if case == "duplicate row" else _text_in_sales(),
    )
    path = root / name
    path.write_bytes(content)
    columns = {"id_col": "Store", "time_col": "Month", "target_col": "Sales"}
    with pytest.raises(TsopsError) as from_ingest:
        ingest.run(root, MODEL, source_path=path, **columns, out=root / "out.parquet")
    before = _snapshot(root)
    with pytest.raises(TsopsError) as from_init:
        init.run(root, NAME, path, **columns)
    assert type(from_init.value) is type(from_ingest.value)
    assert from_init.value.report() == from_ingest.value.report()
    assert _snapshot(root) == before


def test_the_command_exits_1_with_the_error(root: Path) -> None:
    (root / "sales.parquet").write_bytes(b"not parquet at all")
    ran = tsops("init", NAME, "--file", "sales.parquet", cwd=root, check=False)
    assert ran.returncode == 1
    assert ran.stderr.startswith("error: sales.parquet is not a Parquet file"), ran.stderr
    assert not (root / "models" / NAME).exists()


# -------------------------------------------------------------------------- inference


def _panel(freq: str, periods: int, start: str = "2015-01-01", n: int = 2):
    return [pd.date_range(start, periods=periods, freq=freq) for _ in range(n)]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (_panel("MS", 60), ("MS", 12, 18)),
        (_panel("ME", 60), ("ME", 12, 18)),
        (_panel("QS-OCT", 40, "2009-10-01"), ("QS", 4, 8)),  # the grid of QS, spelt so
        (_panel("QE-DEC", 40), ("QE", 4, 8)),
        (_panel("YS", 30), ("YS", 1, 6)),
        (_panel("W-SUN", 160), ("W-SUN", 52, 13)),
        (_panel("W-WED", 60), ("W-WED", 1, 13)),  # not two years: no yearly season
        (_panel("D", 90), ("D", 7, 14)),
        (_panel("B", 90), ("B", 5, 10)),
        (_panel("h", 24 * 14), ("h", 24, 48)),
        (_panel("15min", 96 * 7), ("15min", 96, 96)),
        (_panel("MS", 20), ("MS", 1, 12)),  # shorter than two years
    ],
    ids=lambda v: str(v[0]) if isinstance(v, tuple) else None,
)
def test_inferred_frequency_season_and_horizon(dates, expected) -> None:
    from tsops.pipeline.cadence import infer

    inferred = infer(dates)
    assert (inferred.freq, inferred.season_length, inferred.horizon) == expected, inferred.why


def test_gaps_in_every_series_still_give_the_grid() -> None:
    from tsops.pipeline.cadence import infer

    months = pd.date_range("2015-01-01", periods=48, freq="MS")
    dates = [months.delete([5, 17]), months.delete([3, 30, 31]), months[::2]]
    assert infer(dates).freq == "MS"
    # the ones given win over inference
    given = infer(dates, freq="MS", season_length=6, horizon=3)
    assert (given.season_length, given.horizon) == (6, 3)


def test_irregular_dates_ask_for_freq() -> None:
    from tsops.pipeline.cadence import CadenceError, infer

    dates = [pd.DatetimeIndex(["2020-01-01 10:17", "2020-01-03 09:05", "2020-02-11 23:59"])]
    with pytest.raises(CadenceError, match="pass --freq"):
        infer(dates)


def test_a_tracked_key_init_cannot_fill_in_is_an_error() -> None:
    from tsops.pipeline.init import Inferred, InitError, model_yaml

    inferred = Inferred("MS", 12, 18, {"freq": "f", "season_length": "s", "horizon": "h"})
    source = {"kind": "file", "path": "x.csv"}
    text = model_yaml("x", source, inferred, "", "none", ["freq", "nonnegative"])
    assert "nonnegative: auto" in text
    with pytest.raises(InitError, match="no_such_key"):
        model_yaml("x", source, inferred, "", "none", ["freq", "no_such_key"])
