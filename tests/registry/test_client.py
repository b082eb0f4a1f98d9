"""Connecting names the store explicitly and leaves the process as it found it."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from tests.registry.conftest import process_state
from tsops.core.errors import UNAVAILABLE_EXIT
from tsops.registry.client import (
    RegistryError,
    RegistryUnavailable,
    artifact_location,
    connect,
    ensure_experiment,
    tracking_uri,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_uri_is_the_configured_one_or_the_embedded_store_at_the_root(tmp_path):
    assert tracking_uri(tmp_path, "http://mlflow:5000") == "http://mlflow:5000"
    assert tracking_uri(tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert artifact_location(tracking_uri(tmp_path)) == (tmp_path / "mlartifacts").as_uri()
    assert artifact_location("http://mlflow:5000") is None


def test_a_client_on_an_explicit_store_changes_no_global(store, tmp_path_factory):
    before = process_state()
    other = tmp_path_factory.mktemp("other")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = connect(other, uri)
    assert client.tracking_uri == uri
    experiment = ensure_experiment(client, "tiny")
    assert ensure_experiment(client, "tiny") == experiment
    assert client.get_experiment(experiment).artifact_location == ((store / "mlartifacts").as_uri())
    assert not (other / "mlflow.db").exists(), "the configured store wins over the root"
    assert process_state() == before


def test_an_unreachable_server_fails_fast_with_exit_4_and_what_to_do():
    before = process_state()
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable) as caught:
        connect(".", uri, timeout=2)
    assert time.monotonic() - started < 15
    assert caught.value.exit_code == UNAVAILABLE_EXIT
    message = str(caught.value)
    assert f"{uri} is not reachable" in message and "MLFLOW_TRACKING_URI" in message
    assert process_state() == before, "the probe's timeout must not go through os.environ"


@pytest.fixture
def fake_server():
    """An HTTP server that answers ``/health`` and, with ``status``, MLflow's API."""

    class Handler(http.server.BaseHTTPRequestHandler):
        status = 200

        def answer(self):
            health = self.path == "/health"
            api = self.path.startswith("/api/2.0/mlflow/experiments/search")
            code = 200 if health else self.status if api else 404
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            if health:
                self.wfile.write(b"OK")
            else:
                self.wfile.write(b"{}" if code == 200 else b'{"error_code": "PERMISSION_DENIED"}')

        do_GET = do_POST = answer

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", Handler
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_and_lets_tsops_in_is_connected(fake_server):
    uri, handler = fake_server
    assert connect(".", uri).tracking_uri == uri
    handler.status = 403
    with pytest.raises(RegistryError, match="answered but refused a request") as refused:
        connect(".", uri)
    assert refused.value.exit_code == 1 and "MLFLOW_TRACKING_TOKEN" in str(refused.value)
