"""The Feast feature store on real Redis, SQLite and PostgreSQL: what ``materialize``
loads, the gbm's features as training computes them, a Redis that goes down and comes
back; and the model server's side (``ForecastModel`` with a feature store, its V1, V2
and gRPC answers), in this one file so that a test run imports Feast (seconds) once."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from tests.helpers.commands import ROOT, tsops
from tests.helpers.synthetic import make_series
from tsops.core.config import load
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.forecasters.features import training_matrix
from tsops.platform import features as store
from tsops.serving.model import STORE_ERRORS, ForecastModel

pytestmark = pytest.mark.integration

MODEL = "feat"
MODEL_YAML = """\
name: feat
source: {kind: file, path: series.csv}
freq: MS
horizon: 3
season_length: 4
levels: [80]
baseline: seasonal_naive
candidates:
  seasonal_naive: {kind: seasonal_naive}
  gbm: {kind: gbm, params: {lags: 6, windows: [3, 6]}}
backtest: {windows: 1, step: 3}
selection: {rule: median_ensemble}
fill: none
seed: 0
serving: {max_horizon: 6}
"""


def make_root(folder: Path, frame: pd.DataFrame, model: str = MODEL) -> Path:
    """A project with the model ``feat`` (or ``model``'s folder, left empty), its
    ingested series and the feature repository."""
    (folder / "models" / model).mkdir(parents=True)
    if model == MODEL:
        (folder / "models" / MODEL / "model.yaml").write_text(MODEL_YAML)
    (folder / "data" / model).mkdir(parents=True)
    frame.to_parquet(folder / "data" / model / "series.parquet", index=False)
    (folder / "features").mkdir()
    shutil.copy(ROOT / "features" / store.CONFIG_FILE, folder / "features")
    return folder


@pytest.fixture
def series() -> pd.DataFrame:
    return make_series(n_series=3, length=20, season_length=4, start="2020-01-01")


def test_materialize_loads_each_series_latest_window_and_gbm_features(tmp_path, series, redis_url):
    root = make_root(tmp_path, series)
    config, _ = load(root, MODEL)
    periods = store.history_periods(config)
    assert periods == config.min_length == 11  # two seasons and a horizon: beyond the gbm's 6

    done = store.materialize(root, MODEL, redis_url=redis_url)
    assert done.views == ["feat_recent", "feat_gbm"]
    assert (done.series, done.periods, done.latest) == (3, 11, series[TIME_COL].max())
    assert done.online_store.startswith("Redis 127.0.0.1:")

    online = store.OnlineFeatures(root / "features", redis_url).history_of(MODEL, "MS")
    found, problem = online.latest(["s0", "s2", "unknown"])
    assert problem is None and set(found) == {"s0", "s2"}
    for uid, history in found.items():
        tail = series[series[ID_COL] == uid].tail(periods)
        np.testing.assert_array_equal(history.y, tail[TARGET_COL].to_numpy())
        assert list(history.ds) == list(tail[TIME_COL])

    # the stored gbm features of the period after each cutoff are the row training
    # makes of that period once it is observed: one function computes both
    spec = store.gbm_specs(config)["gbm"]
    names = [*spec.names, store.SCALE]
    rows = (
        store.open_store(root / "features", redis_url)
        .get_online_features([f"feat_gbm:{n}" for n in names], {ID_COL: ["s1"]})
        .to_dict()
    )
    next_month = series[TIME_COL].max() + pd.offsets.MonthBegin()
    next_period = pd.DataFrame({ID_COL: ["s1"], TIME_COL: [next_month], TARGET_COL: 1.0})
    observed = pd.concat([series[series[ID_COL] == "s1"], next_period], ignore_index=True)
    train = training_matrix(observed, spec)
    np.testing.assert_array_equal([rows[n][0] for n in spec.names], train.X[-1])
    assert rows[store.SCALE][0] == train.scale[-1]

    # a new actual of one series, materialised again: only its cutoff moves
    later = pd.concat(
        [series, next_period.assign(**{TARGET_COL: 123.0})], ignore_index=True
    ).sort_values([ID_COL, TIME_COL])
    later.to_parquet(root / "data" / MODEL / "series.parquet", index=False)
    store.materialize(root, MODEL, redis_url=redis_url)
    found, _ = online.latest(["s0", "s1"])
    assert found["s1"].ds[-1] == next_period[TIME_COL][0] and found["s1"].y[-1] == 123.0
    assert len(found["s1"].y) == periods
    assert found["s0"].ds[-1] == series[TIME_COL].max()
    offline = pd.read_parquet(root / "features" / store.offline_path(MODEL, "feat_recent"))
    assert len(offline) == len(later)  # one row per observation, for point-in-time joins


def test_sqlite_is_the_default_and_mistakes_say_what_to_do(tmp_path, series):
    root = make_root(tmp_path, series)
    unset = {"TSOPS_FEATURE_STORE_REDIS_URL": None, "TSOPS_FEATURE_REGISTRY_URL": None}
    done = tsops("features", "materialize", MODEL, cwd=root, env=unset).stdout
    assert done.startswith("materialized feat_recent, feat_gbm: 3 series, the last 11 ")
    assert "latest period 2021-08-01, into SQLite features/data/online.db" in done
    ask = ("features", "show", MODEL, "--series", "s1", "--series", "x")
    shown = tsops(*ask, cwd=root, env=unset).stdout
    assert shown.splitlines()[0].startswith("s1: cutoff 2021-08-01, 11 observations (last: ")
    assert shown.splitlines()[1] == "x: not in the online store"
    online = store.OnlineFeatures(root / "features")
    found, problem = online.history_of(MODEL, "MS").latest(["s1"])
    assert problem is None and found["s1"].ds[-1] == series[TIME_COL].max()

    with pytest.raises(store.FeatureStoreError, match="tsops features materialize other"):
        online.history_of("other", "MS")
    with pytest.raises(store.FeatureStoreError, match="holds 'MS' periods"):
        online.history_of(MODEL, "QS")
    with pytest.raises(store.FeatureStoreError, match=r"feature_store\.yaml is missing"):
        store.OnlineFeatures(tmp_path / "models").open()
    with pytest.raises(store.FeatureStoreError, match="not a Redis URL"):
        store.redis_connection_string("http://127.0.0.1:6379", 1.0)
    assert store.redis_connection_string("rediss://me:pw@redis:6380/3", 0.5) == (
        "redis:6380,db=3,username=me,password=pw,ssl=true,socket_timeout=0.5,"
        "socket_connect_timeout=0.5"
    )
    with pytest.raises(store.FeatureStoreError, match="holds ',' or '='"):
        store.redis_connection_string("redis://:a,b@redis:6379", 0.5)
    (root / "data" / MODEL / "series.parquet").unlink()
    failed = tsops("features", "materialize", MODEL, cwd=root, env=unset, check=False)
    assert failed.returncode != 0 and f"run `tsops ingest {MODEL}`" in failed.stderr


def test_the_registry_can_live_in_postgresql(tmp_path, series, postgres_url):
    # what a cluster uses: the materialising job and the servers share the registry
    root = make_root(tmp_path, series)
    store.materialize(root, MODEL, registry_url=postgres_url)
    assert not (root / "features" / "data" / "registry.db").exists()
    online = store.OnlineFeatures(root / "features", registry_url=postgres_url)
    found, problem = online.history_of(MODEL, "MS").latest(["s2"])
    assert problem is None and found["s2"].ds[-1] == series[TIME_COL].max()


# -- the model server's side (in this file too: one Feast import per test run) ---------------


def tiny_project(folder: Path, tiny_model_dir: Path) -> tuple[Path, pd.Series]:
    """The served test model's project with one new actual of its first series; the
    actual's row."""
    built = tiny_model_dir.parent / "repo"
    frame = pd.read_parquet(built / "data" / "tiny" / "series.parquet")
    first = sorted(frame[ID_COL].unique())[0]
    last = frame[frame[ID_COL] == first].iloc[-1]
    actual = pd.DataFrame(
        {
            ID_COL: [first],
            TIME_COL: [last[TIME_COL] + pd.offsets.MonthBegin()],
            TARGET_COL: [last[TARGET_COL] * 1.2],
        }
    )
    root = make_root(folder, pd.concat([frame, actual], ignore_index=True), "tiny")
    shutil.copy(built / "models" / "tiny" / "model.yaml", root / "models" / "tiny")
    return root, actual.iloc[0]


def _v1(ids, history=None):
    instances = [{"unique_id": uid} for uid in ids]
    if history:
        instances[0]["history"] = history
    return {"instances": instances, "parameters": {"h": 3}}


def _v2(ids, grpc=False):
    from kserve.protocol.infer_type import InferInput, InferRequest

    tensor = InferInput("unique_id", [len(ids)], "BYTES", list(ids))
    return InferRequest("tiny", [tensor], parameters={"h": 3}, from_grpc=grpc)


def _predict(model, body):
    return model.predict(asyncio.run(model.preprocess(body)))


def test_the_server_forecasts_from_the_latest_actual_as_if_the_request_sent_it(
    tmp_path, tiny_model_dir, redis_url
):
    root, actual = tiny_project(tmp_path, tiny_model_dir)
    store.materialize(root, "tiny", redis_url=redis_url)
    uid, period = actual[ID_COL], actual[TIME_COL].strftime("%Y-%m-%d")
    online = store.OnlineFeatures(root / "features", redis_url)
    model = ForecastModel("tiny", str(tiny_model_dir), feature_store=online)
    model.load()
    plain = ForecastModel("tiny", str(tiny_model_dir))
    plain.load()
    other = sorted(model.series - {uid})[0]

    answer = _predict(model, _v1([uid, other]))
    new, old = answer["predictions"]
    assert (new["cutoff"], new["cutoff_source"]) == (f"{period}T00:00:00", "feature_store")
    assert old["cutoff_source"] == "model" and "feature_store_error" not in answer
    sent = _predict(plain, _v1([uid, other], {"ds": [period], "y": [actual[TARGET_COL]]}))
    # the forecasts the same actual sent in the request gives (state updated, nothing refit)
    assert [p["mean"] for p in answer["predictions"]] == [p["mean"] for p in sent["predictions"]]
    assert "cutoff_source" not in sent["predictions"][0]  # a server without the store: as before

    # history sent in the request wins over the store's
    history = {"ds": [period], "y": [1.0]}
    mine = _predict(model, _v1([uid], history))["predictions"][0]
    assert mine["cutoff_source"] == "request"
    assert mine["mean"] == _predict(plain, _v1([uid], history))["predictions"][0]["mean"]

    # V2 (REST and gRPC): a cutoff_source tensor beside cutoff
    assert [t["name"] for t in model.get_output_types()][:3] == [ID_COL, "cutoff", "cutoff_source"]
    v2 = orjson.loads(_predict(model, _v2([uid, other])))
    outputs = {o["name"]: o["data"] for o in v2["outputs"]}
    assert outputs["cutoff_source"] == ["feature_store", "model"]
    assert outputs["cutoff"][0] == f"{period}T00:00:00" and v2["parameters"] is None
    grpc = _predict(model, _v2([uid], grpc=True))
    assert [o.name for o in grpc.outputs][:3] == [ID_COL, "cutoff", "cutoff_source"]


def test_while_redis_is_down_the_server_answers_from_the_model_cutoff(
    tmp_path, tiny_model_dir, private_redis
):
    root, actual = tiny_project(tmp_path, tiny_model_dir)
    store.materialize(root, "tiny", redis_url=private_redis.url)
    online = store.OnlineFeatures(root / "features", private_redis.url)
    model = ForecastModel("tiny", str(tiny_model_dir), feature_store=online)
    model.load()
    uid, cutoff = actual[ID_COL], actual[TIME_COL] - pd.offsets.MonthBegin()
    assert _predict(model, _v1([uid]))["predictions"][0]["cutoff_source"] == "feature_store"

    private_redis.stop()
    errors = STORE_ERRORS.labels("tiny")._value.get()
    started = time.monotonic()
    answer = _predict(model, _v1([uid]))
    v2 = orjson.loads(_predict(model, _v2([uid])))  # skipped: not even a connection attempt
    assert time.monotonic() - started < 0.5
    forecast = answer["predictions"][0]
    assert (forecast["cutoff"], forecast["cutoff_source"]) == (cutoff.isoformat(), "model")
    problem = answer["feature_store_error"]
    assert problem.startswith("the online store (Redis 127.0.0.1:") and "ConnectionError" in problem
    assert "tried again in 5 s" in problem and v2["parameters"]["feature_store_error"] == problem
    assert STORE_ERRORS.labels("tiny")._value.get() == errors + 2
    with pytest.raises(store.FeatureStoreError, match=r"not reachable .* start Redis"):
        store.materialize(root, "tiny", redis_url=private_redis.url, attempts=1)

    # back, and empty (the test's Redis keeps nothing on disk): no error and no
    # history (forecasts from the model's cutoff) until the next materialisation
    private_redis.start()
    lookup = online.history_of("tiny", "MS", retry_after=0.2)
    assert lookup.latest([uid]) == ({}, None)
    store.materialize(root, "tiny", redis_url=private_redis.url)
    found, problem = lookup.latest([uid])
    assert problem is None and found[uid].ds[-1] == actual[TIME_COL]


def test_feast_leaves_the_processes_metrics_mode_alone():
    # importing feast sets PROMETHEUS_MULTIPROC_DIR to a folder it deletes at exit: every
    # server this process started afterwards failed its first request
    import os

    from tsops.platform.features import import_feast

    import_feast()
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        assert "feast_metrics_" not in os.environ.get(name, ""), name
