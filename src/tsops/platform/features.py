"""The Feast feature store: each series' latest observations, and the gbm's lag/rolling
features, online for the model server.

The feature repository is ``features/`` (``feature_store.yaml``; ``series.py`` defines
the views of every model for the ``feast`` command line). Per model, two feature views
on the entity ``series`` (join key ``unique_id``):

``<model>_recent`` (e.g. ``m3_monthly_recent``)
    ``cutoff`` (the series' last observed period) and ``y`` (its last ``periods``
    values, oldest first, ending at ``cutoff``): the history a forecast starts from,
    long enough for every member of the model (``history_periods``).
``<model>_<gbm candidate>`` (e.g. ``m3_monthly_gbm``)
    the global model's features of the period after ``cutoff`` (``lag_1`` ...,
    ``mean_<w>``, ``std_<w>``, calendar columns, and ``scale``), computed by
    ``tsops.forecasters.features.feature_matrix``, the function training uses:
    the row a gbm's first forecast step is made of.

The offline store holds one row per observation (the window as it stood at each
period, so a training set can be joined point-in-time); ``materialize`` writes those
tables from ``data/<model>/series.parquet`` and loads the latest row of every series
into the online store (SQLite by default, Redis when ``TSOPS_FEATURE_STORE_REDIS_URL``
is set). ``OnlineHistory`` is the server's side: the latest actuals of the series a
request names, as the same ``SeriesHistory`` that history sent in a request becomes.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tsops.core.config import ModelConfig
from tsops.core.errors import TsopsError
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.forecasters.base import SeriesHistory
from tsops.forecasters.features import FeatureSpec, default_spec, feature_matrix, sliding_windows

log = logging.getLogger(__name__)

#: the feature repository's folder, relative to the project root
DEFAULT_REPO = Path("features")
CONFIG_FILE = "feature_store.yaml"
#: the entity of every view: one series, joined on the long frame's id column
ENTITY = "series"
#: where ``materialize`` writes the offline tables, inside the repository
OFFLINE_DIR = "data/offline"
CUTOFF = "cutoff"
#: the offline tables' event time: a copy of ``cutoff``, which is a feature itself (the
#: server reads it), kept apart from the column Feast orders and filters rows by
EVENT_TIME = "event_time"
SCALE = "scale"
#: seconds a server waits for Redis before answering from the model's cutoff
SERVING_TIMEOUT = 0.5
#: seconds a server skips the online store after it failed (then tries again)
RETRY_AFTER = 5.0


class FeatureStoreError(TsopsError):
    """The feature store cannot be used as asked; the message says what to fix."""


# -- names and configuration ------------------------------------------------------------


def view_name(model: str, kind: str) -> str:
    """``m3-monthly``, ``recent`` -> ``m3_monthly_recent`` (Feast names are identifiers)."""
    return f"{model.replace('-', '_')}_{kind}"


def history_periods(config: ModelConfig) -> int:
    """Observations kept per series: enough for every member of the model to start
    from them alone (the gbm's longest lag or window; two seasons and a horizon, the
    shortest series the regular candidates are fitted on)."""
    return max([config.min_length, *(spec.lookback for spec in gbm_specs(config).values())])


def gbm_specs(config: ModelConfig) -> dict[str, FeatureSpec]:
    """Each gbm candidate's name (its intermittent class' too) and feature spec, as
    ``GlobalGBM`` builds it from the same parameters."""
    candidates = dict(config.candidates)
    candidates.update(getattr(config.intermittent, "candidates", None) or {})
    specs = {}
    for name, candidate in candidates.items():
        if candidate.kind != "gbm":
            continue
        params = candidate.params
        specs[name] = default_spec(
            config.freq,
            config.season_length,  # model.yaml's top level only (a reserved parameter)
            params.get("lags"),
            params.get("windows"),
            bool(params.get("calendar", True)),
        )
    return specs


def redis_connection_string(url: str, timeout: float) -> str:
    """A ``redis://`` URL as Feast's Redis connection string (``host:port,db=0,...``).

    Feast splits that string on commas and ``=``, so a password holding either cannot
    be passed through it.
    """
    from redis.connection import SSLConnection, parse_url

    try:
        parts = parse_url(url)
    except ValueError as exc:
        raise FeatureStoreError(
            f"TSOPS_FEATURE_STORE_REDIS_URL is not a Redis URL ({exc}); use "
            "redis://[[user]:password@]host:port[/db] (rediss:// for TLS)"
        ) from exc
    host, port = parts.get("host", "localhost"), parts.get("port", 6379)
    fields = [f"{host}:{port}", f"db={int(parts.get('db', 0))}"]
    for key in ("username", "password"):
        value = parts.get(key)
        if value:
            if "," in value or "=" in value:
                raise FeatureStoreError(
                    f"the Redis {key} holds ',' or '=', which Feast's connection string "
                    "cannot carry; choose one without them"
                )
            fields.append(f"{key}={value}")
    if parts.get("connection_class") is SSLConnection:
        fields.append("ssl=true")
    fields += [f"socket_timeout={timeout}", f"socket_connect_timeout={timeout}"]
    return ",".join(fields)


def describe_online_store(redis_url: str | None, repo: Path) -> str:
    """Where the online store is, for messages (no password)."""
    if not redis_url:
        return f"SQLite {Path(repo) / 'data' / 'online.db'}"
    from redis.connection import parse_url

    parts = parse_url(redis_url)
    return f"Redis {parts.get('host', 'localhost')}:{parts.get('port', 6379)}/{parts.get('db', 0)}"


#: what importing feast sets when unset (feast.metrics), put back by import_feast
FEAST_METRICS_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def import_feast() -> None:
    """Import feast without its change to the process: the package imports
    ``feast.metrics``, which puts a folder of its own (deleted at exit) in
    PROMETHEUS_MULTIPROC_DIR. That switches prometheus_client to multiprocess mode for
    the metrics made afterwards and for every process started afterwards, whose
    metrics then fail once the folder is gone (the model server's first request did).
    prometheus_client is imported first, so the process keeps the mode its own
    environment chose, and the variables are put back as they were."""
    import os
    import sys

    if "feast" in sys.modules:
        return
    import prometheus_client  # noqa: F401 - its mode is decided before feast's change

    before = {name: os.environ.get(name) for name in FEAST_METRICS_VARIABLES}
    try:
        import feast  # noqa: F401
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def repo_config(
    repo: Path,
    redis_url: str | None = None,
    registry_url: str | None = None,
    timeout: float = 5.0,
):
    """``features/feature_store.yaml`` as Feast's ``RepoConfig``, its online store
    replaced by Redis at ``redis_url`` and its registry by the SQL database at
    ``registry_url`` when given (the environment's, read by ``Settings``: no secret
    is written in the file)."""
    import_feast()
    from feast.repo_config import RepoConfig
    from pydantic import ValidationError
    from ruamel.yaml import YAML

    repo = Path(repo).resolve()
    path = repo / CONFIG_FILE
    if not path.is_file():
        raise FeatureStoreError(
            f"{repo} is not a Feast feature repository: {CONFIG_FILE} is missing; give the "
            "project's features/ folder (--feature_store features / --repo features)"
        )
    raw = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    if redis_url:
        raw["online_store"] = {
            "type": "redis",
            "connection_string": redis_connection_string(redis_url, timeout),
        }
    if registry_url:
        raw["registry"] = {
            "registry_type": "sql",
            "path": registry_url,
            "cache_ttl_seconds": raw.get("registry", {}).get("cache_ttl_seconds", 60),
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        }
    try:
        config = RepoConfig(**raw)
    except ValidationError as exc:
        raise FeatureStoreError(f"{path} is not a valid Feast configuration: {exc}") from exc
    config.repo_path = repo
    return config


def open_store(
    repo: Path,
    redis_url: str | None = None,
    registry_url: str | None = None,
    timeout: float = 5.0,
):
    """The ``feast.FeatureStore`` of ``repo`` (``repo_config``)."""
    import_feast()
    from feast import FeatureStore

    config = repo_config(repo, redis_url, registry_url, timeout)
    if not (redis_url and registry_url):  # a SQLite file of the repository's is in use
        (config.repo_path / "data").mkdir(parents=True, exist_ok=True)
    store = FeatureStore(repo_path=str(config.repo_path), config=config)
    if redis_url:
        _fail_fast(store)
    return store


def _fail_fast(store) -> None:
    """Redis commands that fail at once when Redis is down: redis-py retries a failed
    command three times, sleeping up to 10 s in between, by default, and a forecast
    request would wait that long. Retries where they help are tsops' own (tenacity,
    around materialisation). Feast builds its client from the connection string,
    which cannot carry a retry policy, so the policy is set on Feast's client."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    online = store._get_provider().online_store
    client = online._get_client(store.config.online_store)
    client.set_retry(Retry(NoBackoff(), 0))


# -- the tables -----------------------------------------------------------------------------


def _event_times(ds: Any) -> pd.DatetimeIndex:
    """Period timestamps as the UTC event times Feast wants (periods carry no zone)."""
    times = pd.DatetimeIndex(ds)
    return times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")


def recent_table(frame: pd.DataFrame, periods: int) -> pd.DataFrame:
    """One row per observation of a sorted long frame: ``unique_id``, ``cutoff`` (its
    period, also the row's event time) and ``y``, the series' last ``periods`` values
    up to and including it (fewer at the start of a series)."""
    ids, cutoffs, windows = [], [], []
    for uid, group in frame.groupby(ID_COL, sort=True, observed=True):
        y = group[TARGET_COL].to_numpy(dtype=float)
        windows += [y[max(0, end - periods) : end].tolist() for end in range(1, len(y) + 1)]
        ids.append(np.repeat(str(uid), len(y)))
        cutoffs.append(group[TIME_COL].to_numpy())
    if not ids:
        return pd.DataFrame(
            {
                ID_COL: pd.Series(dtype=str),
                CUTOFF: pd.Series(dtype="datetime64[ns, UTC]"),
                TARGET_COL: pd.Series(dtype=object),
            }
        )
    return pd.DataFrame(
        {
            ID_COL: np.concatenate(ids),
            CUTOFF: _event_times(np.concatenate(cutoffs)),
            TARGET_COL: windows,
        }
    )


def gbm_table(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """One row per observation of a sorted long frame: ``unique_id``, ``cutoff`` (its
    period) and the features of the period after it (``spec.names``) with the window's
    ``scale``, from ``feature_matrix``: the rows ``training_matrix`` makes for those
    periods once they are observed, and ``next_step_features`` for the next one."""
    offset = pd.tseries.frequencies.to_offset(spec.freq)
    parts = []
    for uid, group in frame.groupby(ID_COL, sort=True, observed=True):
        y = group[TARGET_COL].to_numpy(dtype=float)
        windows = sliding_windows(np.append(y, np.nan), spec.lookback)[1:]
        cutoff = pd.DatetimeIndex(group[TIME_COL])
        X, scale = feature_matrix(windows, cutoff + offset, spec)
        part = pd.DataFrame(X, columns=spec.names)
        part[SCALE] = scale
        part.insert(0, CUTOFF, _event_times(cutoff))
        part.insert(0, ID_COL, str(uid))
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=[ID_COL, CUTOFF, *spec.names, SCALE])
    return pd.concat(parts, ignore_index=True)


# -- the definitions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelViews:
    """A model's feature views: the latest observations, and one per gbm candidate."""

    model: str
    recent: str
    #: candidate name -> (view name, its feature spec)
    gbm: dict[str, tuple[str, FeatureSpec]]

    @property
    def names(self) -> list[str]:
        return [self.recent, *(name for name, _ in self.gbm.values())]


def model_views(model: str, config: ModelConfig) -> ModelViews:
    gbm = {
        candidate: (view_name(model, candidate), spec)
        for candidate, spec in gbm_specs(config).items()
    }
    return ModelViews(model, view_name(model, "recent"), gbm)


def offline_path(model: str, view: str) -> str:
    """A view's offline table, relative to the repository (as the registry stores it)."""
    return f"{OFFLINE_DIR}/{model}/{view}.parquet"


def definitions(model: str, config: ModelConfig) -> list[Any]:
    """The Feast objects of ``model``: the entity ``series`` and its feature views."""
    import_feast()
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float64, UnixTimestamp

    views = model_views(model, config)
    entity = Entity(
        name=ENTITY,
        join_keys=[ID_COL],
        value_type=ValueType.STRING,
        description="one time series (the long frame's unique_id)",
    )
    tags = {"tsops_model": model, "freq": config.freq}
    objects: list[Any] = [entity]
    recent_source = FileSource(
        name=f"{views.recent}_source",
        path=offline_path(model, views.recent),
        timestamp_field=EVENT_TIME,
    )
    objects.append(
        FeatureView(
            name=views.recent,
            entities=[entity],
            ttl=timedelta(0),  # never expires: the latest actual stays the latest
            schema=[
                Field(name=CUTOFF, dtype=UnixTimestamp),
                Field(name=TARGET_COL, dtype=Array(Float64)),
            ],
            source=recent_source,
            online=True,
            description=f"{model}: each series' last observed period (cutoff) and its last "
            f"{history_periods(config)} values (y), oldest first",
            tags=tags,
        )
    )
    for candidate, (name, spec) in views.gbm.items():
        source = FileSource(
            name=f"{name}_source", path=offline_path(model, name), timestamp_field=EVENT_TIME
        )
        objects.append(
            FeatureView(
                name=name,
                entities=[entity],
                ttl=timedelta(0),
                schema=[Field(name=CUTOFF, dtype=UnixTimestamp)]
                + [Field(name=col, dtype=Float64) for col in (*spec.names, SCALE)],
                source=source,
                online=True,
                description=f"{model}: candidate {candidate}'s features of the period after "
                "each series' cutoff (tsops.forecasters.features.feature_matrix)",
                tags=dict(tags, candidate=candidate),
            )
        )
    return objects


# -- materialisation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Materialized:
    """What ``materialize`` loaded into the online store."""

    model: str
    views: list[str]
    series: int
    periods: int
    latest: pd.Timestamp
    online_store: str
    seconds: float


def materialize(
    root: Path,
    model: str,
    repo: Path = DEFAULT_REPO,
    *,
    redis_url: str | None = None,
    registry_url: str | None = None,
    periods: int | None = None,
    attempts: int = 4,
) -> Materialized:
    """Write ``model``'s offline tables from ``data/<model>/series.parquet``, apply its
    definitions and load the latest row of every series into the online store."""
    from tsops.core.config import load

    started = time.perf_counter()
    config, paths = load(Path(root), model)
    if not paths.data.exists():
        raise FeatureStoreError(
            f"{paths.data} does not exist: run `tsops ingest {model}` (or `dvc repro`) first"
        )
    frame = pd.read_parquet(paths.data).sort_values([ID_COL, TIME_COL], kind="stable")
    if frame.empty:
        raise FeatureStoreError(f"{paths.data} holds no observations: ingest the series first")
    periods = periods or history_periods(config)
    views = model_views(model, config)
    repo = Path(root) / repo if not Path(repo).is_absolute() else Path(repo)
    tables = {views.recent: recent_table(frame, periods)}
    for name, spec in views.gbm.values():
        tables[name] = gbm_table(frame, spec)
    store = open_store(repo, redis_url, registry_url)
    for name, table in tables.items():
        _write_offline(store.config.repo_path / offline_path(model, name), table)
    latest = pd.Timestamp(frame[TIME_COL].max())
    start = _event_times([frame[TIME_COL].min()])[0].to_pydatetime()
    end = (_event_times([latest])[0] + pd.Timedelta(seconds=1)).to_pydatetime()
    _with_retries(
        lambda: _apply_and_load(store, model, config, views.names, start, end),
        redis_url,
        attempts,
    )
    return Materialized(
        model,
        views.names,
        int(frame[ID_COL].nunique()),
        periods,
        latest,
        describe_online_store(redis_url, repo),
        time.perf_counter() - started,
    )


def apply(
    root: Path,
    model: str,
    repo: Path = DEFAULT_REPO,
    *,
    redis_url: str | None = None,
    registry_url: str | None = None,
) -> list[str]:
    """Register ``model``'s entity and feature views; the names of the views."""
    from tsops.core.config import load

    config, _ = load(Path(root), model)
    repo = Path(root) / repo if not Path(repo).is_absolute() else Path(repo)
    store = open_store(repo, redis_url, registry_url)
    _with_retries(lambda: _quiet(store.apply, definitions(model, config)), redis_url)
    return model_views(model, config).names


def _apply_and_load(store, model, config, names, start, end) -> None:
    _quiet(store.apply, definitions(model, config))
    _quiet(store.materialize, start, end, feature_views=names)


def _quiet(call, *args, **kwargs):
    """Feast prints progress (and tqdm bars) to stdout/stderr; tsops reports its own."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return call(*args, **kwargs)


def _with_retries(call, redis_url: str | None, attempts: int = 4):
    """``call()``, retried while Redis refuses connections (it may be restarting); a
    Redis that stays down is reported with what to check."""
    import redis.exceptions
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_exponential,
    )

    retrying = Retrying(
        retry=retry_if_exception_type(
            (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        ),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=4),
    )
    try:
        return retrying(call)
    except RetryError as exc:
        error = exc.last_attempt.exception()
        raise FeatureStoreError(
            f"the online store at {describe_online_store(redis_url, DEFAULT_REPO)} is not "
            f"reachable ({error}), after {attempts} attempt(s); start Redis or fix "
            "TSOPS_FEATURE_STORE_REDIS_URL, then run the command again (it is safe to repeat)"
        ) from error


def _write_offline(path: Path, table: pd.DataFrame) -> None:
    """The offline table, written then renamed (a reader never sees half of it)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.copy()
    table[EVENT_TIME] = table[CUTOFF]
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


# -- serving ------------------------------------------------------------------------------------


class OnlineFeatures:
    """The online store, opened once per server, shared by its models."""

    def __init__(
        self,
        repo: Path,
        redis_url: str | None = None,
        registry_url: str | None = None,
        timeout: float = SERVING_TIMEOUT,
    ):
        self.repo = Path(repo)
        self.redis_url = redis_url
        self.registry_url = registry_url
        self.timeout = timeout
        self._store = None

    @property
    def where(self) -> str:
        return describe_online_store(self.redis_url, self.repo)

    def open(self) -> OnlineFeatures:
        if self._store is None:
            store = open_store(self.repo, self.redis_url, self.registry_url, self.timeout)
            # the views a server reads are registered before it starts: reading the
            # registry once at load keeps it off the request path (and out of forked
            # workers, which must not share the registry's database connection)
            store.config.registry.cache_ttl_seconds = 0
            self._store = store
        return self

    def history_of(self, model: str, freq: str, retry_after: float = RETRY_AFTER) -> OnlineHistory:
        """The lookup of ``model``'s latest observations (its ``_recent`` view must be
        registered: ``tsops features materialize <model>`` does it)."""
        import_feast()
        from feast.errors import FeatureViewNotFoundException

        self.open()
        name = view_name(model, "recent")
        try:
            view = self._store.get_feature_view(name)
        except FeatureViewNotFoundException as exc:
            raise FeatureStoreError(
                f"the feature store {self.repo} has no feature view {name!r} for model "
                f"{model!r}: run `tsops features materialize {model}` first"
            ) from exc
        except Exception as exc:  # the registry's database, unreachable or wrong
            raise FeatureStoreError(
                f"cannot read the feature registry of {self.repo} ({type(exc).__name__}: "
                f"{exc}); check TSOPS_FEATURE_REGISTRY_URL or run `tsops features apply {model}`"
            ) from exc
        view_freq = view.tags.get("freq")
        if view_freq and view_freq != freq:
            raise FeatureStoreError(
                f"feature view {name!r} holds {view_freq!r} periods but the model forecasts "
                f"{freq!r} ones: materialise the model's own data (`tsops features "
                f"materialize {model}`)"
            )
        return OnlineHistory(self._store, name, freq, self.where, retry_after)


class OnlineHistory:
    """The latest observations of one model's series, as ``SeriesHistory`` (what history
    sent in a request becomes), for the model server.

    A store that fails (Redis down or restarting) is skipped for ``retry_after``
    seconds, so that requests in the meantime pay nothing for it; ``latest`` then
    returns no history and the reason, and the caller answers from the model's cutoff.
    """

    def __init__(self, store, view: str, freq: str, where: str, retry_after: float):
        self.store = store
        self.view = view
        self.freq = freq
        self.where = where
        self.retry_after = retry_after
        self._features = [f"{view}:{CUTOFF}", f"{view}:{TARGET_COL}"]
        self._failed_until = 0.0
        self._problem: str | None = None
        self._lock = threading.Lock()

    def latest(self, ids: Sequence[str]) -> tuple[dict[str, SeriesHistory], str | None]:
        """The stored history of each of ``ids`` the store has, and ``None``; or no
        history and why the store could not be read."""
        if not ids:
            return {}, None
        if time.monotonic() < self._failed_until:
            return {}, self._problem
        try:
            rows = self.store.get_online_features(
                features=self._features, entity_rows={ID_COL: list(ids)}
            ).to_dict()
        except Exception as exc:  # any failure of the store: answer without it
            with self._lock:
                self._failed_until = time.monotonic() + self.retry_after
                self._problem = (
                    f"the online store ({self.where}) failed: {type(exc).__name__}: {exc}; "
                    f"forecasts start from the model's cutoff, the store is tried again in "
                    f"{self.retry_after:g} s"
                )
            log.warning("%s", self._problem)
            return {}, self._problem
        out = {}
        for uid, cutoff, values in zip(rows[ID_COL], rows[CUTOFF], rows[TARGET_COL], strict=True):
            if cutoff is None or not values:
                continue
            end = pd.Timestamp(cutoff)
            if end.tz is not None:
                end = end.tz_convert(None)
            y = np.asarray(values, dtype=float)
            out[uid] = SeriesHistory(_periods_until(end.value, len(y), self.freq), y)
        return out, None


@functools.lru_cache(maxsize=4096)
def _periods_until(end: int, periods: int, freq: str) -> pd.DatetimeIndex:
    """The ``periods`` consecutive periods of ``freq`` ending at ``end`` (ns): most
    series of a model end on the same period, and ``date_range`` costs more than the
    lookup."""
    return pd.date_range(end=pd.Timestamp(end), periods=periods, freq=freq)
