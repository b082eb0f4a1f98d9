"""The checks in front of the models, for both protocols.

``RequestGuard`` wraps kserve's REST app (an ASGI middleware); the gRPC endpoint
(``tsops.serving.model_server``) asks the same questions through ``refusal`` and
``REPOSITORY_DISABLED``, so a request is refused alike whichever protocol carries it.
"""

from __future__ import annotations

import re

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_MODEL_PATHS = (
    re.compile(
        r"/v2/(?:repository/)?models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
        r"(?:/(?:ready|infer|load|unload))?/?\Z"
    ),
    re.compile(r"/v1/models/(?P<name>[^/:]+)(?::predict|:explain)?/?\Z"),
)
# Models are loaded at start (--model); an unauthenticated unload would take a served
# model down, so the model repository extension is off on both protocols.
REPOSITORY_DISABLED = (
    "the model repository extension is disabled: models are loaded at start "
    "with --model; restart the server (or roll out a new revision) to change them"
)


def refusal(versions: dict[str, str], name: str, asked: str | None) -> str | None:
    """Why a request for model ``name`` (version ``asked``, ``None`` if it names none)
    cannot be served here, or ``None`` when it can. ``versions``: served name -> version."""
    if name not in versions:
        return f"model {name!r} is not served here; served models: {', '.join(sorted(versions))}"
    if asked is not None and asked != versions[name]:
        return (
            f"model {name!r} version {asked!r} is not served here; "
            f"this server serves version {versions[name]!r}"
        )
    return None


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
            await self._error(send, 403, REPOSITORY_DISABLED)
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
        query = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)
        asked = match.groupdict().get("version") or next(
            (v for k, v in query if k == "model_version"), None
        )
        problem = refusal(self.versions, name, asked)
        if problem is not None:
            return problem
        if asked is None:
            return scope
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
