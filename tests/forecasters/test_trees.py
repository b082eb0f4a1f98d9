"""The global model's array path: its trees evaluated as arrays predict exactly like
scikit-learn, the few-series path equals the many-series one, and the forecast dates
equal adding offsets step by step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from tests.helpers.synthetic import make_series
from tsops.forecasters import GlobalGBM
from tsops.forecasters.gbm import _future_grid, _shift
from tsops.forecasters.trees import TreeEnsemble


@pytest.fixture(scope="module")
def gbm() -> GlobalGBM:
    panel = make_series(4, lengths=[60, 48, 30, 14], seed=2)
    return GlobalGBM("MS", 12, max_iter=25, min_samples_leaf=2, max_leaf_nodes=40).fit(panel)


def test_tree_arrays_predict_like_scikit_learn(gbm):
    model = gbm.model_
    trees = TreeEnsemble.build(model)
    assert trees is not None
    most_leaves = max(p[0].get_n_leaf_nodes() for p in model._predictors)
    assert trees.right_mask.dtype == (np.uint32 if most_leaves <= 32 else np.uint64)
    rng = np.random.default_rng(0)
    X = rng.normal(1.0, 0.5, (40, model.n_features_in_))
    X[rng.random(X.shape) < 0.1] = np.nan
    assert np.array_equal(trees.predict(X), model.predict(X))
    assert np.array_equal(trees.predict(X[:1]), model.predict(X[:1]))


def test_history_path_equals_scikit_learn_path(gbm):
    """The few-series path (tree arrays) and the many-series path (scikit-learn)."""
    tails = [gbm.y_[uid][:-k] for k, uid in enumerate(gbm.y_, start=1)]
    ends = pd.DatetimeIndex([gbm.cutoffs_[uid] for uid in gbm.y_]) - pd.offsets.MonthBegin(1)
    grid = _future_grid(ends, 12, gbm.freq)
    fast = gbm._recursive(gbm.model_, tails, grid, 12, gbm._served_trees())
    slow = gbm._recursive(gbm.model_, tails, grid, 12)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])


def test_models_the_arrays_cannot_reproduce_keep_scikit_learns_predict():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 3))
    X[:, 2] = rng.integers(0, 4, 3000)
    y = X[:, 0] + np.sin(3 * X[:, 1]) + X[:, 2] + rng.normal(0, 0.1, 3000)
    many_leaves = HistGradientBoostingRegressor(
        max_iter=2, max_leaf_nodes=100, min_samples_leaf=1, early_stopping=False
    ).fit(X, y)
    assert max(p[0].get_n_leaf_nodes() for p in many_leaves._predictors) > 64
    assert TreeEnsemble.build(many_leaves) is None
    categorical = HistGradientBoostingRegressor(
        max_iter=2, categorical_features=[2], early_stopping=False
    ).fit(X, y)
    assert TreeEnsemble.build(categorical) is None


def test_trees_are_built_once_and_not_pickled(gbm):
    import pickle

    gbm.predict_series(3, [80.0])
    assert gbm._served_trees() is gbm._served_trees()
    restored = pickle.loads(pickle.dumps(gbm))
    assert "_trees_" not in restored.__dict__ and "_quantile_cache_" not in restored.__dict__
    first, again = gbm.predict_series(3, [80.0]), restored.predict_series(3, [80.0])
    for a, b in zip(first, again, strict=True):
        assert all(np.array_equal(a.values[k], b.values[k]) for k in a.values)


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
