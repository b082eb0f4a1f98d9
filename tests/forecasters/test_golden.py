"""Every member forecasts exactly as before the array-based history path (golden file),
and the global model's array paths agree with scikit-learn's own ``predict``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.forecasters.golden_cases import GOLDEN, fitted_members, forecasts
from tsops.forecasters import GlobalGBM
from tsops.forecasters.gbm import _future_grid, _shift
from tsops.forecasters.trees import TreeEnsemble


@pytest.fixture(scope="module")
def members():
    return fitted_members()


def test_forecasts_equal_the_recorded_ones_bit_for_bit(members):
    expected = np.load(GOLDEN)
    found = forecasts(members)
    assert sorted(found) == sorted(expected.files), "cases changed: regenerate on purpose"
    differ = [k for k in expected.files if not np.array_equal(found[k], expected[k])]
    assert not differ, (
        f"{len(differ)} of {len(found)} forecasts changed, e.g. {differ[:3]}; a change of "
        "the numbers must be deliberate (see tests/forecasters/golden_cases.py)"
    )


def test_tree_arrays_predict_like_scikit_learn(members):
    model = members["gbm36"].model_
    trees = TreeEnsemble.build(model)
    assert trees is not None
    rng = np.random.default_rng(0)
    X = rng.normal(1.0, 0.5, (40, model.n_features_in_))
    X[rng.random(X.shape) < 0.1] = np.nan
    assert np.array_equal(trees.predict(X), model.predict(X))


def test_history_path_equals_scikit_learn_path(members):
    """The few-series path (tree arrays) and the many-series path (scikit-learn)."""
    gbm: GlobalGBM = members["gbm_calendar"]
    tails = [gbm.y_[uid][:-k] for k, uid in enumerate(gbm.y_, start=1)]
    ends = pd.DatetimeIndex([gbm.cutoffs_[uid] for uid in gbm.y_]) - pd.offsets.MonthBegin(1)
    grid = _future_grid(ends, 12, gbm.freq)
    fast = gbm._recursive(gbm.model_, tails, grid, 12, gbm._served_trees())
    slow = gbm._recursive(gbm.model_, tails, grid, 12)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])


@pytest.mark.parametrize(
    "freq, ends",
    [
        ("MS", ["2019-12-01", "2020-02-01", "2019-12-01"]),
        ("ME", ["2020-01-31", "2020-02-29"]),
        ("QS", ["2020-01-01"]),
        ("W-SUN", ["2020-01-05"]),
        ("D", ["2020-02-28"]),
        ("B", ["2020-01-03", "2020-01-04"]),  # a Saturday is off the business-day grid
        ("h", ["2020-03-29 01:00"]),
        ("SMS", ["2020-01-15"]),
        ("MS", ["2020-01-15"]),  # off the grid: stepped one offset at a time
    ],
)
def test_future_grid_steps_like_adding_offsets(freq, ends):
    index = pd.DatetimeIndex(ends)
    expected = np.column_stack([_shift(index, step, freq).to_numpy() for step in range(1, 8)])
    assert np.array_equal(_future_grid(index, 7, freq), expected)
    assert _future_grid(index, 7, freq).dtype == expected.dtype
