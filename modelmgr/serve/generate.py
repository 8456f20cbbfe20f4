"""One request's generation, from the backend's blocking iterator to the event loop.

Each generation is iterated on its own thread (not a pool: eight streams must not wait for four
pool threads) and hands its pieces to the loop. Leaving the async iterator early, which is what
a client disconnecting does, cancels the generation, so its batch row or turn is freed at the
next token, and releases the slot.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, AsyncIterator

from modelmgr.errors import BackendError
from modelmgr.serve.protocol import ApiError, GenerateRequest, context_exceeded
from modelmgr.serve.stops import StopScanner

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.run.api import Generation
    from modelmgr.serve.scheduler import Lease, Runner

_END = object()


@dataclass
class Outcome:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


def _settings(request: GenerateRequest):
    from modelmgr.run.api import GenerationSettings

    return GenerationSettings(max_new_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p, seed=request.seed)


def context_limit(runner: "Runner") -> int | None:
    """Tokens a prompt plus its reply may take on a transformers model: the loaded model's
    positions, else what its config.json said. None for other backends (llama.cpp checks its own
    n_ctx; a plugin's model may have no such limit)."""
    from modelmgr.run.modelinfo import _CONTEXT_KEYS  # the keys config.json names a context by

    model = runner.loaded.model
    if type(model).__module__.split(".")[0] not in ("transformers", "transformers_modules"):
        return None
    config = getattr(model, "config", None)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return runner.plan.info.context_length or None


async def start(lease: "Lease", request: GenerateRequest) -> "tuple[Generation, GenerateRequest]":
    """Ask the backend for the generation (tokenizing and templating happen here, on a thread).

    On a model with a known context, a prompt that fills it is refused (400,
    context_length_exceeded) and max_tokens is cut so prompt + reply fit: the returned request
    has the max_tokens the generation runs with.
    """
    runner = lease.runner

    def create(request: GenerateRequest) -> "Generation":
        settings = _settings(request)
        if request.messages is not None:
            return runner.backend.generate(runner.loaded, request.messages, settings)
        return runner.backend.generate_text(runner.loaded, request.prompt or "", settings)

    try:
        generation = await asyncio.to_thread(create, request)
        limit = context_limit(runner)
        if limit is not None:
            room = limit - generation.prompt_tokens
            if room < 1 or request.max_tokens > room:
                generation.cancel()  # never iterated: nothing runs yet
            if room < 1:
                raise context_exceeded(limit, generation.prompt_tokens, chat=request.messages is not None)
            if request.max_tokens > room:
                request = replace(request, max_tokens=room)
                generation = await asyncio.to_thread(create, request)
    except BackendError as exc:  # the chat template refused the conversation, say
        raise ApiError(400, str(exc)) from None
    return generation, request


async def pieces(lease: "Lease", generation: "Generation", request: GenerateRequest, outcome: Outcome) -> AsyncIterator[str]:
    """The reply's text as it comes, cut at a stop string; fills ``outcome`` at the end."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    outcome.prompt_tokens = generation.prompt_tokens

    def pump() -> None:
        try:
            for piece in generation:
                loop.call_soon_threadsafe(queue.put_nowait, piece)
            loop.call_soon_threadsafe(queue.put_nowait, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            try:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            except RuntimeError:  # the loop is gone: the server is stopping
                pass

    thread = threading.Thread(target=pump, name="modelmgr-serve-generation", daemon=True)
    scanner = StopScanner(request.stop)
    finished = False
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise ApiError(500, f"generation failed: {item}", type="server_error", code="generation_failed")
            text = scanner.feed(item)
            if text:
                yield text
            if scanner.stopped:
                break
        tail = scanner.flush()
        if tail:
            yield tail
        finished = True
    finally:
        try:
            # On a thread: a one-at-a-time backend's cancel() waits for its current token.
            await asyncio.to_thread(generation.cancel)
            await asyncio.to_thread(thread.join, 60)
        finally:
            outcome.prompt_tokens = generation.prompt_tokens
            outcome.completion_tokens = generation.completion_tokens
            if finished and not scanner.stopped and generation.completion_tokens >= request.max_tokens:
                outcome.finish_reason = "length"
            lease.release()
