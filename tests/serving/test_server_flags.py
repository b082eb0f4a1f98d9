"""The kserve flags the model server promises, each on a real server: --http_host (REST
and gRPC bind that address only), --http_port, --enable_grpc/--grpc_port (a real V2
gRPC request through tritonclient, refused alike with REST), and --workers checked."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.helpers.http import http
from tests.serving.serving_fixtures import Server, free_port

pytestmark = pytest.mark.integration
# Any 127.0.0.0/8 address is the loopback on Linux: a server bound to 127.0.0.2 is not
# reachable at 127.0.0.1, which shows it bound the address asked for, not all of them.
HOST = "127.0.0.2"


def _can_bind(host: str) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory, tiny_model_dir):
    if not _can_bind(HOST):
        pytest.skip(f"{HOST} is not a local address here")
    tmp = tmp_path_factory.mktemp("grpc")
    model_dir = tiny_model_dir
    grpc_port = free_port()
    srv = Server(
        ["--model", f"tiny={model_dir}", "--enable_grpc", "true", "--grpc_port", str(grpc_port)],
        log_dir=tmp / "forecast-logs",
        env={"TSOPS_MODEL_VERSION": "7"},
        host=HOST,
    )
    srv.grpc = f"{HOST}:{grpc_port}"
    try:
        srv.wait_ready("tiny")
        yield srv
    finally:
        # the gRPC server shuts down with the REST one, cleanly
        assert srv.stop() == 0, srv.output.read_text()[-3000:]


def _refused(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) != 0


def test_http_host_and_port_bind_that_address_only(grpc_server):
    assert http().get(f"{grpc_server.url}/v2/health/ready").status_code == 200
    assert _refused("127.0.0.1", grpc_server.port)
    grpc_port = int(grpc_server.grpc.rsplit(":", 1)[1])
    assert not _refused(HOST, grpc_port)
    assert _refused("127.0.0.1", grpc_port)


# kserve's gRPC messages and tritonclient's declare the same protobuf package, which one
# process cannot load twice: the tests talk to the server with kserve's stub, and
# tritonclient runs in a process of its own.


def _stub(server):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    channel = grpc.insecure_channel(server.grpc)
    return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


def _infer_request(*ids: str, model="tiny", version="", parameters=None, request_id=""):
    from kserve import InferInput, InferRequest

    tensor = InferInput("unique_id", [len(ids)], "BYTES")
    tensor.set_data_from_numpy(np.array([i.encode() for i in ids], dtype=object))
    request = InferRequest(
        model_name=model,
        infer_inputs=[tensor],
        parameters=parameters,
        request_id=request_id,
        model_version=version,
    )
    return request.to_grpc()


def _outputs(response) -> dict:
    from kserve.protocol.infer_type import InferResponse

    return {o.name: o.as_numpy() for o in InferResponse.from_grpc(response).outputs}


def _rest_means(server, ids, h):
    body = {"instances": [{"unique_id": i} for i in ids], "parameters": {"h": h}}
    answer = http().post(f"{server.url}/v1/models/tiny:predict", json=body, timeout=30)
    return [p["mean"] for p in answer.json()["predictions"]]


def test_grpc_v2_forecast_equals_the_rest_one(grpc_server):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    stub = _stub(grpc_server)
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny", version="7")).ready
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name="tiny")).name == "tiny"
    request = _infer_request(
        "N1402", "N1404", parameters={"h": 3, "level": "80,95"}, request_id="g1"
    )
    response = stub.ModelInfer(request)
    assert (response.id, response.model_name, response.model_version) == ("g1", "tiny", "7")
    outputs = _outputs(response)
    assert [x.decode() for x in outputs["unique_id"]] == ["N1402", "N1404"]
    assert outputs["ds"].shape == (2, 3)
    assert (outputs["hi-95"] >= outputs["hi-80"]).all()
    np.testing.assert_allclose(outputs["mean"], _rest_means(grpc_server, ["N1402", "N1404"], 3))


def test_grpc_history_request_with_kserves_own_client(grpc_server):
    import asyncio

    from kserve import InferenceGRPCClient, InferInput, InferRequest

    def tensor(name, datatype, data):
        out = InferInput(name, [len(data)], datatype)
        out.set_data_from_numpy(np.array(data, dtype=object if datatype == "BYTES" else float))
        return out

    request = InferRequest(
        model_name="tiny",
        infer_inputs=[
            tensor("unique_id", "BYTES", [b"N1403"]),
            tensor("history_unique_id", "BYTES", [b"N1403", b"N1403"]),
            tensor("history_ds", "BYTES", [b"2020-01-01", b"2020-02-01"]),
            tensor("history_y", "FP64", [1500.0, 1600.0]),
        ],
        parameters={"h": 2},
    )

    async def infer():
        client = InferenceGRPCClient(grpc_server.grpc)
        try:
            return await client.infer(request)
        finally:
            await client.close()

    response = asyncio.run(infer())
    outputs = {o.name: o for o in response.outputs}
    assert [c.decode() for c in outputs["cutoff"].as_numpy()] == ["2020-02-01T00:00:00"]
    assert outputs["mean"].shape == [1, 2]


_TRITON = """
import json, sys
import numpy as np
import tritonclient.grpc as tg
client = tg.InferenceServerClient(sys.argv[1])
ids = tg.InferInput("unique_id", [2], "BYTES")
ids.set_data_from_numpy(np.array([b"N1402", b"N1404"], dtype=object))
result = client.infer("tiny", [ids], parameters={"h": 3, "level": "80,95"})
print(json.dumps({"mean": result.as_numpy("mean").tolist(),
                  "version": result.get_response().model_version}))
"""


def test_grpc_with_an_unmodified_tritonclient(grpc_server):
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed")
    done = subprocess.run(
        [sys.executable, "-c", _TRITON, grpc_server.grpc],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["version"] == "7"
    np.testing.assert_allclose(answer["mean"], _rest_means(grpc_server, ["N1402", "N1404"], 3))


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("other version", "NOT_FOUND", "model 'tiny' version '3' is not served here"),
        ("other version ready", "NOT_FOUND", "this server serves version '7'"),
        ("unknown model", "NOT_FOUND", "model 'other' is not served here; served models: tiny"),
        ("unload", "PERMISSION_DENIED", "the model repository extension is disabled"),
        ("load", "PERMISSION_DENIED", "models are loaded at start with --model"),
        ("h too large", "INVALID_ARGUMENT", "parameters.h=99 is outside 1..12"),
        ("unknown series", "INVALID_ARGUMENT", "unique_id ['nope'] not known to model 'tiny'"),
        # over the fixture's --max_body_bytes 200000
        ("too large", "RESOURCE_EXHAUSTED", "larger than max"),
    ],
)
def test_grpc_refuses_what_rest_refuses(grpc_server, case, code, needle):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    stub = _stub(grpc_server)
    calls = {
        "other version": lambda: stub.ModelInfer(_infer_request("N1402", version="3")),
        "other version ready": lambda: stub.ModelReady(
            pb.ModelReadyRequest(name="tiny", version="3")
        ),
        "unknown model": lambda: stub.ModelInfer(_infer_request("N1402", model="other")),
        "unload": lambda: stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="tiny")
        ),
        "load": lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="tiny")),
        "h too large": lambda: stub.ModelInfer(_infer_request("N1402", parameters={"h": 99})),
        "unknown series": lambda: stub.ModelInfer(_infer_request("nope")),
        "too large": lambda: stub.ModelInfer(_infer_request(*[f"N{i:07d}" for i in range(30000)])),
    }
    with pytest.raises(grpc.RpcError) as error:
        calls[case]()
    assert error.value.code().name == code
    assert needle in error.value.details()
    assert stub.ModelReady(pb.ModelReadyRequest(name="tiny")).ready


def test_a_worker_count_below_one_is_refused_saying_why():
    from tsops.cli import app

    result = CliRunner().invoke(app, ["serve", "--workers", "0", "--model", "x=/nowhere"])
    assert result.exit_code == 2
    assert "'0' is not a whole number of workers (>= 1)" in result.stderr


def test_help_lists_every_flag_and_what_workers_default_to():
    from tsops.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--http_host", "--http_port", "--enable_grpc", "--grpc_port", "--workers"):
        assert flag in result.stdout
    assert "cgroup's CPU quota" in " ".join(result.stdout.split())


def test_a_model_that_cannot_load_is_one_error_line(tmp_path):
    from tsops.cli import app

    result = CliRunner().invoke(
        app,
        ["serve", "--model", f"x={tmp_path}", "--forecast_log_dir", str(tmp_path / "logs")],
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "is not an MLflow model directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_stops_leaves_no_metrics_folder_to_the_processes_after_it(
    tmp_path, monkeypatch
):
    # two workers put prometheus_client in multiprocess mode through the environment; a
    # process that goes on after main() (here pytest) handed that variable, with its
    # folder removed, to every server it started next, whose first request then failed
    from tsops.cli import app

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    result = CliRunner().invoke(app, ["serve", "--workers", "2", "--model", f"x={tmp_path}"])
    assert result.exit_code == 1, result.output
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    from prometheus_client import values

    assert values.ValueClass is values.MutexValue


def test_duplicate_model_names_are_one_error_line(tmp_path):
    from tsops.cli import app

    result = CliRunner().invoke(
        app, ["serve", "--model", f"x={tmp_path}", "--model", f"x={tmp_path}"]
    )
    assert result.exit_code == 1
    assert "error: model names ['x'] are used twice" in result.stderr
