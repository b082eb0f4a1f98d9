"""Parsing forecast requests of both protocols into one ``ForecastQuery``.

Every rejection names the field and what is allowed, and becomes a 400 response.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
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
#: the largest magnitude of a history value: far beyond any measured quantity, and small
#: enough that the models' squares and products of values (variances, likelihoods) stay
#: finite in float64 (1e308 would overflow them: "no model able to be fitted")
MAX_ABS_VALUE = 1e100


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


# an int is a number too (strict: no strings, no booleans)
Number = StrictFloat


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
    """The first problems, each as ``field: what is wrong (got <value>)``."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        # a validator's own message says it all, without pydantic's "Value error, "
        error = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
        message = str(error) if error is not None else err["msg"]
        got = err.get("input")
        if err["type"] != "value_error" and isinstance(got, str | int | float | None):
            got_text = repr(got)
            message += f" (got {got_text if len(got_text) <= 40 else got_text[:37] + '...'})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def check_h(h: Any, default: int, max_h: int, field: str = "parameters.h") -> int:
    """The horizon asked for (``default`` when absent), an integer in 1..``max_h``."""
    if h is None:
        return default
    if isinstance(h, bool) or not isinstance(h, int | np.integer):
        raise RequestError(f"{field} must be an integer in 1..{max_h}, got {h!r}")
    if not 1 <= int(h) <= max_h:
        raise RequestError(f"{field}={h} is outside 1..{max_h}, the model's maximum horizon")
    return int(h)


def check_levels(levels: Any, default: list[float], field: str = "parameters.level") -> list[float]:
    """Interval levels asked for (``default`` when absent): sorted, unique, in (0, 100)."""
    if levels is None:
        return list(default)
    out = []
    for level in levels:
        try:
            value = float(level)
        except (TypeError, ValueError):
            value = math.nan
        if isinstance(level, bool) or not (math.isfinite(value) and 0 < value < 100):
            raise RequestError(
                f"{field} {level!r} is outside (0, 100); use coverage percentages such as 80 or 95"
            )
        out.append(value)
    if len(out) > MAX_LEVELS:
        raise RequestError(f"{field} has {len(out)} levels; at most {MAX_LEVELS}")
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
            times = _parse_times(ds)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"{field}: {_unreadable(ds)}") from exc
        if times.tz is not None:
            times = times.tz_convert(None)
        values = np.asarray(y, dtype=float)
        if not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise RequestError(f"{field}: y[{bad}] is {values[bad]}; send finite numbers only")
        if (np.abs(values) > MAX_ABS_VALUE).any():
            bad = int(np.flatnonzero(np.abs(values) > MAX_ABS_VALUE)[0])
            raise RequestError(
                f"{field}: y[{bad}] is {values[bad]:g}, beyond ±{MAX_ABS_VALUE:g}, the largest "
                "magnitude a model can forecast from; send the series' actual observations"
            )
        if len(times) > 1 and not (np.diff(times.asi8) > 0).all():
            raise RequestError(f"{field}: ds must be strictly increasing (sorted, no duplicates)")
        if not offset.is_on_offset(times[0]):
            raise RequestError(
                f"{field}: ds[0] {_stamp(times[0])} is not a period of the model's frequency "
                f"{freq!r}; periods are e.g. {_stamp(offset.rollback(times[0]))} and "
                f"{_stamp(offset.rollforward(times[0]))}"
            )
        expected = _grid(times[0].value, len(times), freq)
        if not np.array_equal(expected, times.asi8):
            bad = int(np.flatnonzero(expected != times.asi8)[0])
            raise RequestError(
                f"{field}: ds must be consecutive periods of the model's frequency {freq!r}: "
                f"ds[{bad}] is {_stamp(times[bad])}, expected {_stamp(pd.Timestamp(expected[bad]))}"
            )
        histories[uid] = SeriesHistory(times, values)
    return histories


# Dates and zone-less date-times of the years numpy's nanoseconds hold exactly
# ("2020-01-01", "2020-01-01T00:00:00.5"): numpy reads them ~8x faster than pandas'
# ISO 8601 parser, which reads (or refuses, naming why) everything else.
_PLAIN_ISO = re.compile(
    r"(?:17|18|19|20|21)\d\d-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?)?\Z"
)


def _parse_times(ds: list[str]) -> pd.DatetimeIndex:
    if all(_PLAIN_ISO.match(d) for d in ds):
        with contextlib.suppress(ValueError):  # e.g. day 30 of February: pandas says so
            return pd.DatetimeIndex(np.array(ds, dtype="datetime64[ns]"))
    return pd.DatetimeIndex(pd.to_datetime(ds, format="ISO8601"))


@functools.lru_cache(maxsize=1024)
def _grid(start: int, periods: int, freq: str) -> np.ndarray:
    """``periods`` consecutive periods of ``freq`` from ``start`` (ns), as int64: clients
    send the same recent months over and over, and ``date_range`` costs more than the
    rest of a history's checks."""
    grid = pd.date_range(pd.Timestamp(start), periods=periods, freq=freq).asi8.copy()
    grid.setflags(write=False)
    return grid


def _unreadable(ds: list[str]) -> str:
    """Which timestamp of ``ds`` cannot be read (called once parsing them all failed)."""
    for i, value in enumerate(ds):
        try:
            pd.to_datetime([value], format="ISO8601")
        except (ValueError, TypeError):
            return f"ds[{i}] {value!r} is not an ISO 8601 timestamp such as '2020-01-01'"
    return "ds mixes time zones; send all timestamps in one zone (or none)"


def _stamp(t: pd.Timestamp) -> str:
    return str(t.date()) if t == t.normalize() else t.isoformat()


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
    data = tensor.data
    if data is None or len(data) == 0:
        # a binary tensor (gRPC raw contents, REST's binary extension) has no data list
        data = _decoded(tensor, name).ravel().tolist()
    elif isinstance(data, np.ndarray):
        data = data.ravel().tolist()
    out = []
    for item in data:
        try:
            out.append(item.decode() if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError as exc:
            raise RequestError(f"input {name!r}: {item[:20]!r} is not UTF-8 text") from exc
    _check_shape(tensor, len(out), name)
    return out


def _floats(tensor, name: str) -> list[float]:
    if tensor.datatype not in ("FP64", "FP32", "INT64", "INT32"):
        raise RequestError(f"input {name!r} must be FP64 or FP32, got {tensor.datatype}")
    values = np.asarray(_decoded(tensor, name), dtype=float).ravel().tolist()
    _check_shape(tensor, len(values), name)
    return values


def _decoded(tensor, name: str) -> np.ndarray:
    """The tensor as numpy, shaped as it declares (kserve decodes binary data)."""
    import struct

    try:
        return tensor.as_numpy()
    except (ValueError, TypeError, struct.error) as exc:
        raise RequestError(
            f"input {name!r}: cannot read its data as shape {list(tensor.shape or [])} of "
            f"{tensor.datatype} ({exc})"
        ) from exc


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
    parameters ``h`` (int) and ``level`` (number, or comma-separated string).

    The answer carries the request's own id when it has one (the protocol echoes it),
    else ``request_id``.
    """
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
    protocol = "grpc-v2" if getattr(request, "from_grpc", False) else "v2"
    return ForecastQuery(
        ids, h, levels, series_histories(rows, freq), protocol, request.id or request_id
    )


def _param_value(value: Any) -> Any:
    """Unwrap a gRPC ``InferParameter`` (its one set field); REST gives plain values."""
    which = getattr(value, "WhichOneof", None)
    if which is None:
        return value
    field = which("parameter_choice")
    return None if field is None else getattr(value, field)
