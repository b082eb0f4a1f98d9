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


def test_a_server_is_reachable_when_its_health_endpoint_answers():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        assert connect(".", uri).tracking_uri == uri
    finally:
        server.shutdown()
        server.server_close()
