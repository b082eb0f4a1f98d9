"""kserve's ModelServer, listening on one chosen address, with both protocols guarded.

kserve 0.21 has no public way to choose the listening address: ``RESTServer`` builds
uvicorn's ``Config`` with host ``0.0.0.0``, ``GRPCServer.start`` listens on ``[::]``,
and ``ModelServer.start`` builds both. So ``TsopsModelServer`` overrides ``start``,
the one method that builds the servers, with kserve's own steps for one process,
built from kserve's public classes:

- ``RESTServer``, with the host set on its uvicorn ``config`` (a public attribute that
  uvicorn reads when it binds; nothing is patched);
- a ``GRPCServer`` subclass that listens on the host and refuses, through
  ``tsops.serving.guard``, what ``RequestGuard`` refuses over REST: unknown models,
  other versions than the served one, the model repository extension; its receive
  limit is also ``--max_body_bytes``.

With ``listen_socket``, the REST server serves on that socket (a worker's own,
``tsops.serving.workers``) instead of binding one. kserve's ``--workers N`` is not
used: ``server.py`` forks tsops' workers itself (``workers.py`` says why). When kserve
gains a host option, ``start`` can go.

With a shadow (``--shadow_url``), ``GuardedServicer`` queues a copy of every answered
``ModelInfer`` for it (``tsops.serving.shadow``), as ``ShadowMiddleware`` does over REST.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.rest.server import RESTServer

from tsops.serving.guard import REPOSITORY_DISABLED, refusal


class TsopsModelServer(ModelServer):
    """``ModelServer`` on ``host``; ``versions`` maps each served name to its version."""

    def __init__(
        self,
        *,
        host: str,
        versions: dict[str, str],
        grpc_options: dict[str, int],
        grpc_request_logs: bool = False,
        listen_socket: socket.socket | None = None,
        shadow: Any = None,
        **kwargs: Any,
    ):
        super().__init__(workers=1, **kwargs)
        self.shadow = shadow
        self.host = host
        self.listen_socket = listen_socket
        self.versions = versions
        self.grpc_options = grpc_options
        self.grpc_request_logs = grpc_request_logs

    def start(self, models: list) -> None:
        """kserve's ``ModelServer.start`` for one process, on ``self.host``.

        The servers go to the attributes kserve's ``stop`` (inherited) shuts down.
        """
        for model in models:
            self.register_model(model)
            model.enable_latency_logging = self.enable_latency_logging
        self._rest_server = SocketRESTServer(
            self.listen_socket,
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            ssl_certfile=self.ssl_certfile,
            ssl_keyfile=self.ssl_keyfile,
        )
        self._rest_server.config.host = self.host
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = GuardedGRPCServer(
                host=self.host,
                port=self.grpc_port,
                data_plane=self.dataplane,
                model_repository_extension=self.model_repository_extension,
                versions=self.versions,
                options=self.grpc_options,
                request_logs=self.grpc_request_logs,
                grace_period=self.grace_period,
                shadow=self.shadow,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


class SocketRESTServer(RESTServer):
    """kserve's REST server, on ``listen_socket`` when one is given."""

    def __init__(self, listen_socket: socket.socket | None, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.listen_socket = listen_socket

    async def start(self):
        if self.listen_socket is None:
            await super().start()
            return
        # RESTServer.start, on the given socket (uvicorn.Server.serve takes sockets)
        self.create_application()
        await self._server.serve(sockets=[self.listen_socket])


class GuardedGRPCServer(GRPCServer):
    """kserve's gRPC server on ``host``, serving through ``GuardedServicer``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        data_plane,
        model_repository_extension,
        versions: dict[str, str],
        options: dict[str, int],
        request_logs: bool,
        grace_period: int,
        shadow: Any = None,
    ):
        super().__init__(
            port, data_plane, model_repository_extension, kwargs=options, grace_period=grace_period
        )
        self.host = host
        self.versions = versions
        self.request_logs = request_logs
        self.shadow = shadow

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    async def start(self, max_workers: int) -> None:
        """``GRPCServer.start`` with our address and servicer; kserve's per-call log line
        only with ``--request_logs`` (as for REST)."""
        from concurrent import futures

        from grpc import aio
        from kserve.logging import logger
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
        from kserve.protocol.grpc.interceptors import (
            ExceptionToStatusInterceptor,
            LoggingInterceptor,
        )

        interceptors = [ExceptionToStatusInterceptor()]
        if self.request_logs:
            interceptors.insert(0, LoggingInterceptor())
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=interceptors,
            options=list(self._kwargs.items()),
        )
        servicer = GuardedServicer(
            self._data_plane, self._model_repository_extension, self.versions, self.shadow
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(self.address)
        logger.info("Starting gRPC server on %s with %s threads", self.address, max_workers)
        await self._server.start()
        await self._server.wait_for_termination()


class GuardedServicer(InferenceServicer):
    """kserve's V2 gRPC service, refusing what ``RequestGuard`` refuses over REST."""

    def __init__(
        self, data_plane, model_repository_extension, versions: dict[str, str], shadow: Any = None
    ):
        super().__init__(data_plane, model_repository_extension)
        self.versions = versions
        self.shadow = shadow

    def _check(self, name: str, version: str) -> None:
        from grpc_interceptor.exceptions import NotFound

        # an unset string field of a gRPC message is "": no version asked for
        problem = refusal(self.versions, name, version or None)
        if problem is not None:
            raise NotFound(problem)

    async def ModelInfer(self, request, context):
        self._check(request.model_name, request.model_version)
        response = await super().ModelInfer(request, context)
        if self.shadow is not None:
            from kserve.utils.utils import to_headers

            from tsops.serving.shadow import SHADOW_HEADER

            metadata = to_headers(context)
            if SHADOW_HEADER not in metadata:  # a copy is never forwarded again
                # queued on the next turn of the loop, after gRPC has the answer to send
                asyncio.get_running_loop().call_soon(
                    self.shadow.submit_grpc, request.model_name, request, metadata
                )
        return response

    async def ModelReady(self, request, context):
        self._check(request.name, request.version)
        return await super().ModelReady(request, context)

    async def ModelMetadata(self, request, context):
        self._check(request.name, request.version)
        return await super().ModelMetadata(request, context)

    async def RepositoryModelLoad(self, request, context):
        from grpc_interceptor.exceptions import PermissionDenied

        raise PermissionDenied(REPOSITORY_DISABLED)

    async def RepositoryModelUnload(self, request, context):
        from grpc_interceptor.exceptions import PermissionDenied

        raise PermissionDenied(REPOSITORY_DISABLED)
