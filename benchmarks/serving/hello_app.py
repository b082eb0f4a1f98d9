"""The ceiling: endpoints that read a POST body and answer a small fixed JSON.

``app`` is a bare ASGI callable; ``fastapi_app`` is the same on FastAPI (the framework
kserve's server is built on). Served by ``run.py`` with the tsops venv's uvicorn, uvloop
and httptools, so the HTTP stack is the one tsops' server runs on.
"""

from fastapi import FastAPI, Request, Response

BODY = b'{"message":"hello"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def _fastapi() -> FastAPI:
    # no ``from __future__ import annotations`` here: FastAPI reads the handler's
    # annotations at runtime to inject the Request
    api = FastAPI()

    @api.post("/hello")
    async def hello(request: Request) -> Response:
        await request.body()
        return Response(BODY, media_type="application/json")

    return api


fastapi_app = _fastapi()
