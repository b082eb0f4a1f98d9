"""Input validation: each check names the bad series and says how to fix it."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pandas as pd
import pytest

from tests.helpers.synthetic import make_series
from tsops.pipeline import validate as v


def _frame(series: dict[str, list], start: str = "2020-01-01", freq: str = "MS") -> pd.DataFrame:
    """One row per value, on a regular grid per series; as strings, like a CSV read."""
    rows = []
    for uid, values in series.items():
        for ds, y in zip(pd.date_range(start, periods=len(values), freq=freq), values, strict=True):
            rows.append({"unique_id": uid, "ds": ds.strftime("%Y-%m-%d %H:%M:%S"), "y": y})
    return pd.DataFrame(rows).astype({"y": object})


def _only(problems: list[v.Problem], check: str) -> v.Problem:
    found = [p for p in problems if p.check == check]
    assert len(found) == 1, f"expected one {check} problem, got {problems}"
    return found[0]


def _clean(n: int = 6) -> list[float]:
    return [float(i) for i in range(1, n + 1)]


# -- one case per check ------------------------------------------------------------------


def _missing_columns():
    df = _frame({"a": _clean()}).rename(columns={"ds": "date", "y": "Sales"})
    return df, {}


def _empty():
    return pd.DataFrame({"unique_id": [], "ds": [], "y": []}), {}


def _missing_id():
    df = _frame({"a": _clean()})
    stray = pd.DataFrame({"unique_id": [None], "ds": ["2020-03-01"], "y": [3.0]})
    return pd.concat([df, stray], ignore_index=True), {}


def _bad_timestamps():
    df = _frame({"a": _clean(), "b": _clean()})
    df.loc[11, "ds"] = "2020-13-45"  # the last row, so no gap opens behind it
    return df, {}


def _non_numeric():
    df = _frame({"a": _clean(), "b": [*_clean(5), "12 kg"]})
    return df, {}


def _unsorted():
    df = _frame({"a": _clean(), "b": _clean()})
    df = df.iloc[[0, 1, 2, 3, 4, 5, 7, 6, 8, 9, 10, 11]].reset_index(drop=True)
    return df, {}


def _duplicates():
    df = _frame({"a": _clean(), "b": _clean()})
    # Next to the original row: appended at the end it would also go back in time.
    return df.iloc[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 10, 11]].reset_index(drop=True), {}


def _nan():
    return _frame({"a": _clean(), "b": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0]}), {}


def _inf():
    return _frame({"a": [1.0, -np.inf, 3.0, 4.0, 5.0, 6.0], "b": _clean()}), {}


def _off_grid():
    df = _frame({"a": _clean(), "b": _clean()})
    df.loc[11, "ds"] = "2020-06-15"
    return df, {}


def _gaps():
    df = _frame({"a": _clean(8), "b": _clean(8)})
    return df.drop(index=[10, 11, 13]).reset_index(drop=True), {}


def _too_short():
    return _frame({"a": _clean(12), "b": _clean(4)}), {"min_length": 10}


def _no_observations():
    return _frame({"a": _clean(), "b": [np.nan] * 3}), {}


CASES = {
    # check: (builder, series named, words in message, words in fix)
    v.MISSING_COLUMNS: (
        _missing_columns,
        (),
        ["'ds'", "'y'", "'date'", "'Sales'"],
        ["--time-col date", "--target-col Sales"],
    ),
    v.EMPTY_FRAME: (_empty, (), ["no rows"], ["source"]),
    v.MISSING_ID: (_missing_id, (), ["row 6", "2020-03-01"], ["unique_id"]),
    v.BAD_TIMESTAMPS: (_bad_timestamps, ("b",), ["row 11", "'2020-13-45'", "(b)"], ["--time-col"]),
    v.NON_NUMERIC_TARGET: (_non_numeric, ("b",), ["'12 kg'", "row 11", "(b)"], ["units"]),
    v.UNSORTED_TIMESTAMPS: (
        _unsorted,
        ("b",),
        ["b:", "2020-01-01 at row 7 after 2020-02-01"],
        ["sort", "ingest"],
    ),
    v.DUPLICATE_TIMESTAMPS: (
        _duplicates,
        ("b",),
        ["b:", "2020-04-01", "2 rows"],
        ["drop or aggregate duplicates before ingest"],
    ),
    v.NO_OBSERVATIONS: (_no_observations, ("b",), ["b (3 row(s))", "usable"], ["remove"]),
    v.MISSING_TARGET: (_nan, ("b",), ["b: 1 at 2020-03-01"], ["fill: ffill", "--fill"]),
    v.INFINITE_TARGET: (_inf, ("a",), ["a: -inf at 2020-02-01"], ["inf"]),
    v.OFF_GRID_TIMESTAMPS: (_off_grid, ("b",), ["'MS'", "b: 1 at 2020-06-15"], ["freq 'MS'"]),
    v.MISSING_PERIODS: (
        _gaps,
        ("b",),
        ["3 missing", "b: 3 missing (2020-03-01, 2020-04-01, 2020-06-01)"],
        ["fill: ffill", "--fill"],
    ),
    v.TOO_SHORT: (
        _too_short,
        ("b",),
        ["b has 4", "required 10"],
        ["remove the series", "short series"],
    ),
}


@pytest.mark.parametrize("check", list(CASES))
def test_each_check_names_series_and_fix(check):
    build, series, in_message, in_fix = CASES[check]
    df, kwargs = build()
    problems = v.validate_frame(df, freq="MS", min_length=kwargs.get("min_length", 1))
    problem = _only(problems, check)
    assert problem.series == series
    for words in in_message:
        assert words in problem.message, problem.message
    for words in in_fix:
        assert words in problem.fix, problem.fix
    # The flawed case raises only its own problem: the checks do not pile onto each other.
    assert [p.check for p in problems] == [check]


def test_every_check_has_a_case():
    assert set(CASES) == set(v.CHECKS)


@pytest.mark.parametrize("freq", ["MS", "ME", "QS", "QE", "W-SUN", "D", "h", "YS"])
def test_clean_synthetic_frame_has_no_problems(freq):
    df = make_series(n_series=4, length=40, freq=freq, season_length=4)
    assert v.validate_frame(df, freq=freq, min_length=40) == []
    pd.testing.assert_frame_equal(v.check_frame(df, freq=freq, min_length=40), df)


@pytest.mark.parametrize(
    ("freq", "missing"),
    [
        ("ME", "2015-03-31"),
        ("QS", "2015-07-01"),
        ("W-SUN", "2015-01-18"),
        ("D", "2015-01-03"),
        ("h", "2015-01-01 02:00:00"),
        ("YS", "2017-01-01"),
    ],
)
def test_gap_detection_per_frequency(freq, missing):
    df = make_series(n_series=1, length=10, freq=freq).drop(index=2)
    problem = _only(v.validate_frame(df, freq=freq, min_length=1), v.MISSING_PERIODS)
    assert f"s0: 1 missing ({missing})" in problem.message


def test_month_end_data_against_month_start_freq_suggests_inferred_freq():
    df = make_series(n_series=1, length=6, freq="ME")
    problem = _only(v.validate_frame(df, freq="MS", min_length=1), v.OFF_GRID_TIMESTAMPS)
    assert problem.series == ("s0",)
    assert "'ME'" in problem.fix


def test_hourly_data_off_the_hour_is_off_grid():
    df = make_series(n_series=1, length=5, freq="h", start="2020-01-01 00:30")
    assert _only(v.validate_frame(df, freq="h", min_length=1), v.OFF_GRID_TIMESTAMPS)


def test_multi_problem_frame_reports_all_at_once():
    df = _frame({"a": _clean(8), "b": _clean(8), "c": _clean(3)})
    df.loc[1, "y"] = "n/a"  # missing value token, fillable
    df.loc[2, "y"] = "oops"
    df.loc[9, "ds"] = "not a date"
    df = df.drop(index=[12]).reset_index(drop=True)
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    problems = v.validate_frame(df, freq="MS", min_length=5)
    by_check = {p.check: p.series for p in problems}
    assert by_check == {
        v.BAD_TIMESTAMPS: ("b",),
        v.NON_NUMERIC_TARGET: ("a",),
        v.UNSORTED_TIMESTAMPS: ("a",),  # the duplicate appended at the end goes back in time
        v.DUPLICATE_TIMESTAMPS: ("a",),
        v.MISSING_TARGET: ("a",),
        v.MISSING_PERIODS: ("b",),
        v.TOO_SHORT: ("c",),
    }
    # Reported in the documented order, so the first block is the first thing to fix.
    assert [p.check for p in problems] == [c for c in v.CHECKS if c in by_check]

    with pytest.raises(v.ValidationError) as info:
        v.check_frame(df, freq="MS", min_length=5)
    raised = {p.check for p in info.value.problems}
    # check_frame sorts, so order in the input is not a problem there.
    assert raised == set(by_check) - {v.UNSORTED_TIMESTAMPS}
    text = str(info.value)
    assert text.startswith("6 problems in the input series:")
    assert "[too_short] series: c" in text
    assert "fix: drop or aggregate duplicates before ingest" in text


def test_check_frame_with_fill_closes_gaps_and_nan():
    df = _frame({"a": [1.0, np.nan, 3.0, 4.0, 5.0], "b": [1.0, 2.0, 3.0, 4.0, 5.0]})
    df = df.drop(index=[8]).reset_index(drop=True)
    with pytest.raises(v.ValidationError) as info:
        v.check_frame(df, freq="MS", min_length=4)
    assert {p.check for p in info.value.problems} == {v.MISSING_TARGET, v.MISSING_PERIODS}
    out = v.check_frame(df, freq="MS", min_length=4, fill="interpolate")
    assert out["y"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] * 2


def test_check_frame_with_ffill_explains_leading_nan():
    df = _frame({"a": [np.nan, 2.0, 3.0]})
    with pytest.raises(v.ValidationError) as info:
        v.check_frame(df, freq="MS", min_length=1, fill="ffill")
    problem = _only(info.value.problems, v.MISSING_TARGET)
    assert problem.series == ("a",)
    assert "cannot fill NaN at the start" in problem.fix


def test_short_series_pass_by_default_and_only_series_without_a_value_are_refused():
    # the pipeline forecasts short series (tsops.pipeline.classes); validation asks for
    # no length unless told to
    df = _frame({"a": _clean(12), "b": [3.0], "c": [np.nan, np.nan]})
    problems = v.validate_frame(df, freq="MS")
    assert [(p.check, p.series) for p in problems] == [(v.NO_OBSERVATIONS, ("c",))]
    out = v.check_frame(df[df["unique_id"] != "c"], freq="MS")
    assert out.groupby("unique_id").size().to_dict() == {"a": 12, "b": 1}


def test_many_failing_series_keep_the_message_short():
    df = make_series(n_series=50, length=5)
    problem = _only(v.validate_frame(df, freq="MS", min_length=10), v.TOO_SHORT)
    assert len(problem.series) == 50
    assert "and 45 more series" in problem.message
    assert "and 40 more" in str(problem)


# -- fill_gaps ---------------------------------------------------------------------------


def _gappy() -> pd.DataFrame:
    ds = pd.to_datetime(["2020-01-01", "2020-02-01", "2020-04-01", "2020-05-01", "2020-07-01"])
    return pd.DataFrame(
        {
            "unique_id": ["a", "a", "a", "a", "b"],
            "ds": [*ds[:4], ds[4]],
            "y": [np.nan, 2.0, 8.0, np.nan, 5.0],
        }
    )


@pytest.mark.parametrize(
    ("policy", "expected_a"),
    [
        ("ffill", [np.nan, 2.0, 2.0, 8.0, 8.0]),
        ("interpolate", [np.nan, 2.0, 5.0, 8.0, np.nan]),
        ("zero", [0.0, 2.0, 0.0, 8.0, 0.0]),
    ],
)
def test_fill_gaps_policies(policy, expected_a):
    out = v.fill_gaps(_gappy(), freq="MS", policy=policy)
    a = out[out["unique_id"] == "a"]
    assert a["ds"].tolist() == list(pd.date_range("2020-01-01", "2020-05-01", freq="MS"))
    np.testing.assert_array_equal(a["y"].to_numpy(), expected_a)
    assert out[out["unique_id"] == "b"]["y"].tolist() == [5.0]
    assert out.index.tolist() == list(range(len(out)))
    assert out["ds"].dtype == "datetime64[ns]"


def test_fill_gaps_none_returns_input_unchanged():
    df = _gappy()
    assert v.fill_gaps(df, freq="MS", policy="none") is df


def test_fill_gaps_keeps_exogenous_columns():
    df = _gappy().assign(price=[1.0, 2.0, 3.0, 4.0, 5.0])
    out = v.fill_gaps(df, freq="MS", policy="ffill")
    assert out["price"].isna().sum() == 1  # only the inserted row, which has no price


def test_unknown_fill_policy_and_freq_raise_with_the_choices():
    with pytest.raises(ValueError, match="ffill"):
        v.fill_gaps(_gappy(), freq="MS", policy="mean")
    with pytest.raises(ValueError, match="W-SUN"):
        v.validate_frame(_gappy(), freq="monthly", min_length=1)


# -- coerce_frame ------------------------------------------------------------------------

CSV = """series,date,sales,promo
b,2020-02-01, 7.5 ,1
a,2020-02-01,3,0
a,2020-01-01,NA,1
b,2020-01-01,6,0
"""


def test_coerce_csv_strings_to_canonical_frame():
    raw = pd.read_csv(io.StringIO(CSV), dtype=str, keep_default_na=False)
    out = v.coerce_frame(raw, id_col="series", time_col="date", target_col="sales")
    assert out.columns.tolist() == ["unique_id", "ds", "y", "promo"]
    assert out["ds"].dtype == "datetime64[ns]"
    assert out["y"].dtype == "float64"
    assert out["unique_id"].tolist() == ["a", "a", "b", "b"]
    assert out["ds"].dt.month.tolist() == [1, 2, 1, 2]
    np.testing.assert_array_equal(out["y"].to_numpy(), [np.nan, 3.0, 6.0, 7.5])
    assert out.index.tolist() == [0, 1, 2, 3]
    mapped = v.validate_frame(
        raw, freq="MS", min_length=1, id_col="series", time_col="date", target_col="sales"
    )
    assert [(p.check, p.series) for p in mapped] == [
        (v.UNSORTED_TIMESTAMPS, ("a", "b")),
        (v.MISSING_TARGET, ("a",)),
    ]


def test_coerce_keeps_duplicates_in_input_order():
    raw = pd.DataFrame({"unique_id": ["a", "a"], "ds": ["2020-01-01"] * 2, "y": ["1", "2"]})
    assert v.coerce_frame(raw)["y"].tolist() == [1.0, 2.0]


def test_coerce_integer_ids_years_and_time_zones():
    raw = pd.DataFrame({"unique_id": [7.0, 7.0, np.nan], "ds": [1990, 1991, 1992], "y": [1, 2, 3]})
    with pytest.raises(v.ValidationError) as info:
        v.coerce_frame(raw)
    assert [p.check for p in info.value.problems] == [v.MISSING_ID]
    out = v.coerce_frame(raw.dropna())
    assert out["unique_id"].tolist() == ["7", "7"]  # not "7.0": CSV blanks make ids floats
    assert out["ds"].dt.year.tolist() == [1990, 1991]

    aware = pd.DataFrame(
        {"unique_id": "a", "ds": ["2020-01-01T00:00:00+01:00", "2020-02-01T00:00:00+01:00"]}
    ).assign(y=1.0)
    out = v.coerce_frame(aware)
    assert out["ds"].dt.tz is None
    assert out["ds"].tolist() == list(pd.to_datetime(["2020-01-01", "2020-02-01"]))


def test_coerce_raises_validation_error_not_a_pandas_traceback():
    raw = pd.DataFrame({"id": ["a", "a"], "ds": ["2020-01-01", "yesterday"], "y": ["1", "x"]})
    with pytest.raises(v.ValidationError) as info:
        v.coerce_frame(raw, id_col="id")
    assert [p.check for p in info.value.problems] == [v.BAD_TIMESTAMPS, v.NON_NUMERIC_TARGET]
    assert "'yesterday'" in str(info.value)
    with pytest.raises(v.ValidationError, match="missing column"):
        v.coerce_frame(raw)


def test_validation_error_survives_pickling():
    err = v.ValidationError([v.Problem("too_short", "a has 3", ("a",), "remove it")])
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == err.problems
    assert str(back) == str(err)


# -- speed -------------------------------------------------------------------------------


def test_m3_monthly_sized_panel_validates():
    # Speed is measured in benchmarks/, not asserted here: timings flake on a busy machine.
    df = make_series(n_series=1428, length=126).astype({"ds": str, "y": str})
    problems = v.validate_frame(df, freq="MS", min_length=30)
    out = v.check_frame(df, freq="MS", min_length=30, fill="ffill")
    assert problems == []
    assert len(out) == 1428 * 126
