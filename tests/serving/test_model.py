"""The kserve model without a server: what the forecaster refuses, or cannot fit or
forecast from the history sent, is a 400 naming it, and counts as a rejected request."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from kserve.errors import InvalidInput

from tsops.forecasters.base import ForecastError
from tsops.serving.model import REJECTED, ForecastModel


class RefusingForecaster:
    cutoffs_ = SimpleNamespace(index=["a"])

    def predict_series(self, h, levels, history=None, ids=None):
        raise ForecastError("history for series 'a' starts at 2021-06-01, leaving a gap")


class UnfittableForecaster:
    """What statsforecast does with history it cannot fit: a bare Exception."""

    cutoffs_ = SimpleNamespace(index=["a"])

    def predict_series(self, h, levels, history=None, ids=None):
        raise Exception("no model able to be fitted")  # statsforecast raises just this


class OverflowingForecaster:
    """A forecast the history made infinite."""

    cutoffs_ = SimpleNamespace(index=["a"])

    def predict_series(self, h, levels, history=None, ids=None):
        from tsops.forecasters.base import SeriesForecast

        ds = history["a"].ds
        return [SeriesForecast("a", ds[-1], ds, {"mean": np.array([np.inf] * len(ds))})]


def _model(forecaster=None) -> ForecastModel:
    model = ForecastModel("m", "unused")
    model.loaded = SimpleNamespace(forecaster=forecaster or RefusingForecaster(), version="1")
    model.freq, model.horizon, model.max_horizon, model.levels = "MS", 2, 4, [80.0]
    model.series = {"a"}
    return model


def test_a_forecast_the_model_refuses_is_invalid_input_naming_why():
    model = _model()
    body = {"instances": [{"unique_id": "a", "history": {"ds": ["2021-06-01"], "y": [1.0]}}]}
    before = REJECTED.labels("m")._value.get()
    query = asyncio.run(model.preprocess(body))
    with pytest.raises(InvalidInput, match="leaving a gap"):
        model.predict(query)
    assert REJECTED.labels("m")._value.get() == before + 1


def test_a_series_the_model_does_not_know_is_invalid_input():
    with pytest.raises(InvalidInput, match=r"unique_id \['b'\] not known to model 'm'"):
        asyncio.run(_model().preprocess({"instances": [{"unique_id": "b"}]}))


def test_a_body_that_is_not_json_is_invalid_input():
    with pytest.raises(InvalidInput, match="body is not JSON"):
        asyncio.run(_model().preprocess(b"{not json"))


@pytest.mark.parametrize(
    ("forecaster", "needle"),
    [
        (UnfittableForecaster(), "cannot be fitted to it (Exception: no model able to be fitted)"),
        (OverflowingForecaster(), "its forecast is not finite"),
    ],
)
def test_history_the_model_cannot_fit_is_invalid_input_naming_the_series(forecaster, needle):
    model = _model(forecaster)
    body = {"instances": [{"unique_id": "a", "history": {"ds": ["2021-06-01"], "y": [1e99]}}]}
    query = asyncio.run(model.preprocess(body))
    with pytest.raises(InvalidInput, match="history of 'a'") as refused:
        model.predict(query)
    assert needle in str(refused.value)
    assert "values range from 1e+99 to 1e+99" in str(refused.value)
