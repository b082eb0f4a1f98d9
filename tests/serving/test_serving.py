"""The model server over real HTTP on 127.0.0.1: both protocols, bad requests, the log."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.http import http
from tests.serving.serving_fixtures import Server
from tsops.serving.forecast_log import read_forecast_log

pytestmark = pytest.mark.integration
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("serving")
    model_dir = tiny_model_dir
    srv = Server(
        ["--model", f"tiny={model_dir}", "--model", f"champion={model_dir}"],
        log_dir=tmp / "forecast-logs",
        env={"TSOPS_MODEL_VERSION": "7"},
    )
    try:
        srv.wait_ready("tiny")
        srv.wait_ready("champion")
        yield srv
    finally:
        srv.stop()


def v1(server, body, model="tiny", **kw):
    return http().post(f"{server.url}/v1/models/{model}:predict", json=body, timeout=30, **kw)


def v2(server, body, model="tiny"):
    return http().post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def test_health_metadata_and_metrics(server):
    assert http().get(f"{server.url}/v2/health/live").status_code == 200
    assert http().get(f"{server.url}/v2/health/ready").status_code == 200
    assert http().get(f"{server.url}/v2").json()["name"]
    assert http().get(f"{server.url}/v2/models/tiny").json()["name"] == "tiny"
    assert http().get(f"{server.url}/v1/models/tiny").json() == {"name": "tiny", "ready": True}
    assert http().get(f"{server.url}/v1/models").json()["models"] == ["tiny", "champion"]
    v1(server, {"instances": [{"unique_id": "N1402"}]})
    metrics = http().get(f"{server.url}/metrics").text
    assert 'tsops_forecasts_total{history="false",model="tiny",version="7"}' in metrics


def test_v1_forecast_from_the_cutoff(server):
    body = {
        "instances": [{"unique_id": "N1402"}, {"unique_id": "N1403"}],
        "parameters": {"h": 4, "level": [80]},
    }
    response = v1(server, body, headers={"x-request-id": "req-1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "tiny" and answer["model_version"] == "7"
    assert answer["request_id"] == "req-1"
    first = answer["predictions"][0]
    assert first["unique_id"] == "N1402"
    assert first["cutoff"] == "2019-12-01T00:00:00"
    assert first["ds"] == [
        "2020-01-01T00:00:00",
        "2020-02-01T00:00:00",
        "2020-03-01T00:00:00",
        "2020-04-01T00:00:00",
    ]
    assert set(first) == {"unique_id", "cutoff", "ds", "mean", "lo-80", "hi-80"}
    bounds = zip(first["lo-80"], first["mean"], first["hi-80"], strict=True)
    assert all(lo <= m <= hi for lo, m, hi in bounds)


def test_v1_history_anchors_the_forecast(server):
    history = {"ds": ["2020-01-01", "2020-02-01", "2020-03-01"], "y": [9000.0, 9100.0, 9200.0]}
    body = {"instances": [{"unique_id": "N1402", "history": history}], "parameters": {"h": 2}}
    answer = v1(server, body).json()["predictions"][0]
    assert answer["cutoff"] == "2020-03-01T00:00:00"
    assert answer["ds"] == ["2020-04-01T00:00:00", "2020-05-01T00:00:00"]
    plain = v1(server, {"instances": [{"unique_id": "N1402"}]}).json()["predictions"][0]
    assert answer["mean"][0] > plain["mean"][0]


def test_v2_with_an_unmodified_tritonclient(server):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_model_ready("champion")
    ids = triton.InferInput("unique_id", [2], "BYTES")
    ids.set_data_from_numpy(np.array([b"N1402", b"N1404"], dtype=object), binary_data=False)
    result = client.infer("champion", [ids], parameters={"h": 3, "level": "80,95"})
    mean = result.as_numpy("mean")
    assert mean.shape == (2, 3)
    assert (result.as_numpy("hi-95") >= result.as_numpy("hi-80")).all()
    assert [str(x) for x in result.as_numpy("unique_id")] == ["N1402", "N1404"]
    assert result.get_response()["model_version"] == "7"


def test_v2_json_with_history(server):
    body = {
        "inputs": [
            {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1403"]},
            {
                "name": "history_unique_id",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["N1403", "N1403"],
            },
            {
                "name": "history_ds",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["2020-01-01", "2020-02-01"],
            },
            {"name": "history_y", "datatype": "FP64", "shape": [2], "data": [1500.0, 1600.0]},
        ],
        "parameters": {"h": 2},
    }
    response = v2(server, body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["cutoff"]["data"] == ["2020-02-01T00:00:00"]
    assert outputs["mean"]["shape"] == [1, 2]


BAD_V1 = [
    ("unknown series", {"instances": [{"unique_id": "nope"}]}, "unique_id"),
    ("h zero", {"instances": [{"unique_id": "N1402"}], "parameters": {"h": 0}}, "parameters.h"),
    ("h too large", {"instances": [{"unique_id": "N1402"}], "parameters": {"h": 99}}, "1..12"),
    ("h text", {"instances": [{"unique_id": "N1402"}], "parameters": {"h": "3"}}, "parameters.h"),
    ("level 150", {"instances": [{"unique_id": "N1402"}], "parameters": {"level": [150]}}, "level"),
    (
        "level text",
        {"instances": [{"unique_id": "N1402"}], "parameters": {"level": ["x"]}},
        "parameters.level",
    ),
    ("no instances", {"parameters": {"h": 3}}, "instances"),
    ("empty instances", {"instances": []}, "instances"),
    ("id not a string", {"instances": [{"unique_id": 5}]}, "unique_id"),
    ("instances not a list", {"instances": "N1402"}, "instances"),
    ("unknown field", {"instances": [{"unique_id": "N1402", "colour": 1}]}, "colour"),
    ("duplicate id", {"instances": [{"unique_id": "N1402"}, {"unique_id": "N1402"}]}, "twice"),
    (
        "history lengths",
        {
            "instances": [
                {"unique_id": "N1402", "history": {"ds": ["2020-01-01", "2020-02-01"], "y": [1.0]}}
            ]
        },
        "one value per timestamp",
    ),
    (
        "history unsorted",
        {
            "instances": [
                {
                    "unique_id": "N1402",
                    "history": {"ds": ["2020-02-01", "2020-01-01"], "y": [1.0, 2.0]},
                }
            ]
        },
        "strictly increasing",
    ),
    (
        "history off grid",
        {
            "instances": [
                {
                    "unique_id": "N1402",
                    "history": {"ds": ["2020-01-01", "2020-03-01"], "y": [1.0, 2.0]},
                }
            ]
        },
        "consecutive periods",
    ),
    (
        "history bad date",
        {"instances": [{"unique_id": "N1402", "history": {"ds": ["yesterday"], "y": [1.0]}}]},
        "ISO 8601",
    ),
    ("body not an object", [1, 2, 3], "JSON object"),
    (
        "history a model cannot fit",
        {"instances": [{"unique_id": "N1402", "history": {"ds": ["2020-01-01"], "y": [1e308]}}]},
        "history of 'N1402': y[0] is 1e+308, beyond ±1e+100",
    ),
]


@pytest.mark.parametrize(("case", "body", "needle"), BAD_V1, ids=[c[0] for c in BAD_V1])
def test_bad_v1_requests_get_400_naming_the_field(server, case, body, needle):
    response = v1(server, body)
    assert response.status_code == 400, (case, response.status_code, response.text)
    assert needle in response.json()["error"], response.text


def test_malformed_json_nan_and_oversized_bodies(server):
    url = f"{server.url}/v1/models/tiny:predict"
    bad_json = http().post(url, content=b'{"instances": [', headers=JSON)
    assert bad_json.status_code == 400
    nan = b'{"instances": [{"unique_id": "N1402", "history": {"ds": ["2020-01-01"], "y": [NaN]}}]}'
    response = http().post(url, content=nan, headers=JSON)
    assert 400 <= response.status_code < 500, response.text
    huge = {
        "instances": [
            {"unique_id": "N1402", "history": {"ds": ["2020-01-01"] * 20000, "y": [1.0] * 20000}}
        ]
    }
    response = http().post(url, content=json.dumps(huge), headers=JSON)
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    no_content_type = http().post(url, content=b'{"instances": [{"unique_id": "N1402"}]}')
    assert no_content_type.status_code == 200, no_content_type.text


BAD_V2 = [
    (
        "missing unique_id",
        {"inputs": [{"name": "history_y", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        "unique_id",
    ),
    (
        "wrong datatype",
        {"inputs": [{"name": "unique_id", "datatype": "FP64", "shape": [1], "data": [1.0]}]},
        "BYTES",
    ),
    (
        "shape mismatch",
        {"inputs": [{"name": "unique_id", "datatype": "BYTES", "shape": [3], "data": ["N1402"]}]},
        "shape",
    ),
    (
        "unknown input",
        {
            "inputs": [
                {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]},
                {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]},
            ]
        },
        "colour",
    ),
    (
        "bad h",
        {
            "inputs": [{"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]}],
            "parameters": {"h": -1},
        },
        "parameters.h",
    ),
    (
        "bad level",
        {
            "inputs": [{"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]}],
            "parameters": {"level": "80,abc"},
        },
        "level",
    ),
    (
        "partial history",
        {
            "inputs": [
                {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]},
                {"name": "history_y", "datatype": "FP64", "shape": [1], "data": [1.0]},
            ]
        },
        "history",
    ),
    (
        "history a model cannot fit",
        {
            "inputs": [
                {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]},
                {"name": "history_unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1402"]},
                {"name": "history_ds", "datatype": "BYTES", "shape": [1], "data": ["2020-01-01"]},
                {"name": "history_y", "datatype": "FP64", "shape": [1], "data": [-1e308]},
            ]
        },
        "y[0] is -1e+308, beyond",
    ),
]


@pytest.mark.parametrize(("case", "body", "needle"), BAD_V2, ids=[c[0] for c in BAD_V2])
def test_bad_v2_requests_get_4xx_naming_the_field(server, case, body, needle):
    response = v2(server, body)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert needle in response.text, response.text


def test_server_still_serves_after_bad_requests(server):
    for _, body, _ in BAD_V1:
        v1(server, body)
    assert v1(server, {"instances": [{"unique_id": "N1402"}]}).status_code == 200


def test_schemathesis_finds_no_server_errors(server):
    """Property-based requests generated from the server's OpenAPI: no 5xx anywhere."""
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "schemathesis"
    config = Path(__file__).with_name("schemathesis.toml")
    for prefix in ([], ["--config-file", str(config)]):
        result = subprocess.run(
            [
                str(cli),
                *prefix,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "40",
                "--phases",
                "examples,fuzzing",
                "--no-color",
                "--request-timeout",
                "20",
                "--suppress-health-check",
                "all",
                "--generation-deterministic",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert "passed" in result.stdout
    assert http().get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("request_logs", [False, True])
def test_every_forecast_is_logged_and_flushed_on_shutdown(tmp_path, tiny_model_dir, request_logs):
    model_dir = tiny_model_dir
    log_dir = tmp_path / "logs"
    flags = ["--request_logs"] if request_logs else []
    srv = Server(["--model", f"tiny={model_dir}", *flags], log_dir=log_dir)
    try:
        srv.wait_ready("tiny")
        for i in range(5):
            body = {
                "instances": [{"unique_id": "N1402"}, {"unique_id": "N1405"}],
                "parameters": {"h": 3},
            }
            assert v1(srv, body, headers={"x-request-id": f"r{i}"}).status_code == 200
    finally:
        assert srv.stop() == 0
    records = list(read_forecast_log(log_dir / "tiny"))
    assert len(records) == 5 * 2 * 3
    first = records[0]
    assert {
        "request_id",
        "unique_id",
        "cutoff",
        "ds",
        "step",
        "mean",
        "lo-80",
        "hi-95",
        "model_name",
        "model_version",
    } <= set(first)
    assert {r["request_id"] for r in records} == {f"r{i}" for i in range(5)}
    # one line per request (access, timing) only when asked for
    access_lines = srv.output.read_text().count('"POST /v1/models/tiny%3Apredict')
    assert access_lines == (5 if request_logs else 0)


def test_v2_metadata_lists_the_tensors(server):
    meta = http().get(f"{server.url}/v2/models/tiny").json()
    assert {i["name"] for i in meta["inputs"]} >= {"unique_id", "history_ds", "history_y"}
    assert {"mean", "lo-80", "hi-95"} <= {o["name"] for o in meta["outputs"]}


def test_versions_and_unknown_models_are_404(server):
    assert http().get(f"{server.url}/v2/models/tiny/versions/7/ready").status_code == 200
    wrong = http().get(f"{server.url}/v2/models/tiny/versions/3/ready")
    assert wrong.status_code == 404 and "serves version '7'" in wrong.json()["error"]
    missing = http().get(f"{server.url}/v2/models/other/ready")
    assert missing.status_code == 404 and "tiny" in missing.json()["error"]
    unload = http().post(f"{server.url}/v2/repository/models/tiny/unload")
    assert unload.status_code == 403 and "--model" in unload.json()["error"]
    assert http().get(f"{server.url}/v2/models/tiny/ready").status_code == 200


def test_batch_forecast_has_the_online_schema(tmp_path, tiny_model_dir):
    from tsops.serving.batch import batch_forecast

    model_dir = tiny_model_dir
    out = tmp_path / "forecasts.parquet"
    frame = batch_forecast(str(model_dir), out, h=5, levels=[80])
    import pandas as pd

    written = pd.read_parquet(out)
    assert len(written) == 6 * 5 == len(frame)
    assert list(written.columns) == [
        "unique_id",
        "cutoff",
        "ds",
        "step",
        "mean",
        "lo-80",
        "hi-80",
        "model_name",
        "model_version",
    ]
    assert (written["cutoff"] == pd.Timestamp("2019-12-01")).all()
