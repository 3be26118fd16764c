"""`ttjax serve`: an OpenAI-compatible HTTP server (FastAPI on uvicorn) over the continuous-batching engine.

    GET  /v1/models                 the one model served
    POST /v1/completions            prompt -> text; "stream": true sends server-sent events
    POST /v1/chat/completions       messages (through the model's chat template) -> an assistant message
    GET  /health                    200 while the engine runs, 503 once it failed or the server is stopping
    GET  /metrics                   Prometheus text (model.serving.metrics)

The engine steps in its own thread (model.serving.engine_loop); each request handler submits its
request with a sink that hands tokens to the handler's asyncio queue. A stream that ends early (the
client went away, or shutdown cancelled it) aborts its request, freeing its slot and blocks. With
an API key, /v1 and /metrics want "Authorization: Bearer KEY"; /health stays open for probes.

SIGTERM (or Ctrl-C): uvicorn stops accepting, requests on open connections get 503, requests in
flight run to their end for up to shutdown_timeout seconds and then end with finish_reason "abort"
(a stream gets its last chunk and [DONE]), the engine thread stops, and run() returns 0.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from model.errors import ConfigError, RequestError, TTJaxError
from model.serving import openai_protocol as protocol
from model.serving.engine_loop import EngineLoop

MAX_BODY_BYTES = 2 << 20  # a prompt of a long context is well under a megabyte of JSON


class EventStream(StreamingResponse):
    """Server-sent events, and on_close once the response ends however it ends (done, client gone, cancelled): a
    stream cancelled before its first chunk never runs its generator's cleanup, so the abort cannot live there."""

    def __init__(self, events, on_close):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


async def _read_json(request: HTTPRequest, limit: int):
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(f"the request body is {declared} bytes, more than this server's limit of {limit} (--max-body-bytes).", 413)
    body = bytearray()
    async for chunk in request.stream():  # a body sent without a length is counted as it comes
        body += chunk
        if len(body) > limit:
            raise RequestError(f"the request body is more than this server's limit of {limit} bytes (--max-body-bytes).", 413)
    if not body:
        raise RequestError("the request body is empty; send a JSON object.", 400)
    try:
        return json.loads(body)
    except ValueError as e:  # UnicodeDecodeError too
        raise RequestError(f"the request body is not valid JSON: {e}.", 400) from None
    except RecursionError:
        raise RequestError("the request body nests JSON deeper than this server parses.", 400) from None


async def _disconnected(request: HTTPRequest) -> None:
    """Returns when the client closes its connection (its body has been read, so the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(loop: EngineLoop, served: protocol.ServedModel, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               draining=lambda: False) -> FastAPI:
    """The ASGI app. draining() is True once shutdown began: new completions then get 503."""

    @asynccontextmanager
    async def lifespan(_app):
        yield
        loop.stop()  # after uvicorn's graceful wait: whatever still runs is aborted

    app = FastAPI(title="ttjax", summary="OpenAI-compatible serving of ttjax's engine", lifespan=lifespan)

    def refuse(e: RequestError) -> JSONResponse:
        loop.metrics.rejected.labels(str(e.status)).inc()
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
        return JSONResponse(e.body, e.status, headers=headers)

    @app.exception_handler(TTJaxError)
    async def bad_input(_request, e: TTJaxError):
        return refuse(e if isinstance(e, RequestError) else RequestError(str(e), 400))

    @app.exception_handler(Exception)
    async def fault(_request, e: Exception):  # a bug of the server's, not the client's: OpenAI's shape, and the traceback logged
        traceback.print_exception(e, file=sys.stderr)
        return refuse(RequestError(f"the server failed: {type(e).__name__}: {e}", 500, code="server_error"))

    @app.exception_handler(HTTPException)
    async def no_route(request, e: HTTPException):
        message = f"{request.method} {request.url.path}: {e.detail}" + (" (see /v1/models, /v1/completions, /v1/chat/completions)" if e.status_code == 404 else "")
        return refuse(RequestError(message, e.status_code))

    async def authorize(request: HTTPRequest):
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not given:
            raise RequestError("no API key: send it as 'Authorization: Bearer <key>' (this server was started with --api-key).", 401,
                               code="invalid_api_key")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise RequestError("the API key is not this server's (--api-key).", 401, code="invalid_api_key")

    async def accepting():
        if draining():
            raise RequestError("the server is shutting down and takes no new requests.", 503, code="shutting_down", retry_after=1)

    @app.get("/health")
    async def health():
        if not loop.alive or draining():
            state = "stopping" if draining() else f"engine failed: {loop.error}" if loop.error else "engine stopped"
            return JSONResponse({"status": state}, 503)
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(authorize)])
    async def metrics():
        return Response(loop.metrics.render(), media_type=loop.metrics.CONTENT_TYPE)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.get("/models")
    async def models():
        return {"object": "list", "data": [served.card()]}

    @v1.get("/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != served.name:
            raise RequestError(f"the model {model_id!r} does not exist; this server serves {served.name!r}.", 404, code="model_not_found")
        return served.card()

    async def answer(request: HTTPRequest, chat: bool):
        body = await _read_json(request, max_body_bytes)
        # Tokenizing a long prompt takes a while: off the event loop, so the streams in flight keep flowing.
        c = await asyncio.to_thread(protocol.parse, body, served, chat=chat)
        events: asyncio.Queue = asyncio.Queue()
        aio = asyncio.get_running_loop()

        def sink(kind, value):  # called from the engine thread
            try:
                aio.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the event loop closed (server stopped): no one is listening
                pass

        loop.submit(c.request, sink)
        rid = c.request.request_id
        if c.stream:
            return EventStream(_chunks(c, events), on_close=lambda: loop.abort(rid))
        waiter, gone = asyncio.ensure_future(events.get()), asyncio.ensure_future(_disconnected(request))
        try:
            while True:  # tokens are not needed here; wait for the end or the client leaving
                done, _ = await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    return Response(status_code=499)  # the client left; nobody reads this
                kind, value = waiter.result()
                if kind == "done":
                    return protocol.response(c, value)
                if kind == "error":
                    raise RequestError(f"the engine failed: {value}", 500, code="engine_failed")
                waiter = asyncio.ensure_future(events.get())
        finally:
            waiter.cancel()
            gone.cancel()
            loop.abort(rid)  # nothing if it finished

    async def _chunks(c: protocol.Completion, events: asyncio.Queue):
        writer = protocol.ChunkWriter(c, served.tokenizer)
        if first := writer.first():
            yield first
        while True:
            batch = [await events.get()]
            while not events.empty():  # tokens that piled up while the last chunk was sent go out as one
                batch.append(events.get_nowait())
            ids = [value for kind, value in batch if kind == "token"]
            ends = [(kind, value) for kind, value in batch if kind != "token"]
            chunk = writer.tokens(ids) if ids else ""
            if ends and ends[0][0] == "done":
                yield chunk + writer.done(ends[0][1])
                return
            if ends:  # the engine failed mid-stream: OpenAI's error event, which clients raise
                yield chunk + writer.event(RequestError(f"the engine failed: {ends[0][1]}", 500, code="engine_failed").body)
                return
            if chunk:
                yield chunk

    @v1.post("/completions", dependencies=[Depends(accepting)])
    async def completions(request: HTTPRequest):
        return await answer(request, chat=False)

    @v1.post("/chat/completions", dependencies=[Depends(accepting)])
    async def chat_completions(request: HTTPRequest):
        return await answer(request, chat=True)

    app.include_router(v1)
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening before uvicorn starts: a busy port is one sentence, port 0 gets a free one, and clients
    that connect while uvicorn starts wait in the backlog."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}.") from None
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn, telling the engine loop when shutdown begins: the loop ends the streams still running at the
    drain's deadline itself (a last chunk with finish_reason "abort", then [DONE]), before uvicorn's own
    timeout would cut their connections."""

    def __init__(self, config, on_shutdown):
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets=None):
        self.on_shutdown()
        await super().shutdown(sockets)


class Server:
    """The app on uvicorn, on a socket bound at construction (so .port is known, even for port 0)."""

    def __init__(self, loop: EngineLoop, served: protocol.ServedModel, *, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES, shutdown_timeout: float = 30.0,
                 log_level: str = "warning"):
        self.loop = loop
        self.socket = listening_socket(host, port)
        self.host, self.port = host, self.socket.getsockname()[1]
        app = create_app(loop, served, api_key=api_key, max_body_bytes=max_body_bytes, draining=lambda: self.uvicorn.should_exit)
        # uvicorn's own timeout is the backstop, for a response that is not a stream of the engine's.
        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=shutdown_timeout + 15, lifespan="on")
        self.uvicorn = _Uvicorn(config, lambda: loop.drain(shutdown_timeout))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then shut down gracefully; returns 0. uvicorn re-raises the signal that
        stopped it once it is done, to the handler that was there before it: a no-op one, so the process ends
        with the status the command returns, not by the signal."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        self.loop.start()
        self.uvicorn.run(sockets=[self.socket])
        self.loop.stop()
        return 0

    def start(self, timeout: float = 60.0) -> Server:
        """Serve from a background thread (tests, the load test), returning once it accepts."""
        self.loop.start()
        self._thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, name="ttjax-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.uvicorn.started:
            raise ConfigError(f"the server on {self.url} did not start within {timeout:.0f} s.")
        return self

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self.loop.stop()
