"""The Feast feature store on real Redis and SQLite: what ``materialize`` loads, the
gbm's features as training computes them, and a Redis that goes down and comes back."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.helpers.commands import ROOT
from tests.helpers.synthetic import make_series
from tsops.core.config import load
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.forecasters.features import training_matrix
from tsops.platform import features as store

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


def make_root(folder: Path, frame: pd.DataFrame) -> Path:
    """A project with the model ``feat``, its ingested series and the feature repository."""
    (folder / "models" / MODEL).mkdir(parents=True)
    (folder / "models" / MODEL / "model.yaml").write_text(MODEL_YAML)
    (folder / "data" / MODEL).mkdir(parents=True)
    frame.to_parquet(folder / "data" / MODEL / "series.parquet", index=False)
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
    done = store.materialize(root, MODEL)
    assert done.online_store == f"SQLite {root / 'features' / 'data' / 'online.db'}"
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
    (root / "data" / MODEL / "series.parquet").unlink()
    with pytest.raises(store.FeatureStoreError, match=f"run `tsops ingest {MODEL}`"):
        store.materialize(root, MODEL)


def test_a_redis_that_goes_down_is_skipped_then_used_again(tmp_path, series, private_redis):
    root = make_root(tmp_path, series)
    store.materialize(root, MODEL, redis_url=private_redis.url)
    online = store.OnlineFeatures(root / "features", private_redis.url).history_of(
        MODEL, "MS", retry_after=0.5
    )
    assert online.latest(["s0"])[0]

    private_redis.stop()
    started = time.monotonic()
    found, problem = online.latest(["s0"])
    assert found == {} and "ConnectionError" in problem and "tried again in 0.5 s" in problem
    assert online.latest(["s0"]) == ({}, problem)  # skipped: not even a connection attempt
    assert time.monotonic() - started < 0.5
    with pytest.raises(store.FeatureStoreError, match=r"not reachable .* start Redis"):
        store.materialize(root, MODEL, redis_url=private_redis.url, attempts=1)

    # back, and empty (the test's Redis keeps nothing on disk): no error, no history
    # (forecasts from the model's cutoff) until the next materialisation
    private_redis.start()
    time.sleep(0.5)
    assert online.latest(["s0"]) == ({}, None)
    store.materialize(root, MODEL, redis_url=private_redis.url)
    found, problem = online.latest(["s0"])
    assert problem is None and found["s0"].ds[-1] == series[TIME_COL].max()


def test_the_registry_can_live_in_postgresql(tmp_path, series, postgres_url):
    # what a cluster uses: the materialising job and the servers share the registry
    root = make_root(tmp_path, series)
    store.materialize(root, MODEL, registry_url=postgres_url)
    assert not (root / "features" / "data" / "registry.db").exists()
    online = store.OnlineFeatures(root / "features", registry_url=postgres_url)
    found, problem = online.history_of(MODEL, "MS").latest(["s2"])
    assert problem is None and found["s2"].ds[-1] == series[TIME_COL].max()
