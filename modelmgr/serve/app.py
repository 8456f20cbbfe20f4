"""The HTTP application: the OpenAI routes, modelmgr's own (/api/ps, /api/stop), the key check,
the body limit and CORS, on starlette. Imported only by `modelmgr serve`."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from modelmgr._version import __version__
from modelmgr.serve import generate
from modelmgr.serve.catalog import list_models
from modelmgr.serve.protocol import ApiError, GenerateRequest, chunk_object, client_closed, completion_object, new_id, parse_generate, parse_json, usage
from modelmgr.serve.scheduler import Scheduler

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from modelmgr.project.config import Config
    from modelmgr.serve.settings import ServeSettings

log = logging.getLogger("modelmgr.serve")
OPEN_PATHS = ("/health", "/")  # a load balancer's probe needs no key, and learns nothing from it


def json_response(body: Any, **options: Any) -> "JSONResponse":
    # starlette is imported when the first answer is built, not when this module is: the core's
    # import checks hold for every module, the server's own included.
    from starlette.responses import JSONResponse

    return JSONResponse(body, **options)


def error_response(error: ApiError) -> "JSONResponse":
    return json_response(error.body(), status_code=error.status, headers=error.headers)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class Server:
    def __init__(self, config: "Config", settings: "ServeSettings"):
        self.config = config
        self.settings = settings
        self.scheduler = Scheduler(config, settings)
        self.started = time.time()

    # --- plumbing ---------------------------------------------------------------------------

    def check_key(self, request: Request) -> None:
        key = self.settings.api_key
        if not key or request.url.path in OPEN_PATHS:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest takes the same time however much of the key matches.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY with the key the server was started with.",
                           type="invalid_request_error", code="invalid_api_key")

    async def read_json(self, request: Request) -> dict[str, Any]:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body is over {limit // 1024**2} MB, the most this server reads.", code="body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is over {limit // 1024**2} MB, the most this server reads.", code="body_too_large")
        return parse_json(bytes(body))

    # --- routes -----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__, "loaded": len(self.scheduler.runners)})

    async def models(self, request: Request) -> Response:
        import asyncio

        data = await asyncio.to_thread(list_models, self.config)
        return json_response({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        import asyncio

        wanted = request.path_params["model_id"]
        for entry in await asyncio.to_thread(list_models, self.config):
            if entry["id"] == wanted:
                return json_response(entry)
        raise ApiError(404, f"The model '{wanted}' does not exist in this server's cache. Pull it first: modelmgr pull {wanted}",
                       code="model_not_found", param="model")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def ps(self, request: Request) -> Response:
        return json_response({"models": [runner.describe() for runner in self.scheduler.runners.values()]})

    async def stop(self, request: Request) -> Response:
        data = await self.read_json(request)
        name = data.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "'model' is required: the model to unload.", param="model")
        return json_response({"model": name, "status": await self.scheduler.stop_model(name)})

    # --- generation -------------------------------------------------------------------------

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        parsed = parse_generate(await self.read_json(request), chat=chat, max_tokens_cap=self.settings.max_tokens_cap)
        # The body is read: what comes next from the client is its disconnect. A request that
        # leaves while queued gives up its place; one that leaves mid-reply cancels its generation.
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            lease = await self.scheduler.acquire(parsed.model, keep_alive=parsed.keep_alive, gone=gone)
            try:
                generation, parsed = await generate.start(lease, parsed)
            except BaseException:
                lease.release()
                raise
            outcome = generate.Outcome()
            text = generate.pieces(lease, generation, parsed, outcome)
            if parsed.stream:
                # From here the response watches the connection itself (and closes ``text``): the
                # watcher must be gone before it starts reading the client's messages.
                await _stop(gone)
                from starlette.responses import StreamingResponse

                return StreamingResponse(self._events(text, parsed, outcome, chat=chat), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            reply = await _unless_gone(_join(text), gone)
        finally:
            await _stop(gone)
        if parsed.echo:
            reply = (parsed.prompt or "") + reply
        return json_response(completion_object(chat=chat, id=new_id(chat), model=parsed.model, text=reply, finish=outcome.finish_reason,
                                              prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens))

    async def _events(self, text, parsed: GenerateRequest, outcome: "generate.Outcome", *, chat: bool):
        ident, created = new_id(chat), int(time.time())

        def event(**fields: Any) -> str:
            return f"data: {_dumps(chunk_object(chat=chat, id=ident, model=parsed.model, created=created, **fields))}\n\n"

        try:
            if chat:
                yield event(role=True, text="")
            elif parsed.echo and parsed.prompt:
                yield event(text=parsed.prompt)
            async for piece in text:
                yield event(text=piece)
        except ApiError as error:  # the status is sent already: the error goes in the stream, as OpenAI does
            yield f"data: {_dumps(error.body())}\n\n"
            return
        finally:
            await text.aclose()  # a client that left cancels its generation here
        yield event(text=None if chat else "", finish=outcome.finish_reason)
        if parsed.include_usage:
            yield event(usage_counts=usage(outcome.prompt_tokens, outcome.completion_tokens))
        yield "data: [DONE]\n\n"


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (once the body is read, the next message is that)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _stop(task: asyncio.Future) -> None:
    task.cancel()
    await asyncio.wait({task})  # never raises, not even the task's CancelledError


async def _join(text) -> str:
    return "".join([piece async for piece in text])


async def _unless_gone(work, gone: asyncio.Future):
    """``work``'s result, or 499 once the client has gone: ``work`` is cancelled then, which
    cancels the generation and frees its slot."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            await _stop(task)
    if task.cancelled():
        raise client_closed()
    return task.result()


def create_app(config: "Config", settings: "ServeSettings") -> "Starlette":
    from starlette.applications import Starlette
    from starlette.routing import Route

    server = Server(config, settings)

    def route(handler):
        async def endpoint(request: Request) -> Response:
            try:
                server.check_key(request)
                return await handler(request)
            except ApiError as error:
                if error.status >= 500:
                    log.warning("%s %s: %s", request.method, request.url.path, error.message)
                return error_response(error)
        return endpoint

    routes = [
        Route("/", route(server.health), methods=["GET"]),
        Route("/health", route(server.health), methods=["GET"]),
        Route("/v1/models", route(server.models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", route(server.model), methods=["GET"]),
        Route("/v1/chat/completions", route(server.chat), methods=["POST"]),
        Route("/v1/completions", route(server.completions), methods=["POST"]),
        Route("/api/ps", route(server.ps), methods=["GET"]),
        Route("/api/stop", route(server.stop), methods=["POST"]),
    ]
    middleware = []
    if settings.cors_origins:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = "no such route: the server answers /v1/chat/completions, /v1/completions, /v1/models, /health, /api/ps and /api/stop."
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return error_response(ApiError(status, message, code="not_found" if status == 404 else "method_not_allowed"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        server.scheduler.start()
        for name in settings.preload:
            try:
                (await server.scheduler.acquire(name)).release()
            except ApiError as error:
                log.warning("preloading %s: %s", name, error.message)
        yield
        await server.scheduler.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.server = server
    return app
