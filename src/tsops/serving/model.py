"""The KServe model: one registered tsops model behind the V1 and V2 protocols.

Follows kserve's own sklearnserver: ``__init__`` is cheap, ``load()`` loads and sets
``ready`` (a model that cannot be loaded raises ``ModelLoadError`` to the server's
entry point), bad input raises ``InvalidInput`` (HTTP 400, gRPC INVALID_ARGUMENT),
nothing else leaks out as a 500. Forecasts without history come from a table
computed once at load time (the model's cutoff never moves between requests), so the
request path is a lookup.

With a feature store (``tsops serve --feature_store``), a series named without history
is forecast from its latest actuals in the online store when they are newer than the
model's cutoff: the same path as history sent in a request, which still wins. Every
answer then says per series where its cutoff came from (``cutoff_source``: ``model``,
``request`` or ``feature_store``); a store that cannot be read leaves the forecasts at
the model's cutoff and says why (``feature_store_error``), never failing the request.

Every logged forecast has a ``role``: ``shadow`` when the request is a copy another
server forwarded (header ``tsops-shadow: 1``, ``tsops.serving.shadow``), else ``live``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter

from tsops.core.schema import CUTOFF_COL, ID_COL, MEAN_COL, TIME_COL, hi_col, lo_col
from tsops.forecasters.base import ForecastError, SeriesForecast
from tsops.registry.loading import LoadedModel, load_model
from tsops.serving.forecast_log import ROLE_COL, ROLE_LIVE, ForecastLog
from tsops.serving.requests import ForecastQuery, RequestError, parse_v1, parse_v2
from tsops.serving.shadow import role_of

FORECASTS = Counter(
    "tsops_forecasts_total",
    "Series forecasts served",
    ["model", "version", "history"],
)
REJECTED = Counter("tsops_rejected_requests_total", "Requests answered with a 4xx", ["model"])
STORE_ERRORS = Counter(
    "tsops_feature_store_errors_total",
    "Requests answered from the model's cutoff because the feature store failed",
    ["model"],
)
#: where a forecast's cutoff came from (``cutoff_source``)
FROM_MODEL, FROM_REQUEST, FROM_STORE = "model", "request", "feature_store"
CUTOFF_SOURCE = "cutoff_source"
log = logging.getLogger(__name__)


class ForecastModel(Model):
    """Serves one tsops model under ``name`` (e.g. ``m3-monthly`` or ``challenger``)."""

    def __init__(
        self,
        name: str,
        reference: str,
        forecast_log: ForecastLog | None = None,
        registry: Any = None,
        default_version: str | None = None,
        feature_store: Any = None,
    ):
        super().__init__(name)
        self.reference = reference
        self.forecast_log = forecast_log
        # the MlflowClient for a models:/ reference (registry.loading.registry_for), and
        # the version a local directory without release.json reports
        self.registry = registry
        self.default_version = default_version
        # tsops.platform.features.OnlineFeatures: the latest actuals, looked up per request
        self.feature_store = feature_store
        self.online: Any = None
        self.loaded: LoadedModel | None = None
        self.ready = False

    # -- lifecycle -----------------------------------------------------------------------

    def load(self) -> bool:
        self.loaded = load_model(
            self.reference, self.registry, default_version=self.default_version
        )
        spec = self.loaded.spec
        self.freq = spec["freq"]
        self.horizon = int(spec["horizon"])
        self.max_horizon = int(spec["max_horizon"])
        self.levels = [float(x) for x in spec["levels"]]
        cutoffs = self.loaded.forecaster.cutoffs_
        self.series = set(map(str, cutoffs.index))
        self._table = self._precompute()
        if self.feature_store is not None:
            # the views are the model folder's (m3-monthly), whatever the served name
            self.online = self.feature_store.history_of(spec["config"]["name"], self.freq)
            self._cutoff_ns = {str(u): pd.Timestamp(t).value for u, t in cutoffs.items()}
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        """V2 metadata: the tensors a request may carry."""
        return [
            {"name": ID_COL, "datatype": "BYTES", "shape": [-1]},
            {"name": "history_unique_id", "datatype": "BYTES", "shape": [-1]},
            {"name": "history_ds", "datatype": "BYTES", "shape": [-1]},
            {"name": "history_y", "datatype": "FP64", "shape": [-1]},
            {"name": "level", "datatype": "FP64", "shape": [-1]},
        ]

    def get_output_types(self) -> list[dict]:
        outputs = [
            {"name": ID_COL, "datatype": "BYTES", "shape": [-1]},
            {"name": CUTOFF_COL, "datatype": "BYTES", "shape": [-1]},
            {"name": TIME_COL, "datatype": "BYTES", "shape": [-1, -1]},
            {"name": MEAN_COL, "datatype": "FP64", "shape": [-1, -1]},
        ]
        if self.feature_store is not None:
            outputs.insert(2, {"name": CUTOFF_SOURCE, "datatype": "BYTES", "shape": [-1]})
        for level in getattr(self, "levels", []):
            for col in (lo_col(level), hi_col(level)):
                outputs.append({"name": col, "datatype": "FP64", "shape": [-1, -1]})
        return outputs

    def stop(self) -> None:
        if self.forecast_log is not None:
            self.forecast_log.close()

    def _precompute(self) -> dict[str, dict[str, Any]]:
        """Forecasts from the cutoff at the maximum horizon and the default levels, as
        the JSON-ready lists a response slices."""
        forecasts = self.loaded.forecaster.predict_series(self.max_horizon, self.levels)
        return {f.unique_id: _result(f) for f in forecasts}

    # -- request path --------------------------------------------------------------------

    def _request_id(self, headers: dict[str, str] | None) -> str:
        return (headers or {}).get("x-request-id") or uuid.uuid4().hex

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None):
        kwargs = {
            "default_h": self.horizon,
            "max_h": self.max_horizon,
            "default_levels": self.levels,
            "freq": self.freq,
            "request_id": self._request_id(headers),
        }
        try:
            if isinstance(payload, bytes | bytearray):
                payload = _json_body(payload)
            if isinstance(payload, InferRequest):
                query = parse_v2(payload, **kwargs)
            else:
                query = parse_v1(payload, **kwargs)
            unknown = [u for u in query.ids if u not in self.series]
            if unknown:
                raise RequestError(
                    f"unique_id {unknown[:3]} not known to model {self.name!r} "
                    f"({len(self.series)} series, e.g. {sorted(self.series)[:3]}); "
                    "ask for series the model was trained on"
                )
        except RequestError as exc:
            REJECTED.labels(self.name).inc()
            raise InvalidInput(str(exc)) from exc
        return query

    def predict(self, query: ForecastQuery, headers: dict[str, str] | None = None):
        history, served = query.history, None
        if self.online is not None:
            history, served = self._online_history(query)
        try:
            results = self._forecast(query, history)
        except Exception as exc:
            # a 400 over history the request sent stays its answer
            if history is query.history or (isinstance(exc, InvalidInput) and query.history):
                raise
            # the stored actuals cannot be forecast from: answer as the store were down
            served = self._store_failed(
                query, f"forecasting from the online store's actuals failed ({exc})"
            )
            history = query.history
            results = self._forecast(query, history)
        version = self.loaded.version
        label = "true" if query.history else ("feature_store" if history else "false")
        FORECASTS.labels(self.name, version, label).inc(len(results))
        if self.forecast_log is not None:
            # per-target records are built by the log's writer thread, off the request path
            self.forecast_log.append(self._log_meta(query, role_of(headers)), results)
        if query.protocol == "grpc-v2":
            return self._grpc_response(query, results, served)
        if query.protocol == "v2":
            return self._v2_response(query, results, served)
        answer = {
            "model_name": self.name,
            "model_version": version,
            "registered_model": self.loaded.registered_name,
            "request_id": query.request_id,
            "predictions": results,
        }
        if served is not None:
            answer["predictions"] = [
                dict(r, **{CUTOFF_SOURCE: s}) for r, s in zip(results, served.sources, strict=True)
            ]
            if served.problem:
                answer["feature_store_error"] = served.problem
        return answer

    def _forecast(self, query: ForecastQuery, history: Any) -> list[dict[str, Any]]:
        if history is None and set(query.levels) <= set(self.levels):
            return [self._from_table(uid, query.h, query.levels) for uid in query.ids]
        return self._compute(query, history)

    def _online_history(self, query: ForecastQuery) -> tuple[Any, ServedCutoffs]:
        """The request's history, with the online store's latest actuals for the series
        it sent none for, where they end after the model's cutoff (else the model's
        own forecast is the same one, precomputed)."""
        sent = query.history or {}
        stored, problem = self.online.latest([u for u in query.ids if u not in sent])
        if problem is not None:
            return query.history, self._store_failed(query, problem, logged=True)
        newer = {
            uid: found for uid, found in stored.items() if found.ds[-1].value > self._cutoff_ns[uid]
        }
        sources = [
            FROM_REQUEST if uid in sent else FROM_STORE if uid in newer else FROM_MODEL
            for uid in query.ids
        ]
        if not newer:
            return query.history, ServedCutoffs(sources)
        return {**newer, **sent}, ServedCutoffs(sources)

    def _store_failed(
        self, query: ForecastQuery, problem: str, logged: bool = False
    ) -> ServedCutoffs:
        STORE_ERRORS.labels(self.name).inc()
        if not logged:
            log.warning("model %s: %s", self.name, problem)
        sent = query.history or {}
        return ServedCutoffs(
            [FROM_REQUEST if uid in sent else FROM_MODEL for uid in query.ids], problem
        )

    def _from_table(self, uid: str, h: int, levels: list[float]) -> dict[str, Any]:
        entry = self._table[uid]
        out: dict[str, Any] = {
            ID_COL: uid,
            CUTOFF_COL: entry[CUTOFF_COL],
            TIME_COL: entry[TIME_COL][:h],
        }
        out[MEAN_COL] = entry[MEAN_COL][:h]
        for level in levels:
            out[lo_col(level)] = entry[lo_col(level)][:h]
            out[hi_col(level)] = entry[hi_col(level)][:h]
        return out

    def _compute(self, query: ForecastQuery, history: Any) -> list[dict[str, Any]]:
        """Forecasts of ``query``'s series from ``history`` (the request's, or with the
        feature store's); the 400s name the history the request sent."""
        forecaster = self.loaded.forecaster
        try:
            forecasts = forecaster.predict_series(query.h, query.levels, history, query.ids)
        except ForecastError as exc:
            REJECTED.labels(self.name).inc()
            raise InvalidInput(str(exc)) from exc
        except Exception as exc:
            # The model re-filters (and some members re-fit) on the history sent: values
            # it cannot fit (e.g. 1e308) make statsforecast raise a bare Exception. That
            # is the request's data, a 400 naming the series; without history the
            # forecasts come from the table, so a failure there stays a server error.
            if not query.history:
                raise
            REJECTED.labels(self.name).inc()
            raise InvalidInput(self._unfittable(query, exc)) from exc
        if query.history:
            for forecast in forecasts:
                if forecast.unique_id in query.history and not _finite(forecast):
                    REJECTED.labels(self.name).inc()
                    raise InvalidInput(
                        _history_problem(
                            f"history of {forecast.unique_id!r}",
                            query.history[forecast.unique_id].y,
                            "its forecast is not finite (the values overflow the model's "
                            "arithmetic)",
                        )
                    )
        return [_result(f) for f in forecasts]

    def _unfittable(self, query: ForecastQuery, error: Exception) -> str:
        """The 400 message for history the model failed on: which series (each tried
        alone, on this rare path only) and why."""
        reason = f"the model cannot be fitted to it ({type(error).__name__}: {error})"
        for uid, history in query.history.items():
            try:
                self.loaded.forecaster.predict_series(query.h, query.levels, {uid: history}, [uid])
            except Exception as exc:
                reason = f"the model cannot be fitted to it ({type(exc).__name__}: {exc})"
                return _history_problem(f"history of {uid!r}", history.y, reason)
        # each series alone went through: only their combination fails
        names = ", ".join(map(repr, query.history))
        return _history_problem(f"history of {names}", None, reason)

    def _v2_response(
        self, query: ForecastQuery, results: list[dict[str, Any]], served: ServedCutoffs | None
    ) -> bytes:
        """The V2 response body, serialised here.

        kserve's own path (``InferResponse`` -> ``to_rest`` -> pydantic
        ``InferenceResponse`` -> FastAPI's encoder) cost half of a no-history V2
        request. kserve passes bytes from a model through untouched, as it does for
        binary tensors; ``RequestGuard`` gives them the JSON content type.
        """
        import orjson

        def tensor(name: str, shape: list[int], datatype: str, data: list) -> dict[str, Any]:
            return {
                "name": name,
                "shape": shape,
                "datatype": datatype,
                "parameters": None,
                "data": data,
            }

        outputs = _v2_tensors(results, query.h, tensor, served)
        return orjson.dumps(
            {
                "model_name": self.name,
                "model_version": self.loaded.version,
                "id": query.request_id,
                "parameters": served.parameters() if served is not None else None,
                "outputs": outputs,
            }
        )

    def _grpc_response(
        self, query: ForecastQuery, results: list[dict[str, Any]], served: ServedCutoffs | None
    ) -> InferResponse:
        """The V2 answer for a gRPC request: the REST body's tensors as raw (binary)
        contents, the form Triton answers in and tritonclient reads."""

        def tensor(name: str, shape: list[int], datatype: str, data: list) -> InferOutput:
            out = InferOutput(name, shape, datatype)
            dtype = object if datatype == "BYTES" else np.float64
            out.set_data_from_numpy(np.asarray(data, dtype=dtype).reshape(shape))
            return out

        outputs = _v2_tensors(results, query.h, tensor, served)
        return InferResponse(
            response_id=query.request_id,
            model_name=self.name,
            model_version=self.loaded.version,
            infer_outputs=outputs,
            from_grpc=True,
            use_binary_outputs=True,
            parameters=served.parameters() if served is not None else None,
        )

    def _log_meta(self, query: ForecastQuery, role: str = ROLE_LIVE) -> dict[str, Any]:
        return {
            "request_id": query.request_id,
            "model_name": self.name,
            "registered_model": self.loaded.registered_name,
            "model_version": self.loaded.version,
            "protocol": query.protocol,
            "with_history": query.history is not None,
            "served_at": time.time(),
            # a copy forwarded by a champion (header tsops-shadow: 1) is the shadow's
            ROLE_COL: role,
        }


def _json_body(raw: bytes) -> Any:
    """kserve hands over the raw body when the client sent no JSON content type."""
    import orjson

    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(
            f"body is not JSON ({exc}); send a JSON object with Content-Type: application/json"
        ) from exc


def _finite(forecast: SeriesForecast) -> bool:
    return all(np.isfinite(values).all() for values in forecast.values.values())


def _history_problem(subject: str, y: np.ndarray | None, reason: str) -> str:
    """Why ``subject`` (the history sent for a series) cannot be forecast from, and
    what to send instead."""
    scale = ""
    if y is not None and len(y):
        scale = f" (its values range from {float(np.min(y)):.6g} to {float(np.max(y)):.6g})"
    return (
        f"{subject}: {reason}{scale}; send the series' actual observations, on the scale "
        "the model was trained on"
    )


def _result(forecast: SeriesForecast) -> dict[str, Any]:
    """One series' answer: ISO timestamps and plain lists, ready for JSON."""
    out: dict[str, Any] = {
        ID_COL: forecast.unique_id,
        CUTOFF_COL: forecast.cutoff.isoformat(),
        TIME_COL: _iso(forecast.ds),
    }
    for col, values in forecast.values.items():
        out[col] = np.asarray(values, dtype=float).tolist()
    return out


def _iso(ds: pd.DatetimeIndex) -> list[str]:
    """``[t.isoformat() for t in ds]``, by numpy (6x faster) when every time is zone-less
    and a whole second, where the two agree."""
    if ds.tz is None and not (ds.asi8 % 1_000_000_000).any():
        return np.datetime_as_string(ds.values, unit="s").tolist()
    return [t.isoformat() for t in ds]


@dataclass(frozen=True)
class ServedCutoffs:
    """Where each answered series' cutoff came from (in the request's order), and why
    the feature store was not used when it failed."""

    sources: list[str]
    problem: str | None = None

    def parameters(self) -> dict[str, str] | None:
        """The V2 answer's parameters: the store's failure, if any."""
        return {"feature_store_error": self.problem} if self.problem else None


def _v2_tensors(
    results: list[dict[str, Any]], h: int, tensor: Any, served: ServedCutoffs | None = None
) -> list[Any]:
    """The V2 answer's tensors, each built by ``tensor(name, shape, datatype, data)``:
    REST and gRPC share the layout and differ only in the tensor's form."""
    n = len(results)
    outputs = [
        tensor(ID_COL, [n], "BYTES", [r[ID_COL] for r in results]),
        tensor(CUTOFF_COL, [n], "BYTES", [r[CUTOFF_COL] for r in results]),
        tensor(TIME_COL, [n, h], "BYTES", [t for r in results for t in r[TIME_COL]]),
    ]
    if served is not None:
        outputs.insert(2, tensor(CUTOFF_SOURCE, [n], "BYTES", served.sources))
    value_cols = [c for c in results[0] if c not in (ID_COL, CUTOFF_COL, TIME_COL)]
    for col in value_cols:
        outputs.append(tensor(col, [n, h], "FP64", [v for r in results for v in r[col]]))
    return outputs
