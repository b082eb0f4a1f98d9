"""The registered model served by MLflow's own servers gives tsops serve's forecasts.

One registered version of the test model (``tiny_model_dir``) with the alias
``champion`` in a SQLite store; three real servers on 127.0.0.1, started together once
for the module:

- ``tsops serve --model models:/tiny@champion`` (the reference);
- ``mlflow models serve -m models:/tiny@champion --env-manager local``: MLflow's CLI
  downloads the version and execs ``uvicorn mlflow.pyfunc.scoring_server.app:app``.
  Both run warm (tests/helpers/warm.py: forked from a process that has imported MLflow,
  pandas and tsops; a ``uvicorn`` on PATH that runs ``python -m uvicorn`` warm), else
  each would spend ~8 s of CPU importing;
- MLServer with mlserver-mlflow's stock ``MLflowRuntime`` (what KServe's
  ``modelFormat: mlflow`` runs), in its own venv ``benchmarks/serving/.venv-mlserver``
  (mlserver pins a fastapi kserve cannot use, so it cannot share requirements.lock;
  ``make mlserver`` makes it, and ``make test`` runs it first). Its tests are skipped
  without it (a bare ``pytest`` before ``make mlserver``).
  MLflow 3.17's ``models serve`` has no ``--enable-mlserver`` any more; the runtime is
  started as KServe starts it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import warm
from tests.helpers.commands import ROOT
from tests.helpers.http import http
from tests.serving.serving_fixtures import Server, free_port
from tsops.registry.client import DB_FILE, connect, tracking_uri

pytestmark = pytest.mark.integration

NAME = "tiny"
REF = f"models:/{NAME}@champion"
MLSERVER_VENV = ROOT / "benchmarks" / "serving" / ".venv-mlserver"
SERIES = ["N1402", "N1403"]
# twelve months after the model's cutoff (2019-12), as ISO strings
HISTORY_DS = [f"2020-{m:02d}-01" for m in range(1, 13)]
HISTORY_Y = [5000.0 + 40 * i for i in range(12)]


class Process:
    """A server command in its own process group (its children end with it)."""

    def __init__(self, cmd: list[str], env: dict, log: Path, port: int, ready_path: str):
        self.url = f"http://127.0.0.1:{port}"
        self.ready_url = self.url + ready_path
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if http().get(self.ready_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready:\n{self.log.read_text()[-3000:]}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # MLServer may ignore SIGTERM
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir, _migrated_store):
    root = tmp_path_factory.mktemp("mlflow-serve")
    (root / DB_FILE).write_bytes(_migrated_store.read_bytes())
    client = connect(root)
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, source=str(tiny_model_dir))
    client.set_registered_model_alias(NAME, "champion", version.version)

    shims = root / "bin"
    shims.mkdir()
    uvicorn = shims / "uvicorn"  # what `mlflow models serve` execs, found on PATH
    uvicorn.write_text(f'#!/bin/sh\nexec "{warm.python()}" -m uvicorn "$@"\n')
    uvicorn.chmod(0o755)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(root),
        "PATH": os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    started: dict[str, Server | Process] = {}
    try:
        started["tsops"] = Server(["--model", f"{NAME}={REF}"], root / "forecast-log", env=env)
        port = free_port()
        started["mlflow"] = Process(
            [warm.python(), "-m", "mlflow", "models", "serve", "-m", REF, *local_at(port)],
            env,
            root / "mlflow-serve.log",
            port,
            "/ping",
        )
        if (MLSERVER_VENV / "bin" / "mlserver").exists():
            started["mlserver"] = start_mlserver(root, env)
        started["tsops"].wait_ready(NAME)
        for name in ("mlflow", "mlserver"):
            if name in started:
                started[name].wait_ready()
        yield {name: server.url for name, server in started.items()}
    finally:
        for server in started.values():  # all shut down at once
            if isinstance(server, Process):
                server.terminate()
        for server in started.values():
            server.stop()


def local_at(port: int) -> list[str]:
    """``mlflow models serve``'s options: this environment, on 127.0.0.1:port."""
    return ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]


def start_mlserver(root: Path, env: dict) -> Process:
    """``mlserver start`` on a model repository whose one model is ``REF`` through
    mlserver-mlflow's stock runtime (it loads ``models:/`` URIs through MLflow)."""
    repo = root / "mlserver-repo"
    (repo / NAME).mkdir(parents=True)
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port()}
    settings |= {"metrics_port": free_port(), "parallel_workers": 0}
    (repo / "settings.json").write_text(json.dumps(settings))
    model = {"name": NAME, "implementation": "mlserver_mlflow.MLflowRuntime"}
    model["parameters"] = {"uri": REF}
    (repo / NAME / "model-settings.json").write_text(json.dumps(model))
    bin_dir = MLSERVER_VENV / "bin"
    return Process(
        [str(bin_dir / "mlserver"), "start", str(repo)],
        {**env, "PATH": os.pathsep.join([str(bin_dir), os.environ["PATH"]])},
        root / "mlserver.log",
        port,
        f"/v2/models/{NAME}/ready",
    )


def tsops_forecast(url: str, uid: str, h: int, history: bool) -> dict:
    instance: dict = {"unique_id": uid}
    if history:
        instance["history"] = {"ds": HISTORY_DS, "y": HISTORY_Y}
    body = {"instances": [instance], "parameters": {"h": h, "level": [80]}}
    answer = http().post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (prediction,) = answer.json()["predictions"]
    return prediction


def frame_records(uid: str, history: bool) -> list[dict]:
    if not history:
        return [{"unique_id": uid}]
    return [{"unique_id": uid, "ds": d, "y": y} for d, y in zip(HISTORY_DS, HISTORY_Y, strict=True)]


@pytest.mark.parametrize("history", [False, True], ids=["cutoff", "history"])
def test_mlflow_models_serve_answers_as_tsops_serve(servers, history):
    """/invocations, the path MLflow users try first: the same dates and numbers."""
    for uid in SERIES:
        ours = tsops_forecast(servers["tsops"], uid, h=4, history=history)
        body = {"dataframe_records": frame_records(uid, history), "params": {"h": 4, "level": [80]}}
        answer = http().post(f"{servers['mlflow']}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert [r["unique_id"] for r in rows] == [uid] * 4
        assert [r["ds"] for r in rows] == ours["ds"]
        assert {r["cutoff"] for r in rows} == {ours["cutoff"]}
        for col in ("mean", "lo-80", "hi-80"):
            assert [r[col] for r in rows] == pytest.approx(ours[col], rel=1e-12), col


def test_mlflow_models_serve_says_what_is_wrong_with_a_request(servers):
    url = f"{servers['mlflow']}/invocations"
    for body, needle in (
        ({"dataframe_records": [{"unique_id": "nope"}]}, "unknown series ['nope']"),
        ({"dataframe_records": [{"unique_id": "N1402"}], "params": {"h": 99}}, "outside 1..12"),
        ({"dataframe_records": [{"unique_id": "N1402", "ds": "soon", "y": 1.0}]}, "column ds"),
    ):
        answer = http().post(url, json=body, timeout=30)
        assert answer.status_code == 400 and needle in answer.json()["message"], answer.text


def mlserver_url(servers) -> str:
    if "mlserver" not in servers:
        pytest.skip(
            f"no MLServer venv at {MLSERVER_VENV}: make it with `make mlserver` (`make test` does)"
        )
    return servers["mlserver"]


@pytest.mark.parametrize("history", [False, True], ids=["cutoff", "history"])
def test_mlserver_mlflow_runtime_answers_as_tsops_serve(servers, history):
    """KServe's MLflow runtime: V2 tensors decoded as one DataFrame, no shim."""
    url = mlserver_url(servers)
    uid = SERIES[0]
    ours = tsops_forecast(servers["tsops"], uid, h=4, history=history)
    records = frame_records(uid, history)

    def tensor(name: str, datatype: str) -> dict:
        data = [r[name] for r in records]
        return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data}

    inputs = [tensor("unique_id", "BYTES")]
    if history:
        inputs += [tensor("ds", "BYTES"), tensor("y", "FP64")]
    body = {"inputs": inputs, "parameters": {"h": 4, "level": [80]}}
    answer = http().post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["ds"] == ours["ds"] and set(outputs["cutoff"]) == {ours["cutoff"]}
    for col in ("mean", "lo-80", "hi-80"):
        assert outputs[col] == pytest.approx(ours[col], rel=1e-12), col
    # its /invocations endpoint speaks MLflow's protocol too
    body = {"dataframe_records": records, "params": {"h": 4, "level": [80]}}
    answer = http().post(f"{url}/invocations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [r["mean"] for r in answer.json()["predictions"]] == pytest.approx(ours["mean"])


def test_mlserver_names_what_is_wrong_with_a_request(servers):
    """MLServer maps only its own errors to 4xx: a request the model refuses is a 500 on
    V2 (with the message in "error" when inference runs in its worker processes, its
    default; here it runs in the server process) and a 400 with it on /invocations."""
    url = mlserver_url(servers)
    ids = {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["nope"]}
    answer = http().post(f"{url}/v2/models/{NAME}/infer", json={"inputs": [ids]}, timeout=30)
    assert answer.status_code == 500
    body = {"dataframe_records": [{"unique_id": "nope"}]}
    answer = http().post(f"{url}/invocations", json=body, timeout=30)
    assert answer.status_code == 400 and "unknown series ['nope']" in answer.json()["error"]
