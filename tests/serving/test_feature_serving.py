"""``tsops serve --feature_store``: a series asked for without history starts from its
latest actual in the online store (as if the request had sent it), history in the
request still wins, every answer says where its cutoff came from, and a Redis that
goes down leaves the forecasts at the model's cutoff without failing a request."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
import pandas as pd
import pytest

from tests.helpers.commands import ROOT
from tests.serving.serving_fixtures import Server
from tsops.core.schema import ID_COL, TARGET_COL, TIME_COL
from tsops.platform import features as store
from tsops.platform.services import start_redis
from tsops.serving.model import ForecastModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_model_dir):
    """The tiny model's project with one new actual of its first series, materialised
    into a Redis of this module's own (the last test stops it)."""
    built = tiny_model_dir.parent / "repo"
    root = tmp_path_factory.mktemp("feature-serving")
    shutil.copytree(built / "models", root / "models")
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
    (root / "data" / "tiny").mkdir(parents=True)
    pd.concat([frame, actual], ignore_index=True).to_parquet(
        root / "data" / "tiny" / "series.parquet", index=False
    )
    (root / "features").mkdir()
    shutil.copy(ROOT / "features" / store.CONFIG_FILE, root / "features")
    redis = start_redis(root / "redis")
    try:
        store.materialize(root, "tiny", redis_url=redis.url)
        yield root, redis, actual.iloc[0]
    finally:
        redis.remove()


def _v1(ids, history=None):
    instances = [{"unique_id": uid} for uid in ids]
    if history:
        instances[0]["history"] = history
    return {"instances": instances, "parameters": {"h": 3}}


def _predict(model, body):
    return model.predict(asyncio.run(model.preprocess(body)))


def test_latest_actuals_from_the_store_as_if_the_request_sent_them(platform, tiny_model_dir):
    root, redis, actual = platform
    uid, period = actual[ID_COL], actual[TIME_COL].strftime("%Y-%m-%d")
    online = store.OnlineFeatures(root / "features", redis.url)
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
    # the same forecasts as with the actual sent in the request (state updated, nothing refit)
    assert [p["mean"] for p in answer["predictions"]] == [p["mean"] for p in sent["predictions"]]

    # history sent in the request wins over the store's
    mine = _predict(model, _v1([uid], {"ds": [period], "y": [1.0]}))["predictions"][0]
    assert mine["cutoff_source"] == "request"
    assert (
        mine["mean"]
        == _predict(plain, _v1([uid], {"ds": [period], "y": [1.0]}))["predictions"][0]["mean"]
    )
    assert model.get_output_types()[2]["name"] == "cutoff_source"


def test_the_server_answers_from_the_store_and_without_it_when_redis_is_down(
    platform, tiny_model_dir, tmp_path
):
    root, redis, actual = platform
    uid, period = actual[ID_COL], actual[TIME_COL].strftime("%Y-%m-%dT00:00:00")
    server = Server(
        ["--model", f"tiny={tiny_model_dir}", "--feature_store", str(root / "features")],
        log_dir=tmp_path / "forecast-logs",
        env={"TSOPS_FEATURE_STORE_REDIS_URL": redis.url},
    )
    try:
        server.wait_ready("tiny")
        v1 = httpx.post(f"{server.url}/v1/models/tiny:predict", json=_v1([uid]), timeout=30)
        assert v1.status_code == 200, v1.text
        forecast = v1.json()["predictions"][0]
        assert (forecast["cutoff"], forecast["cutoff_source"]) == (period, "feature_store")
        body = {
            "inputs": [{"name": "unique_id", "shape": [1], "datatype": "BYTES", "data": [uid]}],
            "parameters": {"h": 3},
        }
        v2 = httpx.post(f"{server.url}/v2/models/tiny/infer", json=body, timeout=30).json()
        outputs = {o["name"]: o["data"] for o in v2["outputs"]}
        assert outputs["cutoff"] == [period] and outputs["cutoff_source"] == ["feature_store"]

        redis.stop()
        started = time.monotonic()
        down = httpx.post(f"{server.url}/v1/models/tiny:predict", json=_v1([uid]), timeout=30)
        assert time.monotonic() - started < 1.0
        assert down.status_code == 200, down.text
        assert down.json()["predictions"][0]["cutoff_source"] == "model"
        assert "online store (Redis 127.0.0.1:" in down.json()["feature_store_error"]
        v2 = httpx.post(f"{server.url}/v2/models/tiny/infer", json=body, timeout=30).json()
        assert "ConnectionError" in v2["parameters"]["feature_store_error"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'tsops_feature_store_errors_total{model="tiny"} 2.0' in metrics
    finally:
        assert server.stop() == 0, server.output.read_text()[-3000:]
