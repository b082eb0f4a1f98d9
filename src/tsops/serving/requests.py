"""Parsing forecast requests of both protocols into one ``ForecastQuery``.

Every rejection names the field and what is allowed, and becomes a 400 response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tsops.core.errors import TsopsError
from tsops.forecasters.base import SeriesHistory

MAX_SERIES_PER_REQUEST = 1000
MAX_HISTORY_POINTS = 10_000
MAX_LEVELS = 10


class RequestError(TsopsError, ValueError):
    """A request the server cannot answer; the message names the field."""


@dataclass
class ForecastQuery:
    ids: list[str]
    h: int
    levels: list[float]
    history: dict[str, SeriesHistory] | None
    protocol: str
    request_id: str


Number = StrictInt | StrictFloat


class HistoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ds: Annotated[list[StrictStr], Field(min_length=1, max_length=MAX_HISTORY_POINTS)]
    y: Annotated[list[Number], Field(min_length=1, max_length=MAX_HISTORY_POINTS)]

    @model_validator(mode="after")
    def _same_length(self) -> HistoryIn:
        if len(self.ds) != len(self.y):
            raise ValueError(
                f"ds has {len(self.ds)} timestamps but y has {len(self.y)} values; "
                "send one value per timestamp"
            )
        return self


class InstanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unique_id: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    history: HistoryIn | None = None


class ParametersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    h: StrictInt | None = None
    level: Annotated[list[Number], Field(max_length=MAX_LEVELS)] | None = None


class V1Request(BaseModel):
    """``{"instances": [{"unique_id": ..., "history": {"ds": [...], "y": [...]}}],
    "parameters": {"h": 12, "level": [80, 95]}}``"""

    model_config = ConfigDict(extra="forbid")
    instances: Annotated[list[InstanceIn], Field(min_length=1, max_length=MAX_SERIES_PER_REQUEST)]
    parameters: ParametersIn = ParametersIn()

    @field_validator("instances")
    @classmethod
    def _unique_ids(cls, instances: list[InstanceIn]) -> list[InstanceIn]:
        seen: set[str] = set()
        for inst in instances:
            if inst.unique_id in seen:
                raise ValueError(f"unique_id {inst.unique_id!r} appears twice; send each once")
            seen.add(inst.unique_id)
        return instances


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def check_h(h: Any, default: int, max_h: int) -> int:
    if h is None:
        return default
    if isinstance(h, bool) or not isinstance(h, int | np.integer):
        raise RequestError(f"parameters.h must be an integer in 1..{max_h}, got {h!r}")
    if not 1 <= int(h) <= max_h:
        raise RequestError(f"parameters.h={h} is outside 1..{max_h}, the model's maximum horizon")
    return int(h)


def check_levels(levels: Any, default: list[float]) -> list[float]:
    if levels is None:
        return list(default)
    out = []
    for level in levels:
        value = float(level)
        if not (math.isfinite(value) and 0 < value < 100):
            raise RequestError(
                f"parameters.level {level!r} is outside (0, 100); use coverage percentages "
                "such as 80 or 95"
            )
        out.append(value)
    if len(out) > MAX_LEVELS:
        raise RequestError(f"parameters.level has {len(out)} levels; at most {MAX_LEVELS}")
    return sorted(set(out))


def series_histories(
    rows: list[tuple[str, list[str], list[float]]], freq: str
) -> dict[str, SeriesHistory] | None:
    """Check each series' history (parseable, finite, strictly increasing, on the grid)."""
    if not rows:
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    histories = {}
    for uid, ds, y in rows:
        field = f"history of {uid!r}"
        try:
            times = pd.DatetimeIndex(pd.to_datetime(ds, format="ISO8601"))
        except (ValueError, TypeError) as exc:
            raise RequestError(f"{field}: ds must be ISO 8601 timestamps ({exc})") from exc
        if times.tz is not None:
            times = times.tz_convert(None)
        values = np.asarray(y, dtype=float)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise RequestError(f"{field}: y[{bad}] is {values[bad]}; send finite numbers only")
        if len(times) > 1 and not (np.diff(times.asi8) > 0).all():
            raise RequestError(f"{field}: ds must be strictly increasing (sorted, no duplicates)")
        expected = pd.date_range(times[0], periods=len(times), freq=offset)
        if not expected.equals(times):
            raise RequestError(
                f"{field}: ds must be consecutive periods of the model's frequency {freq!r} "
                f"starting at {times[0].date()}, e.g. {[str(t.date()) for t in expected[:3]]}"
            )
        histories[uid] = SeriesHistory(times, values)
    return histories


def parse_v1(
    body: Any,
    *,
    default_h: int,
    max_h: int,
    default_levels: list[float],
    freq: str,
    request_id: str,
) -> ForecastQuery:
    if not isinstance(body, dict):
        raise RequestError(
            'body must be a JSON object with "instances" (and optional "parameters")'
        )
    try:
        request = V1Request.model_validate(body)
    except ValidationError as exc:
        raise RequestError(_pydantic_message(exc)) from exc
    h = check_h(request.parameters.h, default_h, max_h)
    levels = check_levels(request.parameters.level, default_levels)
    rows = [
        (inst.unique_id, inst.history.ds, inst.history.y)
        for inst in request.instances
        if inst.history is not None
    ]
    return ForecastQuery(
        ids=[inst.unique_id for inst in request.instances],
        h=h,
        levels=levels,
        history=series_histories(rows, freq),
        protocol="v1",
        request_id=request_id,
    )


def _strings(tensor, name: str) -> list[str]:
    if tensor.datatype != "BYTES":
        raise RequestError(f"input {name!r} must have datatype BYTES, got {tensor.datatype}")
    data = tensor.data if tensor.data is not None else tensor.as_numpy().ravel().tolist()
    if isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    out = []
    for item in data:
        out.append(item.decode() if isinstance(item, bytes) else str(item))
    _check_shape(tensor, len(out), name)
    return out


def _floats(tensor, name: str) -> list[float]:
    if tensor.datatype not in ("FP64", "FP32", "INT64", "INT32"):
        raise RequestError(f"input {name!r} must be FP64 or FP32, got {tensor.datatype}")
    try:
        values = np.asarray(tensor.as_numpy(), dtype=float).ravel().tolist()
    except (ValueError, TypeError) as exc:
        raise RequestError(f"input {name!r}: data must be numbers ({exc})") from exc
    _check_shape(tensor, len(values), name)
    return values


def _check_shape(tensor, count: int, name: str) -> None:
    shape = list(tensor.shape or [])
    if len(shape) != 1 or shape[0] != count:
        raise RequestError(
            f"input {name!r} must be one-dimensional with shape [{count}] matching its data, "
            f"got shape {shape}"
        )


V2_INPUTS = ("unique_id", "history_unique_id", "history_ds", "history_y", "level")


def parse_v2(
    request,
    *,
    default_h: int,
    max_h: int,
    default_levels: list[float],
    freq: str,
    request_id: str,
) -> ForecastQuery:
    """Open Inference Protocol: tensors ``unique_id`` [n] (BYTES) and, optionally,
    ``history_unique_id`` / ``history_ds`` (BYTES) and ``history_y`` (FP64), all [m];
    parameters ``h`` (int) and ``level`` (number, or comma-separated string)."""
    inputs = {}
    for tensor in request.inputs:
        if tensor.name not in V2_INPUTS:
            raise RequestError(f"unknown input {tensor.name!r}; inputs are {list(V2_INPUTS)}")
        if tensor.name in inputs:
            raise RequestError(f"input {tensor.name!r} appears twice")
        inputs[tensor.name] = tensor
    if "unique_id" not in inputs:
        raise RequestError('input "unique_id" (BYTES, shape [n]) is required')
    ids = _strings(inputs["unique_id"], "unique_id")
    if not 1 <= len(ids) <= MAX_SERIES_PER_REQUEST:
        raise RequestError(f"input 'unique_id' must name 1..{MAX_SERIES_PER_REQUEST} series")
    if len(set(ids)) != len(ids):
        raise RequestError("input 'unique_id' names a series twice; send each once")
    params = dict(request.parameters or {})
    # binary_data_output is the binary tensor extension's own parameter (tritonclient sends it)
    unknown = set(params) - {"h", "level", "binary_data_output"}
    if unknown:
        raise RequestError(f"unknown parameters {sorted(unknown)}; parameters are h and level")
    h = check_h(_param_value(params.get("h")), default_h, max_h)
    level_param = _param_value(params.get("level"))
    if "level" in inputs:
        level_values = _floats(inputs["level"], "level")
    elif isinstance(level_param, str):
        try:
            level_values = [float(x) for x in level_param.split(",") if x.strip()]
        except ValueError as exc:
            raise RequestError(f"parameters.level {level_param!r}: use e.g. '80,95'") from exc
    elif level_param is None:
        level_values = None
    elif isinstance(level_param, int | float) and not isinstance(level_param, bool):
        level_values = [float(level_param)]
    else:
        raise RequestError(f"parameters.level {level_param!r}: use a number or '80,95'")
    levels = check_levels(level_values, default_levels)
    history_names = ("history_unique_id", "history_ds", "history_y")
    present = [n for n in history_names if n in inputs]
    rows: list[tuple[str, list[str], list[float]]] = []
    if present:
        if len(present) != 3:
            raise RequestError(f"history needs all of {list(history_names)}; got {present}")
        hid = _strings(inputs["history_unique_id"], "history_unique_id")
        hds = _strings(inputs["history_ds"], "history_ds")
        hy = _floats(inputs["history_y"], "history_y")
        if not len(hid) == len(hds) == len(hy):
            raise RequestError("history_unique_id, history_ds and history_y must have one length")
        if len(hy) > MAX_HISTORY_POINTS * 10:
            raise RequestError(f"history has {len(hy)} points; at most {MAX_HISTORY_POINTS * 10}")
        grouped: dict[str, tuple[list[str], list[float]]] = {}
        for uid, ds, y in zip(hid, hds, hy, strict=True):
            grouped.setdefault(uid, ([], []))
            grouped[uid][0].append(ds)
            grouped[uid][1].append(y)
        missing = sorted(set(grouped) - set(ids))
        if missing:
            raise RequestError(f"history_unique_id {missing[:3]} not listed in unique_id")
        rows = [(uid, ds, y) for uid, (ds, y) in grouped.items()]
    return ForecastQuery(ids, h, levels, series_histories(rows, freq), "v2", request_id)


def _param_value(value: Any) -> Any:
    """Unwrap gRPC-style parameter messages; REST gives plain values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    for attr in ("int64_param", "double_param", "string_param", "bool_param"):
        if hasattr(value, "HasField") and value.HasField(attr):
            return getattr(value, attr)
    return value
