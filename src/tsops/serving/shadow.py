"""Shadow traffic: the model server forwards a copy of each request to a challenger.

A shadow (challenger) release gets a copy of production requests and its answers are
thrown away: users only ever get the champion's answer, and the shadow's forecasts go
to the forecast log marked ``role: shadow`` to be scored against the actuals like the
champion's. With ``--shadow_url`` (``TSOPS_SHADOW_URL``) the champion's server, after it
has answered a request, queues a copy of it for the shadow; this module sends the
copies and throws the answers away.

Why the model server forwards, not the cluster:

- KServe has no mirroring. An InferenceGraph node is a ``Sequence``, ``Switch``,
  ``Ensemble`` or ``Splitter`` (https://kserve.github.io/website/docs/model-serving/
  inferencegraph/overview): an ``Ensemble`` calls every step and waits for all of them
  before it answers (a slow shadow would delay users), a ``Splitter`` sends each request
  to one step only. Shadow deployments are an open KServe feature request
  (https://github.com/kserve/kserve/issues/2978).
- Mirroring is a service mesh's: Istio's ``VirtualService`` ``mirror`` /
  ``mirrorPercentage`` (https://istio.io/latest/docs/tasks/traffic-management/mirroring/)
  works only where Istio routes the traffic. KServe's serverless mode runs on Knative,
  whose networking layer (often Kourier, without a mesh) exposes no mirroring; adding it
  to Knative's Istio layer is an open pull request
  (https://github.com/knative-extensions/net-istio/pull/1454).

So the copy is made where every installation has it: in the champion's server, one
hop from the shadow's cluster-local address. It costs the champion some CPU per
request (``benchmarks/shadow.py`` measures it); it needs no mesh and no change to the
traffic's owner (a canary, A/B split or blue/green switch keeps its routes).

What the forwarding guarantees:

- The user's answer is never changed: the copy is queued after the answer was written
  (REST: the ASGI middleware ``ShadowMiddleware`` once the app has sent the last body
  part; gRPC: once the answer has been handed to gRPC) and only requests the champion
  answered with a 2xx are copied (the shadow is judged on what the champion served).
- The user never waits for the shadow: the request path only appends the copy to a
  bounded queue (``queue_size`` copies, ``queue_bytes`` bytes, counting those in flight)
  and never writes, reads or waits; a copy that does not fit is dropped and counted.
  The copies are written in batches (every ``BATCH_SECONDS``), pipelined on keep-alive
  connections, and their answers read by the event loop like any other socket. What a
  slow or down shadow can cost a user request is that constant work (about 10-15 µs of
  CPU per copy, ``benchmarks/shadow.py``), never a wait. A copy the shadow has not
  answered ``timeout`` seconds after it was queued is abandoned (its connection closed;
  checked every ``timeout / 4``, 0.25 s at most), and after a failed connection the
  shadow is not tried again for a growing pause (copies meanwhile are counted
  ``unreachable``).
- Every copy is counted once in ``tsops_shadow_requests_total{model,outcome}``:
  ``ok`` (the shadow answered 2xx), ``error`` (it answered otherwise, or broke the
  connection), ``timeout``, ``unreachable`` (no connection), ``dropped`` (the queue was
  full, or the server stopped before it was sent).
- Copies carry ``tsops-shadow: 1`` (``SHADOW_HEADER``): the server that receives one
  logs its forecasts with role ``shadow`` and never forwards it again (so a shadow needs
  no configuration of its own, and a chain or loop of servers cannot amplify traffic).
  They also carry the champion's ``x-request-id`` (one is made when the user sent
  none), so the shadow's forecasts can be paired with the champion's request by id.
- The path is the one the champion's model answered: a version in the path or query
  (``/v2/models/m/versions/3/infer``) is the champion's, so it is left out; the shadow
  must serve the model under the same name (``tsops serve --model NAME=REF``).
- gRPC requests are forwarded as their V2 REST equivalent (kserve's ``InferRequest``
  conversion, tensors as JSON data) to the same base URL: the shadow forecasts the same
  inputs, one URL serves both protocols' copies, and the shadow needs no gRPC port.
  The conversion runs when the copy is sent, off the request path.

With ``--workers N`` each worker forwards its own requests: the forwarder is made
before the fork, holds no connection or thread then, and binds to the worker's event
loop at its first use (the ASGI lifespan's startup). The lifespan's shutdown, once the
server has stopped taking requests, waits for the copies in flight for up to
``STOP_GRACE_SECONDS`` (at most ``timeout``), counts what is left as dropped and closes
the connections.

Pipelining: servers and proxies answer pipelined HTTP/1.1 requests in order, one after
the other (uvicorn; Go's net/http, which Knative's queue-proxy and activator are; Envoy,
Kourier's and Istio's proxy, whose HTTP/1.1 codec "translates the serial/pipelining
capabilities of the protocol", https://www.envoyproxy.io/docs/envoy/latest/intro/
arch_overview/http/http_protocols). One that closes the connection after the first
answer instead (three times without a connection answering twice in between: a
restart closes connections once) makes the forwarder fall back to one copy per connection (a
warning); one that silently drops pipelined requests shows as timeouts.

The sending is an asyncio ``Protocol`` over keep-alive connections with httptools (the
C parser uvicorn uses) reading the answers, not an HTTP client library: the budget is
10 % of a request that costs ~0.3 ms of CPU, and a copy needs only a write and the
status of its answer, batched (a loop benchmark of this path: 12-13 µs of CPU per
copy; written and read one by one, ~40 µs, most of it system calls and wake-ups).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter

from tsops.core.errors import TsopsError
from tsops.serving.forecast_log import ROLE_LIVE, ROLE_SHADOW

__all__ = [
    "ROLE_LIVE",
    "ROLE_SHADOW",
    "SHADOW_HEADER",
    "ShadowError",
    "ShadowForwarder",
    "ShadowMiddleware",
    "role_of",
]

#: the header every forwarded copy carries; a request with it is a shadow's
SHADOW_HEADER = "tsops-shadow"
SHADOW_VALUE = "1"
_SHADOW_KEY = SHADOW_HEADER.encode()
_REQUEST_ID = b"x-request-id"

DEFAULT_TIMEOUT_SECONDS = 2.0
#: copies waiting for a connection; more are dropped
DEFAULT_QUEUE_SIZE = 1000
#: bytes of waiting copies' bodies; more are dropped (a request may be megabytes)
DEFAULT_QUEUE_BYTES = 32 * 1024 * 1024
#: connections to the shadow per worker (a shadow with several workers or replicas
#: answers them in parallel), and copies in flight on each
DEFAULT_CONNECTIONS = 4
DEFAULT_PIPELINE = 32
#: connections when the shadow's side does not take pipelined requests (one copy each)
FALLBACK_CONNECTIONS = 16
PIPELINE_STRIKES = 3
#: copies are written, and the shadow's answers read, at most this often (per
#: connection): one write and one read for every copy of a few milliseconds, instead of
#: a write, a wake-up and a read for each (see ``ShadowForwarder``)
BATCH_SECONDS = 0.005
#: after a failed connection, the shadow is tried again after 0.5, 1, 2 ... seconds
RETRY_MAX_SECONDS = 10.0
#: an idle connection is closed after this long: servers close idle keep-alive
#: connections (uvicorn after 5-65 s), and copies written to one closing are lost
IDLE_SECONDS = 4.0
#: how long a stopping server waits for the copies in flight (at most the timeout)
STOP_GRACE_SECONDS = 2.0

OUTCOMES = ("ok", "error", "timeout", "unreachable", "dropped")

log = logging.getLogger(__name__)

SHADOW_REQUESTS = Counter(
    "tsops_shadow_requests_total",
    "Copies of answered requests forwarded to the shadow (--shadow_url), by outcome: ok "
    "(the shadow answered 2xx), error (it answered otherwise or broke the connection), "
    "timeout, unreachable (no connection), dropped (queue full or server stopping)",
    ["model", "outcome"],
)


class ShadowError(TsopsError):
    """The shadow URL or its settings cannot be used; the message says why."""


def role_of(headers: dict[str, str] | None) -> str:
    """``shadow`` for a request that is a forwarded copy (``tsops-shadow: 1``), else
    ``live``."""
    if headers and headers.get(SHADOW_HEADER) == SHADOW_VALUE:
        return ROLE_SHADOW
    return ROLE_LIVE


def check_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of a shadow base URL, or ShadowError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ShadowError(
            f"shadow URL {url!r} is not an http(s) base URL; give the shadow's address, e.g. "
            "http://m3-monthly-shadow.tsops-production.svc.cluster.local (the request's "
            "path is appended)"
        )
    if parts.query or parts.fragment:
        raise ShadowError(f"shadow URL {url!r} has a query or fragment; give the base URL only")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ShadowError(f"shadow URL {url!r} has a bad port ({exc})") from exc
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class _Copy:
    """One request to send: the model it is for, the request's head and body parts (a
    gRPC copy: the ``ModelInferRequest``, made into a REST request when it is sent)."""

    __slots__ = ("body", "deadline", "grpc", "head", "model", "request_id", "size")

    def __init__(
        self,
        model: str,
        head: bytes | None,
        body: list[bytes],
        size: int,
        grpc: Any = None,
        request_id: str = "",
        deadline: float = 0.0,
    ):
        self.model = model
        self.deadline = deadline
        self.head = head
        self.body = body
        self.size = size
        self.grpc = grpc
        self.request_id = request_id


class ShadowForwarder:
    """Sends copies of answered requests to ``url``; one per server process (worker).

    Made before the fork (it holds nothing then); :meth:`submit` and
    :meth:`submit_grpc` are called on the serving event loop, which the forwarder binds
    to at its first use (or the ASGI lifespan's startup).

    Copies are written in batches, ``BATCH_SECONDS`` after the first of a batch was
    queued, pipelined on one keep-alive connection (HTTP/1.1 answers come back in
    order), and a connection's answers are read at most every ``BATCH_SECONDS`` (its
    reading paused in between, so that they wait in the socket's buffer instead of
    waking the loop one by one). A system call and a wake-up of the loop cost more than
    the Python of a copy: written and read one by one, copies cost the champion
    ~0.04-0.1 ms of CPU each; in batches a fraction of that.
    """

    def __init__(
        self,
        url: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        connections: int = DEFAULT_CONNECTIONS,
        pipeline: int = DEFAULT_PIPELINE,
    ):
        if not timeout > 0:
            raise ShadowError(f"shadow timeout must be a positive number of seconds, not {timeout}")
        self.url = url
        self.scheme, self.host, self.port, self.prefix = check_url(url)
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.timeout = float(timeout)
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.connections = connections
        self.pipeline = pipeline
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- per process ---------------------------------------------------------------------

    def _bind(self) -> None:
        """Start this process's state on the running loop (after the fork); again on
        the same loop does nothing."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._loop = loop
        self._queue: deque[_Copy] = deque()
        #: copies queued or in flight, and their bytes: what the bounds apply to
        self._pending = 0
        self._pending_bytes = 0
        self._open: list[_Connection] = []
        self._connecting = 0
        self._failures = 0
        self._strikes = 0
        self._down_until = 0.0
        self._closing = False
        self._flush_due = False
        self._counters: dict[tuple[str, str], Any] = {}
        self._tally: dict[tuple[str, str], int] = {}
        self._heads: dict[tuple[str, bytes], bytes] = {}
        self._ssl = None
        if self.scheme == "https":
            import ssl

            self._ssl = ssl.create_default_context()
        self._tasks: set[asyncio.Task] = set()
        self._sweeper = loop.create_task(self._sweep())
        # request ids for requests without one (a generator of this process's own: one
        # seeded before the fork would give every worker the same ids)
        self._random = random.Random()

    def request_id(self) -> bytes:
        """A new request id (32 hex digits, as a uuid4's), for a request without one."""
        if self._loop is None:
            self._bind()
        return b"%032x" % self._random.getrandbits(128)

    def count(self, model: str, outcome: str, n: int = 1) -> None:
        """Count copies now (the rare outcomes; ``_release`` tallies and the sweeper
        adds the tally to the counter, a fraction of a second later)."""
        child = self._counters.get((model, outcome))
        if child is None:
            child = self._counters[model, outcome] = SHADOW_REQUESTS.labels(model, outcome)
        child.inc(n)

    def _count_tallied(self) -> None:
        tally, self._tally = self._tally, {}
        for (model, outcome), n in tally.items():
            self.count(model, outcome, n)

    # -- the request path --------------------------------------------------------------------

    def submit(
        self,
        model: str,
        path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        chunks: list[bytes],
    ) -> None:
        """Queue a copy of an answered REST request: O(1), never waits, never writes
        (the copies are written once per turn of the loop)."""
        if self._loop is None:
            self._bind()
        size = sum(map(len, chunks))
        if self._closing or not self._admit(model, size):
            return
        head = self._head(path, query, headers, size)
        self._enqueue(_Copy(model, head, chunks, size, deadline=self._loop.time() + self.timeout))

    def submit_grpc(self, model: str, request: Any, metadata: dict[str, str]) -> None:
        """Queue a copy of an answered gRPC ``ModelInfer`` (made into V2 REST when sent)."""
        if self._loop is None:
            self._bind()
        size = request.ByteSize()
        if self._closing or not self._admit(model, size):
            return
        # the id the champion logged: the request's own, else its header's
        rid = request.id or metadata.get("x-request-id") or uuid.uuid4().hex
        deadline = self._loop.time() + self.timeout
        self._enqueue(_Copy(model, None, [], size, grpc=request, request_id=rid, deadline=deadline))

    def _admit(self, model: str, size: int) -> bool:
        if self._down_until:
            if time.monotonic() < self._down_until:
                self.count(model, "unreachable")
                return False
            self._down_until = 0.0
        if self._pending >= self.queue_size or self._pending_bytes + size > self.queue_bytes:
            # full: the shadow is slow, or down (the last connection failed, none is open)
            down = self._failures and not self._open
            self.count(model, "unreachable" if down else "dropped")
            return False
        return True

    def _enqueue(self, copy: _Copy) -> None:
        self._queue.append(copy)
        self._pending += 1
        self._pending_bytes += copy.size
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_later(BATCH_SECONDS, self._flush)

    def _release(self, copy: _Copy, outcome: str) -> None:
        """A copy's end: counted once, its room in the bounds given back."""
        self._pending -= 1
        self._pending_bytes -= copy.size
        key = (copy.model, outcome)
        self._tally[key] = self._tally.get(key, 0) + 1

    def _head(
        self, path: str, query: bytes, headers: list[tuple[bytes, bytes]], size: int
    ) -> bytes:
        """The copy's request line and headers: the request's content type (and binary
        tensor header) and id, the shadow's host, the shadow mark."""
        start = self._heads.get((path, query))
        if start is None:
            target = self.prefix + path + ("?" + query.decode("latin-1") if query else "")
            start = (
                f"POST {target} HTTP/1.1\r\nHost: {self._host_header}\r\n"
                f"{SHADOW_HEADER}: {SHADOW_VALUE}\r\nContent-Length: "
            ).encode("latin-1")
            if len(self._heads) < 1000:  # the paths of the served models, as a rule
                self._heads[path, query] = start
        lines = [start, b"%d\r\n" % size]
        for key, value in headers:
            if key in _COPIED:
                lines.append(key + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _grpc_as_rest(self, copy: _Copy) -> bool:
        """Turn a queued gRPC copy into its V2 REST request, tensors as JSON data (False:
        kserve cannot convert it). Raw (binary) gRPC contents become JSON: kserve's
        binary REST form needs a ``binary_data_size`` per input that its own ``to_rest``
        does not write, and a forecast request's tensors are small."""
        import orjson
        from kserve.protocol.infer_type import InferRequest

        request = copy.grpc
        try:
            rest = InferRequest.from_grpc(request)
            rest.id = copy.request_id
            for tensor in rest.inputs:
                tensor.set_data_from_numpy(tensor.as_numpy(), binary_data=False)
            body = orjson.dumps(rest.to_rest()[0])
        except Exception as exc:  # kserve refused it: counted as an error, never raised
            log.debug("shadow: gRPC request not convertible to REST: %s", exc)
            return False
        headers = [
            (b"content-type", b"application/json"),
            (_REQUEST_ID, copy.request_id.encode("latin-1")),
        ]
        copy.head = self._head(f"/v2/models/{request.model_name}/infer", b"", headers, len(body))
        self._pending_bytes += len(body) - copy.size
        copy.body, copy.size, copy.grpc = [body], len(body), None
        return True

    # -- sending ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write the queued copies: each batch pipelined on the open connection with the
        fewest copies in flight (room for ``pipeline``); a new connection is opened
        while there are fewer than ``connections`` and every open one is busy."""
        self._flush_due = False
        queue = self._queue
        while queue:
            connection = min(self._open, key=_in_flight, default=None)
            if connection is None or len(connection.in_flight) >= self.pipeline:
                break
            batch: list[_Copy] = []
            room = self.pipeline - len(connection.in_flight)
            while queue and len(batch) < room:
                copy = queue.popleft()
                if copy.grpc is not None and not self._grpc_as_rest(copy):
                    self._release(copy, "error")
                    continue
                batch.append(copy)
            if batch:
                connection.send(batch)
        busy = not self._open or all(c.in_flight for c in self._open)
        room = len(self._open) + self._connecting < self.connections
        if queue and busy and room and not self._down_until and not self._closing:
            self._connecting += 1
            # the loop keeps only weak references to tasks: a task nobody holds can be
            # collected before it ends (and its count with it)
            task = self._loop.create_task(self._connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self) -> None:
        connection = _Connection(self)
        try:
            await asyncio.wait_for(
                self._loop.create_connection(
                    lambda: connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self.timeout,
            )
        except Exception as exc:  # refused, unresolvable, timed out, TLS: no connection
            failure: Exception | None = exc
        else:
            failure = None
        finally:
            # also when cancelled (the loop stopping): a count that never comes down
            # would keep every later copy waiting for a connection that is never made
            self._connecting -= 1
        if failure is not None:
            self._unreachable(failure)
            return
        self._failures = 0
        self._down_until = 0.0
        if self._closing:
            connection.close()
            return
        self._open.append(connection)
        self._flush()

    def _unreachable(self, exc: BaseException) -> None:
        """No connection: unless another one works, the waiting copies are counted
        unreachable, and new ones too until a growing pause is over. Other attempts
        still under way do not wait for theirs: while copies keep coming, a new attempt
        can start before the last one failed, and the copies would wait for ever."""
        if self._open:
            return
        pause = min(RETRY_MAX_SECONDS, 0.5 * 2**self._failures)
        if not self._failures:
            log.warning(
                "shadow %s unreachable (%s); its copies are dropped and it is tried again "
                "after a pause (up to %g s)",
                self.url,
                exc or "connection failed",
                RETRY_MAX_SECONDS,
            )
        self._failures += 1
        self._down_until = time.monotonic() + pause
        while self._queue:
            self._release(self._queue.popleft(), "unreachable")

    def _no_pipelining(self) -> None:
        """The shadow (or a proxy before it) ended a connection with several copies
        pipelined on it. Once is a restart; ``PIPELINE_STRIKES`` times with no
        connection answering twice in between, it does not take pipelined requests: one
        copy per connection from now on, on more connections."""
        self._strikes += 1
        if self.pipeline > 1 and self._strikes >= PIPELINE_STRIKES:
            log.warning(
                "shadow %s closed a connection with %d copies pipelined on it: sending one "
                "copy per connection from now on (more CPU per copy)",
                self.url,
                self.pipeline,
            )
            self.pipeline = 1
            self.connections = max(self.connections, FALLBACK_CONNECTIONS)

    def _lost(self, connection: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self._open.remove(connection)
        if self._queue and not self._closing:
            self._flush()

    async def _sweep(self) -> None:
        """Every ``timeout / 4`` (0.25 s at most): copies not answered by their deadline
        are abandoned (their connection closed: HTTP/1.1 cannot skip an answer), and
        connections idle for ``IDLE_SECONDS`` closed."""
        every = min(0.25, self.timeout / 4)
        while not self._closing:
            await asyncio.sleep(every)
            self._count_tallied()
            now = self._loop.time()
            while self._queue and self._queue[0].deadline <= now:
                self._release(self._queue.popleft(), "timeout")
            for connection in list(self._open):
                if connection.in_flight and connection.in_flight[0].deadline <= now:
                    connection.fail("timeout")
                elif not connection.in_flight and now - connection.used_at > IDLE_SECONDS:
                    connection.close()

    async def aclose(self, grace: float | None = None) -> None:
        """Stop: wait for the copies queued and in flight up to ``grace`` seconds
        (default: ``STOP_GRACE_SECONDS``, at most the timeout), count the rest dropped,
        close the connections."""
        if self._loop is None:
            return
        grace = min(self.timeout, STOP_GRACE_SECONDS) if grace is None else grace
        deadline = time.monotonic() + grace
        while self._pending and time.monotonic() < deadline and not self._down_until:
            await asyncio.sleep(0.01)
        self._closing = True
        self._sweeper.cancel()
        while self._queue:
            self._release(self._queue.popleft(), "dropped")
        for connection in list(self._open):
            connection.fail("dropped")
        self._count_tallied()


def _in_flight(connection: _Connection) -> int:
    return len(connection.in_flight)


#: request headers a copy keeps (the shadow must read the body as the champion did)
_COPIED = frozenset({b"content-type", b"inference-header-content-length", _REQUEST_ID})


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the shadow; the copies written and not yet answered
    are ``in_flight``, oldest first (answers come in the order of the requests)."""

    def __init__(self, forwarder: ShadowForwarder):
        import httptools

        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.in_flight: deque[_Copy] = deque()
        self.answered = 0
        self.used_at = forwarder._loop.time()
        self.closed = False
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception:  # httptools.HttpParserError: not HTTP, or a broken answer
            self.fail("error")
            return
        if not self.closed and not self.paused:
            # the next answers wait in the socket's buffer and are read together
            self.paused = True
            self.transport.pause_reading()
            self.forwarder._loop.call_later(BATCH_SECONDS, self._resume)

    def _resume(self) -> None:
        self.paused = False
        if not self.closed:
            self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.fail("error")

    # httptools callback
    def on_message_complete(self) -> None:
        if not self.in_flight:  # an answer to nothing: not a server to trust
            self.fail("error")
            return
        status = self.parser.get_status_code()
        copy = self.in_flight.popleft()
        self.forwarder._release(copy, "ok" if 200 <= status < 300 else "error")
        self.used_at = self.forwarder._loop.time()
        self.answered += 1
        if self.answered == 2:  # a connection that lives on after an answer
            self.forwarder._strikes = 0
        if not self.parser.should_keep_alive():
            self.fail("error")

    # the forwarder's side
    def send(self, batch: list[_Copy]) -> None:
        parts: list[bytes] = []
        for copy in batch:
            parts.append(copy.head)
            parts.extend(copy.body)
        self.in_flight.extend(batch)
        self.transport.write(b"".join(parts))

    def fail(self, outcome: str) -> None:
        """End the connection; the copies in flight on it get ``outcome``."""
        if outcome == "error" and len(self.in_flight) > 1 and not self.closed:
            self.forwarder._no_pipelining()
        while self.in_flight:
            self.forwarder._release(self.in_flight.popleft(), outcome)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.forwarder._lost(self)


class ShadowMiddleware:
    """ASGI middleware queueing a copy of every answered V1 ``:predict`` and V2
    ``/infer`` request for the shadow (see the module docstring); binds and stops the
    forwarder with the app's lifespan. Inside ``RequestGuard``: it sees the path and body
    the model was given (version pins removed, size checked)."""

    def __init__(self, app, forwarder: ShadowForwarder):
        self.app = app
        self.forwarder = forwarder

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan(receive), send)
            return
        if kind != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        model = _model_of(scope["path"])
        headers = scope["headers"]
        if model is None or any(k == _SHADOW_KEY for k, _ in headers):
            # not a forecast, or a copy itself: a copy is never forwarded again
            await self.app(scope, receive, send)
            return
        if not any(k == _REQUEST_ID for k, _ in headers):
            # one id for the user's answer, the champion's log and the shadow's
            headers = [*headers, (_REQUEST_ID, self.forwarder.request_id())]
            scope = dict(scope, headers=headers)
        chunks: list[bytes] = []
        status = 0

        async def receive_copy():
            message = await receive()
            body = message.get("body")
            if body:
                chunks.append(body)
            return message

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive_copy, send_status)
        # the answer has been written: from here on nothing reaches the user
        if 200 <= status < 300:
            try:
                self.forwarder.submit(
                    model, scope["path"], scope.get("query_string", b""), headers, chunks
                )
            except Exception:  # the user has the answer; the copy is counted lost
                log.exception("shadow: queueing a copy failed")
                with contextlib.suppress(Exception):
                    self.forwarder.count(model, "dropped")

    def _lifespan(self, receive):
        async def lifespan_receive():
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.forwarder._bind()
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.forwarder.aclose()
                except Exception:
                    log.exception("shadow: stopping the forwarder failed")
            return message

        return lifespan_receive


def _model_of(path: str) -> str | None:
    """The model a forecast request is for: V1 ``/v1/models/<m>:predict``, V2
    ``/v2/models/<m>/infer``; None for any other path."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        name = path[len("/v2/models/") : -len("/infer")]
    elif path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[len("/v1/models/") : -len(":predict")]
    else:
        return None
    return name if name and "/" not in name else None
