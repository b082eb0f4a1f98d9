"""The MLflow pyfunc flavour of a trained tsops model.

Anything that loads MLflow models (``mlflow.pyfunc.load_model``, ``mlflow models
serve``, MLServer's MLflow runtime, which KServe's ``modelFormat: mlflow`` runs) gets
forecasts from it unchanged. Input: one row per series wanted (``unique_id``), plus
optional history rows (``ds``, ``y``) that anchor that series' forecast at its latest
observation; ``ds`` may be timestamps or ISO 8601 strings. Params: ``h`` and ``level``.

Output (declared in the signature, which MLServer needs to load the model): one row per
series and step, ``unique_id, ds, cutoff, mean, lo-<level>, hi-<level>``, with ``ds`` and
``cutoff`` as ISO 8601 strings (``2020-01-01T00:00:00``, what ``tsops serve`` answers):
JSON has no timestamp type and MLServer's pandas codec cannot encode ``datetime64``.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from tsops.core.errors import TsopsError
from tsops.core.schema import (
    CUTOFF_COL,
    ID_COL,
    MEAN_COL,
    TARGET_COL,
    TIME_COL,
    check_levels,
    interval_columns,
)

FORECASTER_ARTIFACT = "forecaster"
SPEC_ARTIFACT = "spec"

#: what the logged model needs at load time; pinned to what trained it
RUNTIME_PACKAGES = (
    "mlflow",
    "pandas",
    "numpy",
    "scipy",
    "scikit-learn",
    "statsmodels",
    "statsforecast",
    "joblib",
    "pyarrow",
)


class ForecastRequestError(TsopsError, ValueError):
    """A pyfunc input that cannot be forecast; the message names the field."""


class ServedForecastError(ForecastRequestError, MlflowException):
    """A request the model cannot forecast, as the MLflow model servers report it: ``mlflow
    models serve`` answers an ``MlflowException`` with 400 and its message (anything else
    becomes a 500-style "unexpected error" without it), MLServer with its text."""

    def __init__(self, message: str):
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)


def signature(horizon: int, levels: list[float]) -> ModelSignature:
    # "datetime" accepts timestamps and ISO strings alike: MLflow's schema enforcement
    # converts strings (what JSON and MLServer's BYTES tensors carry) before predict
    inputs = Schema(
        [
            ColSpec("string", ID_COL),
            ColSpec("datetime", TIME_COL, required=False),
            ColSpec("double", TARGET_COL, required=False),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("h", "long", horizon),
            ParamSpec("level", "double", [float(x) for x in levels], shape=(-1,)),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=output_schema(levels), params=params)


def output_schema(levels: list[float]) -> Schema:
    """The forecast's columns at the model's default ``levels``; a request's ``level``
    param names other interval columns, so those are declared optional."""
    return Schema(
        [
            ColSpec("string", ID_COL),
            ColSpec("string", TIME_COL),
            ColSpec("string", CUTOFF_COL),
            ColSpec("double", MEAN_COL),
            *(ColSpec("double", col, required=False) for col in interval_columns(levels)),
        ]
    )


def input_example(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({ID_COL: ids[:2]})


class TsopsForecaster(mlflow.pyfunc.PythonModel):
    """Wraps a fitted ``Forecaster`` and the spec it was trained with."""

    def load_context(self, context) -> None:
        import joblib

        from tsops.core.io import read_json

        self.forecaster = joblib.load(context.artifacts[FORECASTER_ARTIFACT])
        self.spec = read_json(context.artifacts[SPEC_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        try:
            return forecast_request(self.forecaster, self.spec, model_input, params or {})
        except TsopsError as exc:  # unknown series, bad h or level, unusable history
            raise ServedForecastError(str(exc)) from exc


def forecast_request(
    forecaster, spec: dict, model_input: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Forecasts for the series in ``model_input``, with a ``cutoff`` column; ``ds`` and
    ``cutoff`` as ISO 8601 strings."""
    max_h = int(spec["max_horizon"])
    h = int(params.get("h", spec["horizon"]))
    if not 1 <= h <= max_h:
        raise ForecastRequestError(f"h={h} is outside 1..{max_h}, the model's maximum horizon")
    try:
        levels = check_levels(params.get("level", spec["levels"]))
    except ValueError as exc:
        raise ForecastRequestError(f"level: {exc}") from exc
    if ID_COL not in model_input.columns:
        raise ForecastRequestError(f"input needs a {ID_COL!r} column naming the series")
    ids = list(dict.fromkeys(model_input[ID_COL].astype(str)))
    history = None
    if {TIME_COL, TARGET_COL} <= set(model_input.columns):
        rows = model_input.dropna(subset=[TIME_COL, TARGET_COL])
        if not rows.empty:
            history = pd.DataFrame(
                {
                    ID_COL: rows[ID_COL].astype(str),
                    TIME_COL: pd.to_datetime(rows[TIME_COL]),
                    TARGET_COL: rows[TARGET_COL].astype(float),
                }
            ).sort_values([ID_COL, TIME_COL], kind="stable")
    if history is None:
        forecast = forecaster.predict(h, level=levels, ids=ids)
    else:
        forecast = _from_history(forecaster, h, levels, history, ids)
    cutoffs = forecaster.cutoffs_.copy()
    if history is not None:
        cutoffs.update(history.groupby(ID_COL)[TIME_COL].max())
    forecast.insert(2, CUTOFF_COL, forecast[ID_COL].map(cutoffs))
    for col in (TIME_COL, CUTOFF_COL):
        forecast[col] = iso_strings(forecast[col])
    return forecast


def _from_history(
    forecaster, h: int, levels: list[float], history: pd.DataFrame, ids: list[str]
) -> pd.DataFrame:
    """The forecast from ``history``; history a model cannot forecast from (infinite
    values, magnitudes that overflow its fit) is a ``ForecastRequestError`` naming the
    series, as ``tsops serve`` answers it, not a bare library exception (a 500)."""
    infinite = history[~np.isfinite(history[TARGET_COL].to_numpy())]
    if not infinite.empty:
        row = infinite.iloc[0]
        raise ForecastRequestError(
            f"history of {row[ID_COL]!r}: y is {row[TARGET_COL]} at {row[TIME_COL].isoformat()}; "
            "send finite numbers only"
        )
    named = ", ".join(map(repr, history[ID_COL].unique()))
    try:
        forecast = forecaster.predict(h, level=levels, history=history, ids=ids)
    except TsopsError:
        raise
    except Exception as exc:  # statsforecast raises a bare Exception ("no model able to be fitted")
        raise ForecastRequestError(
            f"history of {named}: the model cannot be fitted to it ({type(exc).__name__}: "
            f"{exc}); send the series' actual observations (magnitudes far below 1e308)"
        ) from exc
    sent = forecast[forecast[ID_COL].isin(history[ID_COL])]
    finite = np.isfinite(sent.select_dtypes("number").to_numpy()).all(axis=1)
    if not finite.all():
        raise ForecastRequestError(
            f"history of {sent[ID_COL].to_numpy()[~finite][0]!r}: the forecast from it is not "
            "finite (its values overflow the model's fit); send the series' actual observations"
        )
    return forecast


def iso_strings(times: pd.Series) -> pd.Series:
    """``Timestamp.isoformat`` of each value, as ``tsops serve`` writes them; one
    ``strftime`` for the usual whole-second times, per value only with sub-seconds."""
    times = pd.to_datetime(times)
    if (times.dt.microsecond == 0).all() and (times.dt.nanosecond == 0).all():
        return times.dt.strftime("%Y-%m-%dT%H:%M:%S").astype(object)
    return times.map(pd.Timestamp.isoformat).astype(object)


def save_pyfunc(model_dir: Path, spec: dict, ids: list[str], out: Path) -> None:
    """Write ``model_dir`` (from ``tsops train``) as an MLflow model folder at ``out``.

    No tracking store is involved: ``registry.publish`` uploads the folder through the
    command's client, and tests serve it as it is."""
    import tsops
    from tsops.core.paths import FORECASTER_FILE, SPEC_FILE

    mlflow.pyfunc.save_model(
        str(out),
        python_model=TsopsForecaster(),
        artifacts={
            FORECASTER_ARTIFACT: str(Path(model_dir) / FORECASTER_FILE),
            SPEC_ARTIFACT: str(Path(model_dir) / SPEC_FILE),
        },
        code_paths=[str(Path(tsops.__file__).parent)],
        signature=signature(int(spec["horizon"]), list(spec["levels"])),
        input_example=input_example(ids),
        pip_requirements=[f"{p}=={version(p)}" for p in RUNTIME_PACKAGES],
    )
