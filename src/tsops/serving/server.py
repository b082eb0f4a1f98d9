"""``tsops serve`` / ``python -m tsops.serving``: kserve's ModelServer with tsops models.

The command line extends kserve's own argument parser, so every kserve flag
(``--http_port``, ``--workers``, ...) works as documented by KServe.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
from pathlib import Path

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_MODEL_PATHS = (
    re.compile(
        r"/v2/(?:repository/)?models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
        r"(?:/(?:ready|infer|load|unload))?/?\Z"
    ),
    re.compile(r"/v1/models/(?P<name>[^/:]+)(?::predict|:explain)?/?\Z"),
)
log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="tsops serve",
        parents=[model_server.parser],
        description="Serve tsops forecasting models over the KServe V1 and V2 protocols.",
        conflict_handler="resolve",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="[NAME=]REF",
        default=None,
        help="model to serve: models:/<name>/<version>, models:/<name>@<alias> or a local "
        "MLflow model directory; repeat to host several (e.g. champion=models:/m@champion). "
        "Default: /mnt/models, where KServe's storage initializer puts the model",
    )
    parser.add_argument(
        "--http_host",
        default=os.environ.get("TSOPS_HTTP_HOST", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1; the image sets 0.0.0.0)",
    )
    parser.add_argument(
        "--forecast_log_dir",
        default=os.environ.get("TSOPS_FORECAST_LOG_DIR", "forecast-logs"),
        help="where every served forecast is logged ('' disables the log)",
    )
    parser.add_argument("--forecast_log_format", choices=["jsonl", "parquet"], default="jsonl")
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="reject larger request bodies with 413",
    )
    parser.add_argument(
        "--request_logs",
        action="store_true",
        help="write a log line per request (uvicorn's access line and kserve's timing "
        "lines); off by default: they cost about a third of a cheap request's CPU, and "
        "/metrics keeps the latencies. A --log_config_file, when given, decides instead",
    )
    parser.add_argument(
        "--enable_latency_logging",
        default=False,
        type=_strtobool,
        help="also log kserve's per-request latency line (default false; see --request_logs)",
    )
    parser.add_argument(
        "--tracking_root",
        default=".",
        help="repo root holding the embedded MLflow store (when MLFLOW_TRACKING_URI is unset)",
    )
    return parser


def _strtobool(value: str) -> bool:
    from kserve import utils

    return bool(utils.strtobool(value))


def configure_logging(request_logs: bool, log_config_file: str | None) -> None:
    """kserve's logging, without the per-request lines unless asked for."""
    import copy

    from kserve import logging as kserve_logging

    if log_config_file:
        kserve_logging.configure_logging(log_config_file)
        return
    config = copy.deepcopy(kserve_logging.KSERVE_LOG_CONFIG)
    if not request_logs:
        for name in ("kserve.trace", "uvicorn.access"):
            config["loggers"][name]["level"] = "WARNING"
    kserve_logging.configure_logging(config)


def model_specs(values: list[str] | None, default_name: str | None) -> list[tuple[str, str]]:
    """``NAME=REF`` pairs; a bare REF is named after the registered model (or kserve's
    ``--model_name``)."""
    specs = []
    for value in values or ["/mnt/models"]:
        name, sep, ref = value.partition("=")
        if not sep:
            ref, name = value, ""
        if not name:
            if ref.startswith("models:/"):
                name = ref[len("models:/") :].split("/")[0].split("@")[0]
            else:
                name = default_name or "model"
        specs.append((name, ref))
    names = [n for n, _ in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"error: model names {sorted(duplicates)} are used twice; use NAME=REF")
    return specs


class RequestGuard:
    """Pure ASGI middleware in front of kserve's app (no per-request overhead of
    Starlette's BaseHTTPMiddleware):

    - bodies over ``max_bytes`` get 413 before a model sees them (neither uvicorn nor
      kserve limit body size);
    - a POST without a JSON content type and without the binary-tensor header is read as
      JSON, so plain clients (curl -d, tritonclient with JSON tensors) are understood;
    - an unknown model name is a 404 and a model version is honoured: the served version
      is routed to the model, any other is a 404 (kserve answers 501/503 to both);
    - the model repository extension (load/unload) is refused with 403.
    """

    def __init__(
        self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES, versions: dict[str, str] | None = None
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.versions = versions or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/v2/repository/"):
            # Models are loaded at start (--model); an unauthenticated unload would take a
            # served model down, so the repository extension is off.
            await self._error(
                send,
                403,
                "the model repository extension is disabled: models are loaded at start "
                "with --model; restart the server (or roll out a new revision) to change them",
            )
            return
        if self.versions:
            routed = self._route(scope)
            if isinstance(routed, str):
                await self._error(send, 404, routed)
                return
            scope = routed
        if scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        if declared is None:
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._too_large(send)
                    return
                chunks.append(chunk)
                more = message.get("more_body", False)
            body = b"".join(chunks)

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            receive = replay
        content_type = headers.get(b"content-type", b"")
        if b"json" not in content_type and b"inference-header-content-length" not in headers:
            kept = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = dict(scope, headers=[*kept, (b"content-type", b"application/json")])
        if scope["path"].endswith("/infer"):
            send = _json_unless_typed(send)
        await self.app(scope, receive, send)

    def _route(self, scope) -> dict | str:
        """The scope to pass on, or the message of a 404."""
        from urllib.parse import parse_qsl, unquote, urlencode

        path = scope["path"]
        match = next((m for p in _MODEL_PATHS if (m := p.match(path))), None)
        if not match:
            return scope
        name = unquote(match["name"])
        served = ", ".join(sorted(self.versions))
        if name not in self.versions:
            return f"model {name!r} is not served here; served models: {served}"
        query = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)
        asked = match.groupdict().get("version") or next(
            (v for k, v in query if k == "model_version"), None
        )
        if asked is None:
            return scope
        if asked != self.versions[name]:
            return (
                f"model {name!r} version {asked!r} is not served here; "
                f"this server serves version {self.versions[name]!r}"
            )
        version = match.groupdict().get("version")
        new_path = path.replace(f"/versions/{version}", "") if version else path
        rest = urlencode([(k, v) for k, v in query if k != "model_version"]).encode()
        return dict(scope, path=new_path, raw_path=new_path.encode(), query_string=rest)

    async def _error(self, send, status: int, message: str) -> None:
        import json

        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _too_large(self, send) -> None:
        await self._error(
            send,
            413,
            f"request body is larger than {self.max_bytes} bytes; "
            "send fewer series or less history per request",
        )


def _json_unless_typed(send):
    """Label untyped V2 answers as JSON: the model serialises its V2 body itself, and
    kserve sends bytes from a model without a content type (binary tensor answers,
    which carry ``inference-header-content-length``, are left alone)."""

    async def typed_send(message):
        if message["type"] == "http.response.start":
            names = {k.lower() for k, _ in message.get("headers", [])}
            if not names & {b"content-type", b"inference-header-content-length"}:
                headers = [*message.get("headers", []), (b"content-type", b"application/json")]
                message = dict(message, headers=headers)
        await send(message)

    return typed_send


def main(argv: list[str] | None = None) -> None:
    from kserve import model_server as kserve_model_server

    from tsops.forecasters.naive import quiet_process
    from tsops.serving.forecast_log import ForecastLog
    from tsops.serving.model import ForecastModel

    args = build_parser().parse_args(argv)
    configure_logging(args.request_logs, args.log_config_file)
    models = []
    for name, ref in model_specs(args.model, getattr(args, "model_name", None)):
        sink = None
        if args.forecast_log_dir:
            sink = ForecastLog(
                Path(args.forecast_log_dir) / name, fmt=args.forecast_log_format
            ).start()
        model = ForecastModel(name, ref, forecast_log=sink, tracking_root=Path(args.tracking_root))
        model.load()
        models.append(model)
    quiet_process()
    # The loaded models, MLflow and pandas are ~10^6 long-lived objects; without this
    # every full collection walks them all, a pause of tens of milliseconds that shows
    # up as the p99 latency. Frozen objects are skipped by the collector.
    gc.collect()
    gc.freeze()

    kserve_model_server.app.add_middleware(
        RequestGuard,
        max_bytes=args.max_body_bytes,
        versions={m.name: m.loaded.version for m in models},
    )
    server = _HostModelServer(
        host=args.http_host,
        http_port=args.http_port,
        workers=1,
        enable_latency_logging=args.enable_latency_logging,
        enable_grpc=False,
        enable_docs_url=args.enable_docs_url,
    )
    try:
        server.start(models)
    finally:
        for model in models:
            model.stop()


def _HostModelServer(host: str, **kwargs):
    """kserve's ModelServer, listening on ``host``.

    kserve 0.21's RESTServer hard-codes uvicorn's host to 0.0.0.0 and offers no flag
    for it; its uvicorn ``Config`` is the one place the address lives, so we set it
    there after kserve builds it and before the server binds.
    """
    from kserve import ModelServer
    from kserve.protocol.rest import server as rest_server

    class HostRESTServer(rest_server.RESTServer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.config.host = host

    class HostModelServer(ModelServer):
        def start(self, models):
            original = rest_server.RESTServer
            import kserve.model_server as ms

            ms.RESTServer = HostRESTServer
            try:
                super().start(models)
            finally:
                ms.RESTServer = original

    return HostModelServer(**kwargs)
