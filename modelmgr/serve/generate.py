"""One request's generation, from the backend's blocking iterator to the event loop.

Each generation is iterated on its own thread (not a pool: eight streams must not wait for four
pool threads) and hands its pieces to the loop. Leaving the async iterator early, which is what
a client disconnecting does, cancels the generation, so its batch row or turn is freed at the
next token, and releases the slot.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator

from modelmgr.errors import BackendError
from modelmgr.serve.protocol import ApiError, GenerateRequest
from modelmgr.serve.stops import StopScanner

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.run.api import Generation
    from modelmgr.serve.scheduler import Lease

_END = object()


@dataclass
class Outcome:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"


def _settings(request: GenerateRequest):
    from modelmgr.run.api import GenerationSettings

    return GenerationSettings(max_new_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p, seed=request.seed)


async def start(lease: "Lease", request: GenerateRequest) -> "Generation":
    """Ask the backend for the generation (tokenizing and templating happen here, on a thread)."""
    runner = lease.runner
    settings = _settings(request)

    def create() -> "Generation":
        if request.messages is not None:
            return runner.backend.generate(runner.loaded, request.messages, settings)
        return runner.backend.generate_text(runner.loaded, request.prompt or "", settings)

    try:
        return await asyncio.to_thread(create)
    except BackendError as exc:  # the chat template refused the conversation, say
        raise ApiError(400, str(exc)) from None


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
