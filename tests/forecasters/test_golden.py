"""Every member forecasts exactly as before the array-based history path: the golden
file recorded from commit e02ecfc (see golden_cases.py), and statsforecast's constants
kept per process are the ones it computes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.forecasters.golden_cases import GOLDEN, fitted_members, forecasts
from tsops.forecasters.statsforecast_speedups import cache_constants


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


def test_kept_statsforecast_constants_are_the_computed_ones():
    from statsforecast import theta, utils

    cache_constants()
    cache_constants()  # idempotent: wrapped once
    levels = np.asarray([80.0, 95.0])
    expected = stats.norm(scale=1.0).ppf(0.5 + levels / 200)
    for _ in range(2):  # computed, then kept
        found = utils._quantiles(levels)
        assert np.array_equal(found, expected)
        found[:] = 0  # a caller changing its copy changes nothing kept
    assert np.array_equal(utils._quantiles([80, 95]), expected)
    t_dist = utils._quantiles(levels, distribution="t", dist_params={"df": 5.0})
    assert np.array_equal(t_dist, stats.t(df=5.0).ppf(0.5 + levels / 200))
    assert theta.norm.ppf(0.95) == stats.norm.ppf(0.95) == theta.norm.ppf(0.95)
    assert np.array_equal(theta.norm.ppf([0.9, 0.95]), stats.norm.ppf([0.9, 0.95]))
