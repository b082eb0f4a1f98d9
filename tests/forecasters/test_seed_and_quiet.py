"""The model's seed reaches the kinds that draw random numbers, and ``quiet()`` changes
warnings, BLAS threads and floating-point errors only while its block runs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tsops.forecasters import CandidateError, candidate_factories, make_forecaster
from tsops.forecasters.naive import quiet


def test_the_seed_goes_to_the_kinds_that_take_one():
    ets = make_forecaster("ets", {}, freq="MS", season_length=12, seed=7)
    assert ets.model.seed == 7
    gbm = make_forecaster("gbm", {}, freq="MS", season_length=12, seed=7)
    assert gbm.hyperparams["random_state"] == 7
    pinned = make_forecaster("gbm", {"random_state": 3}, freq="MS", season_length=12, seed=7)
    assert pinned.hyperparams["random_state"] == 3
    # kinds without randomness take no seed, and are built all the same
    assert make_forecaster("theta", {}, freq="MS", season_length=12, seed=7).model.theta == 2.0


def test_the_seed_is_model_yamls_not_a_candidates():
    with pytest.raises(CandidateError, match="seed cannot be set in params"):
        make_forecaster("ets", {"seed": 1}, freq="MS", season_length=12)
    with pytest.raises(CandidateError, match="unknown forecaster kind"):
        make_forecaster("prophet", {}, freq="MS", season_length=12)


def test_candidate_factories_build_a_new_forecaster_each_call():
    from tsops.core.config import CandidateConfig

    factories = candidate_factories(
        {"a": CandidateConfig(kind="ets"), "b": CandidateConfig(kind="theta")},
        freq="MS",
        season_length=12,
        seed=4,
        n_jobs=1,
    )
    first, second = factories["a"](), factories["a"]()
    assert first is not second and first.model.seed == 4
    assert type(factories["b"]().model).__name__ == "Theta"


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_quiet_restores_warnings_errors_and_threads_when_its_block_ends():
    filters, errors, threads = list(warnings.filters), np.geterr(), _blas_threads()
    with quiet():
        with warnings.catch_warnings(record=True) as seen:
            warnings.warn("noise", RuntimeWarning, stacklevel=1)
        assert np.geterr()["divide"] == "ignore"
        assert all(n == 1 for n in _blas_threads())
        with quiet():  # nested: nothing more to change, nothing undone when it ends
            pass
        assert np.geterr()["divide"] == "ignore"
    assert not seen
    assert list(warnings.filters) == filters
    assert np.geterr() == errors
    assert _blas_threads() == threads
