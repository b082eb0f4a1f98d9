"""The pyfunc model as any MLflow consumer sees it: declared outputs, ISO dates, clear errors."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from tsops.core.errors import TsopsError
from tsops.registry.pyfunc import iso_strings


@pytest.fixture(scope="module")
def pyfunc(tiny_model_dir):
    return mlflow.pyfunc.load_model(str(tiny_model_dir))


def test_the_signature_declares_what_predict_returns(pyfunc):
    forecast = pyfunc.predict(pd.DataFrame({"unique_id": ["N1402", "N1403"]}), params={"h": 3})
    outputs = pyfunc.metadata.signature.outputs
    assert outputs.input_names() == list(forecast.columns)
    declared = {spec.name: spec.type.name for spec in outputs.inputs}
    assert declared == {
        "unique_id": "string",
        "ds": "string",
        "cutoff": "string",
        "mean": "double",
        **{col: "double" for col in ("lo-80", "hi-80", "lo-95", "hi-95")},
    }
    # dates as tsops serve writes them: JSON and MLServer's codecs carry no datetime64
    assert forecast["ds"].tolist()[:3] == [f"2020-0{m}-01T00:00:00" for m in (1, 2, 3)]
    assert set(forecast["cutoff"]) == {"2019-12-01T00:00:00"}


def test_history_dates_may_be_strings_or_timestamps(pyfunc):
    ds = [f"2020-{m:02d}-01" for m in range(1, 7)]
    rows = {"unique_id": ["N1402"] * 6, "y": [5000.0 + 10 * i for i in range(6)]}
    as_text = pyfunc.predict(pd.DataFrame({**rows, "ds": ds}), params={"h": 2})
    as_times = pyfunc.predict(pd.DataFrame({**rows, "ds": pd.to_datetime(ds)}), params={"h": 2})
    pd.testing.assert_frame_equal(as_text, as_times)
    assert as_text["cutoff"].tolist() == ["2020-06-01T00:00:00"] * 2
    assert as_text["ds"].tolist() == ["2020-07-01T00:00:00", "2020-08-01T00:00:00"]


def test_a_bad_request_is_an_mlflow_400_and_a_tsops_error(pyfunc):
    """MLflow's scoring server answers an MlflowException with 400 and its message;
    tsops' commands report a TsopsError without a traceback."""
    for frame, params, needle in (
        (pd.DataFrame({"unique_id": ["nope"]}), None, "unknown series ['nope']"),
        (pd.DataFrame({"unique_id": ["N1402"]}), {"h": 13}, "h=13 is outside 1..12"),
        (pd.DataFrame({"unique_id": ["N1402"]}), {"level": [100.0]}, "level: interval level"),
    ):
        with pytest.raises(MlflowException) as caught:
            pyfunc.predict(frame, params=params)
        assert needle in caught.value.message
        assert caught.value.get_http_status_code() == 400
        assert isinstance(caught.value, TsopsError)


def test_iso_strings_keep_sub_second_times():
    text = ["2024-01-01 00:00:00", "2024-01-01 00:00:00.250"]
    times = pd.Series(pd.to_datetime(text, format="ISO8601"))
    assert iso_strings(times).tolist() == ["2024-01-01T00:00:00", "2024-01-01T00:00:00.250000"]
    hourly = pd.Series(pd.date_range("2024-03-01", periods=2, freq="h"))
    assert iso_strings(hourly).tolist() == ["2024-03-01T00:00:00", "2024-03-01T01:00:00"]


def test_history_a_model_cannot_forecast_from_is_a_400_naming_the_series(pyfunc):
    """Infinite values are refused before the model runs; a fit that fails or overflows
    (the shipped model's statsforecast members on 1e308: "no model able to be fitted")
    is the same kind of 400, naming the series, as tsops serve answers it."""
    ds = [f"2020-{m:02d}-01" for m in range(1, 13)]
    frame = pd.DataFrame({"unique_id": ["N1402"] * 12, "ds": ds, "y": [1.0] * 11 + [np.inf]})
    with pytest.raises(MlflowException) as caught:
        pyfunc.predict(frame, params={"h": 2})
    assert caught.value.get_http_status_code() == 400
    assert "history of 'N1402': y is inf at 2020-12-01T00:00:00" in caught.value.message
