"""``tsops serve`` / ``python -m tsops.serving``: kserve's ModelServer with tsops models.

The command line extends kserve's own argument parser. What tsops does with its flags:

==============================================  =========================================
``--http_port``, ``--enable_docs_url``,         as in kserve
``--timeout-keep-alive``, ``--event-loop``,
``--access_log_format``, ``--log_config_file``,
``--configure_logging``, ``--ssl_certfile``,
``--ssl_keyfile``, ``--max_asyncio_workers``,
``--model_name`` (a bare ``--model``'s name)
``--enable_grpc``, ``--grpc_port``,             the V2 gRPC protocol on ``--http_host``,
``--max_threads``,                              with the REST side's checks; off by
``--grpc_max_send_message_length``,             default (kserve's default is on)
``--grpc_max_receive_message_length``
``--enable_latency_logging``                    as in kserve, default false
``--workers``                                   tsops' own: load once, fork N workers
                                                (``workers.py``); default: the CPUs
                                                the pod may use
``--feature_store``                             tsops' own: a Feast feature repository;
                                                series asked for without history start
                                                from their latest actuals in its online
                                                store (``tsops.platform.features``)
``--shadow_url``,                               tsops' own: forward a copy of every
``--shadow_timeout_seconds``                    answered V1/V2 request (gRPC as V2 REST)
                                                to a shadow release, asynchronously,
                                                after answering (``shadow.py``);
                                                copies carry ``tsops-shadow: 1`` and
                                                are logged there with role shadow
``--predictor_*``, ``--protocol``,              accepted, unused: they configure a kserve
``--enable_predictor_health_check``             transformer, and this is a predictor
==============================================  =========================================

kserve 0.21 cannot bind another address than all interfaces; ``model_server.py``
adds ``--http_host`` (see its docstring).

The forecast log goes to ``--forecast_log_dir`` (one folder per served model), or, when
``TSOPS_FORECAST_LOG_URL`` names a PostgreSQL database, to its ``forecast_log`` table
(``tsops.platform.forecast_log_sql``), with ``--forecast_log_dir`` the folder batches
spill to while the database is down. The URL is taken from the environment only: it
may carry a password, and a command line is visible to every user of the machine.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from tsops.core.errors import TsopsError
from tsops.serving.guard import DEFAULT_MAX_BODY_BYTES, RequestGuard

WORKERS_HELP = (
    "server processes: the models are loaded once, then this many workers are forked, "
    "each listening on the same address (the kernel spreads connections), with its own "
    "forecast log writer; /metrics sums all of them. Default: the CPUs this process may "
    "use (its CPU affinity, capped by its cgroup's CPU quota, e.g. the pod's CPU limit)"
)


class ServerError(TsopsError):
    """The model server cannot start as asked; the message says why."""


def build_parser(
    http_host: str | None = None,
    forecast_log_dir: Path | None = None,
    feature_store: str | None = None,
    shadow_url: str | None = None,
    shadow_timeout_seconds: float | None = None,
) -> argparse.ArgumentParser:
    """kserve's flags plus tsops'; the arguments are the defaults the environment sets
    (``TSOPS_HTTP_HOST``, ``TSOPS_FORECAST_LOG_DIR``, ``TSOPS_FEATURE_STORE``,
    ``TSOPS_SHADOW_URL``, ``TSOPS_SHADOW_TIMEOUT_SECONDS``), ``None`` for tsops' own."""
    from kserve import model_server

    from tsops.serving.shadow import DEFAULT_TIMEOUT_SECONDS

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
        default=http_host or "127.0.0.1",
        help="address to listen on, for REST and gRPC (default: TSOPS_HTTP_HOST or "
        "127.0.0.1; the image sets 0.0.0.0)",
    )
    parser.add_argument(
        "--forecast_log_dir",
        default=str(forecast_log_dir or "forecast-logs"),
        help="where every served forecast is logged ('' disables the log; default: "
        "TSOPS_FORECAST_LOG_DIR or forecast-logs); with TSOPS_FORECAST_LOG_URL set, the log "
        "goes to that PostgreSQL database and this folder keeps the batches it could not "
        "take until it is back",
    )
    parser.add_argument("--forecast_log_format", choices=["jsonl", "parquet"], default="jsonl")
    parser.add_argument(
        "--forecast_log_flush_seconds",
        type=_positive_seconds,
        default=1.0,
        help="how often the forecast log's writer writes what was served (a part file or "
        "one database batch per model and worker; default 1)",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="reject larger requests: 413 over REST, RESOURCE_EXHAUSTED over gRPC",
    )
    parser.add_argument(
        "--request_logs",
        action="store_true",
        help="write a log line per request (uvicorn's access line, kserve's timing "
        "lines and gRPC method lines); off by default: they cost about a third of a cheap "
        "request's CPU, and /metrics keeps the latencies. A --log_config_file, when "
        "given, decides instead",
    )
    parser.add_argument(
        "--enable_latency_logging",
        default=False,
        type=_strtobool,
        help="also log kserve's per-request latency line (default false; see --request_logs)",
    )
    parser.add_argument(
        "--enable_grpc",
        default=False,
        type=_strtobool,
        help="also serve the V2 gRPC protocol on --grpc_port, at --http_host, with the REST "
        "side's checks (default false)",
    )
    parser.add_argument("--workers", default=None, type=_positive, help=WORKERS_HELP)
    parser.add_argument(
        "--feature_store",
        default=str(feature_store or ""),
        metavar="DIR",
        help="a Feast feature repository (the project's features/): a series asked for "
        "without history is forecast from its latest actuals in the online store when they "
        "are newer than the model's cutoff (`tsops features materialize MODEL` loads them); "
        "Redis and a SQL registry come from TSOPS_FEATURE_STORE_REDIS_URL and "
        "TSOPS_FEATURE_REGISTRY_URL. Default: TSOPS_FEATURE_STORE, or none",
    )
    parser.add_argument(
        "--shadow_url",
        default=str(shadow_url or ""),
        metavar="URL",
        help="a shadow (challenger) release's base URL, e.g. "
        "http://m3-monthly-shadow.tsops-production.svc.cluster.local: after answering, "
        "forward a copy of every answered V1/V2 request (same path and body; gRPC ones as "
        "V2 REST) there, from a bounded queue, dropping (and counting in "
        "tsops_shadow_requests_total) what a slow or down shadow cannot take; the user's "
        "answer never waits for it. Copies carry the header tsops-shadow: 1, so the shadow "
        "logs them with role shadow and forwards nothing. Default: TSOPS_SHADOW_URL, or none",
    )
    parser.add_argument(
        "--shadow_timeout_seconds",
        type=_positive_seconds,
        default=shadow_timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
        help="seconds from a user's answer within which the shadow must answer its copy "
        "(waiting to be sent and connecting included); later, the copy is abandoned and "
        "counted as a timeout (default: TSOPS_SHADOW_TIMEOUT_SECONDS or "
        f"{DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument(
        "--tracking_root",
        default=".",
        help="repo root holding the embedded MLflow store (when MLFLOW_TRACKING_URI is unset)",
    )
    return parser


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of workers (>= 1)")
    return number


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (> 0)")
    return seconds


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
        raise ServerError(
            f"model names {sorted(duplicates)} are used twice; name each --model NAME=REF"
        )
    return specs


def main(argv: list[str] | None = None) -> None:
    """Load the models, then serve them until SIGTERM/SIGINT (the process's entry point):
    in this process with one worker, from forked workers with more."""

    from kserve import model_server as kserve_model_server

    from tsops.core.settings import load_settings
    from tsops.serving import workers as server_workers

    settings = load_settings()
    parser = build_parser(
        settings.http_host,
        settings.forecast_log_dir,
        settings.feature_store,
        settings.shadow_url,
        settings.shadow_timeout_seconds,
    )
    args = parser.parse_args(argv)
    forwarder = _shadow_forwarder(args)
    count = args.workers or server_workers.available_cpus()
    if args.enable_docs_url and kserve_model_server.app.docs_url is None:
        # kserve builds its app, /docs or not, when it is imported, from sys.argv
        raise ServerError("--enable_docs_url must be on the process's command line")
    if args.configure_logging:
        configure_logging(args.request_logs, args.log_config_file)
    metrics_dir = None
    # a folder given in the environment is the operator's to keep; ours goes at exit
    own_metrics_dir = settings.prometheus_multiproc_dir is None
    held: list = []
    models = []
    try:
        if count > 1:
            # before any metric has a value; the ports checked before loading
            metrics_dir = server_workers.multiprocess_metrics(settings.prometheus_multiproc_dir)
            held.append(server_workers.reserve_port(args.http_host, args.http_port, "REST"))
            if args.enable_grpc:
                held.append(server_workers.reserve_port(args.http_host, args.grpc_port, "gRPC"))
        models = _load_models(args, settings)
        versions = {m.name: m.loaded.version for m in models}
        app = kserve_model_server.app
        # kserve serves one module-level app; its middleware is ours to add before start
        # (and before the fork: every worker has the guard). The last added is the
        # outermost: the shadow's copies are made inside the guard, of what it let through.
        if forwarder is not None:
            from tsops.serving.shadow import ShadowMiddleware

            app.add_middleware(ShadowMiddleware, forwarder=forwarder)
        app.add_middleware(RequestGuard, max_bytes=args.max_body_bytes, versions=versions)
        if metrics_dir is not None:
            app.add_middleware(server_workers.MultiProcessMetrics, directory=metrics_dir)

        def serve(_index: int = 0) -> None:
            for model in models:
                if model.forecast_log is not None:
                    model.forecast_log.start()
            listen = None
            if count > 1:
                listen = server_workers.worker_socket(args.http_host, args.http_port)
            try:
                _model_server(args, versions, listen, forwarder).start(models)
            finally:
                for model in models:
                    model.stop()

        if count == 1:
            serve()
            return
        code = server_workers.run_workers(count, serve, grace_seconds=_grace_seconds() + 5)
        if code:
            raise ServerError("a worker failed (its error is above); the server stopped")
    finally:
        for model in models:
            model.stop()
        for sock in held:
            sock.close()
        if metrics_dir is not None and own_metrics_dir:
            server_workers.end_multiprocess_metrics(metrics_dir)


def _load_models(args: argparse.Namespace, settings) -> list:
    """The served models, loaded (their forecast logs made, not started); then the
    process is set up for serving."""
    from tsops.forecasters.naive import quiet_process
    from tsops.registry.loading import registry_for
    from tsops.serving.forecast_log import ForecastLog
    from tsops.serving.model import ForecastModel

    specs = model_specs(args.model, getattr(args, "model_name", None))
    feature_store = _feature_store(args, settings)
    make_database = _forecast_log_database(args, settings.forecast_log_url)
    registry = registry_for(
        [ref for _, ref in specs], Path(args.tracking_root), settings.mlflow_tracking_uri
    )
    models: list[ForecastModel] = []
    try:
        for name, ref in specs:
            sink = None
            if args.forecast_log_dir:
                sink = ForecastLog(
                    Path(args.forecast_log_dir) / name,
                    fmt=args.forecast_log_format,
                    flush_seconds=args.forecast_log_flush_seconds,
                    database=make_database(),
                )
            model = ForecastModel(
                name,
                ref,
                forecast_log=sink,
                registry=registry,
                default_version=settings.model_version,
                feature_store=feature_store,
            )
            models.append(model)
            model.load()
    except BaseException:
        for model in models:
            model.stop()
        raise
    # Process-wide warning filters, BLAS threads and np.seterr: a server forecasts on
    # every request, and scoping them per request costs more than a small forecast.
    # Set here, at the server's entry point, after loading (statsmodels' import adds
    # filters of its own), and never at import.
    quiet_process()
    # The loaded models, MLflow and pandas are ~10^6 long-lived objects; without this
    # every full collection walks them all, a pause of tens of milliseconds that shows
    # up as the p99 latency. Frozen objects are skipped by the collector (and, in
    # forked workers, never written to: their pages stay shared).
    gc.collect()
    gc.freeze()
    return models


def _forecast_log_database(args: argparse.Namespace, url: str | None):
    """A function making each served model's database sink (one connection per writer),
    or ``None`` each time without ``TSOPS_FORECAST_LOG_URL``; the URL checked now."""
    if not url:
        return lambda: None
    from tsops.platform.database import masked
    from tsops.platform.forecast_log_sql import ForecastLogDatabase

    if not args.forecast_log_dir:
        raise ServerError(
            f"TSOPS_FORECAST_LOG_URL is set ({masked(url)}) but --forecast_log_dir is '': "
            "the database log needs a folder for the batches the database cannot take "
            "while it is down; give --forecast_log_dir, or unset TSOPS_FORECAST_LOG_URL"
        )
    if args.forecast_log_format != "jsonl":
        raise ServerError(
            "with TSOPS_FORECAST_LOG_URL the forecast log goes to the database and spills "
            "JSON lines; drop --forecast_log_format parquet"
        )
    ForecastLogDatabase(url)  # a wrong URL fails here, before any model loads
    return lambda: ForecastLogDatabase(url)


def _feature_store(args: argparse.Namespace, settings):
    """The online store the models look up the latest actuals in, or ``None``."""
    if not args.feature_store:
        return None
    from tsops.platform.features import OnlineFeatures

    return OnlineFeatures(
        Path(args.feature_store),
        redis_url=settings.feature_store_redis_url,
        registry_url=settings.feature_registry_url,
    )


def _shadow_forwarder(args: argparse.Namespace):
    """The forwarder of copies to ``--shadow_url`` (its URL checked now), or ``None``."""
    if not args.shadow_url:
        return None
    from tsops.serving.shadow import ShadowError, ShadowForwarder

    try:
        return ShadowForwarder(args.shadow_url, timeout=args.shadow_timeout_seconds)
    except ShadowError as exc:
        raise ServerError(f"--shadow_url / TSOPS_SHADOW_URL: {exc}") from exc


def _grace_seconds() -> float:
    """How long kserve lets requests in flight finish after SIGTERM (its default: we
    pass none)."""
    import inspect

    from kserve import ModelServer

    return float(inspect.signature(ModelServer.__init__).parameters["grace_period"].default)


def _model_server(args: argparse.Namespace, versions: dict[str, str], listen, forwarder=None):
    from tsops.serving.model_server import TsopsModelServer

    return TsopsModelServer(
        host=args.http_host,
        versions=versions,
        shadow=forwarder,
        grpc_options={
            "grpc.max_send_message_length": args.grpc_max_send_message_length,
            "grpc.max_receive_message_length": min(
                args.grpc_max_receive_message_length, args.max_body_bytes
            ),
        },
        grpc_request_logs=args.request_logs,
        listen_socket=listen,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
    )
