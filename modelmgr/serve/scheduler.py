"""Which models are loaded, for how long, and who may generate on them now (after ollama's).

A model loads on its first request, through the same plan as `modelmgr run` (backend choice by
memory fit, the safety checks), and stays loaded for its keep-alive after its last request. When
a new model does not fit the budget, the least recently used idle model is unloaded first; a
model with a request in flight or waiting is never unloaded. Each model takes as many requests
at once as its backend said it can (LoadedModel.max_batch); the rest wait in a bounded FIFO.

Everything here runs on the server's event loop; loading, unloading and planning (disk reads,
torch) go to threads so the loop keeps answering while a model loads.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelmgr.errors import BackendError, InvalidReference, ModelmgrError, NotCached, UnsafeModel
from modelmgr.serve.protocol import ApiError, client_closed
from modelmgr.serve.settings import ServeSettings, parse_duration
from modelmgr.units import format_size

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config
    from modelmgr.run.api import Backend, LoadedModel
    from modelmgr.run.plan import LoadPlan

log = logging.getLogger("modelmgr.serve")
REAP_INTERVAL = 0.25  # seconds between keep-alive checks: the resolution of keep_alive


@dataclass(eq=False)
class Runner:
    """One loaded model."""

    key: str  # the snapshot folder: an ID and its alias share one runner
    name: str  # as first requested
    plan: "LoadPlan"
    loaded: "LoadedModel"
    needed: int  # bytes, the backend's estimate: what the budget counts
    keep_alive: float | None
    slots: asyncio.Semaphore
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    active: int = 0  # generating or waiting
    running: int = 0  # generating
    expires_at: float | None = None  # monotonic; set while idle
    stopping: bool = False  # asked to unload once its requests end

    @property
    def backend(self) -> "Backend":
        return self.plan.backend

    @property
    def waiting(self) -> int:
        return self.active - self.running

    def describe(self) -> dict[str, Any]:
        expires_in = None if self.expires_at is None else max(0.0, self.expires_at - time.monotonic())
        return {
            "name": self.name, "model": self.plan.label, "path": str(self.plan.path), "backend": self.loaded.backend_name,
            "device": self.loaded.device, "dtype": self.loaded.dtype, "size": self.needed, "max_batch": self.loaded.max_batch,
            "running": self.running, "waiting": self.waiting, "keep_alive": self.keep_alive,
            "expires_in": None if self.active else (None if self.keep_alive is None else round(expires_in or 0.0, 1)),
            "loaded_at": self.loaded_at, "load_seconds": round(self.loaded.load_seconds, 3),
        }


class Lease:
    """A slot on a runner, held while one request generates."""

    def __init__(self, scheduler: "Scheduler", runner: Runner):
        self.scheduler, self.runner = scheduler, runner
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.scheduler._release(self.runner)


class Scheduler:
    def __init__(self, config: "Config", settings: ServeSettings):
        self.config = config
        self.settings = settings
        self.runners: dict[str, Runner] = {}
        self._load_lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None

    # --- requests ---------------------------------------------------------------------------

    async def acquire(self, name: str, *, keep_alive: Any = None, gone: "asyncio.Future | None" = None) -> Lease:
        """A slot on the model ``name``, loading it first if needed. Raises ApiError.

        ``keep_alive``: how long the model stays loaded after this request, as ollama's: each
        request sets it, and one that names none gets the server's (--keep-alive).
        ``gone``: done when the client has left; a request still queued then gives up its place.
        """
        override = self._keep_alive(keep_alive)
        runner = await self._runner(name)
        if runner.waiting >= self.settings.max_queue:
            raise ApiError(429, f"{name} has {runner.waiting} requests waiting, the most this server queues (serve.max_queue): retry shortly.",
                           type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
        if not runner.stopping:  # `modelmgr stop` on a busy model: it unloads when its requests end
            runner.keep_alive = self.settings.keep_alive if override is _UNSET else override
        runner.active += 1
        runner.expires_at = None
        try:
            await _take_slot(runner, gone)
        except BaseException:  # the client left while waiting
            runner.active -= 1
            self._mark_idle(runner)
            raise
        runner.running += 1
        return Lease(self, runner)

    def _release(self, runner: Runner) -> None:
        runner.running -= 1
        runner.active -= 1
        runner.slots.release()
        runner.last_used = time.monotonic()
        self._mark_idle(runner)

    def _mark_idle(self, runner: Runner) -> None:
        if runner.active == 0 and runner.keep_alive is not None:
            runner.expires_at = time.monotonic() + runner.keep_alive

    def _keep_alive(self, value: Any) -> Any:
        if value is None:
            return _UNSET
        try:
            return parse_duration(value, where="keep_alive")
        except ModelmgrError as exc:
            raise ApiError(400, str(exc), param="keep_alive") from None

    # --- loading ----------------------------------------------------------------------------

    def _resolve(self, name: str) -> tuple[str, str]:
        """(runner key, the label for messages) for a requested name, without loading anything."""
        from modelmgr.fetch.pull import find_cached
        from modelmgr.project.refs import parse_ref

        try:
            ref = parse_ref(name, aliases=self.config.aliases())
        except InvalidReference as exc:
            raise _not_found(name, str(exc)) from None
        if ref.is_local:
            raise _not_found(name, f"{name} is a folder; the server serves only models in its cache, by ID or alias.")
        cached = find_cached(ref, self.config)
        if cached is None:
            if not self.settings.pull:
                raise _not_found(name, f"{name} is not in this server's cache. Pull it first: modelmgr pull {ref}")
            return f"pull:{ref}", str(ref)
        return str(cached.path) + self._how(name), str(ref)

    def _how(self, name: str) -> str:
        """An alias may load its snapshot on another backend or dtype: that is another runner."""
        alias = self.config.models.get(name)
        return f"|{alias.backend or ''}|{alias.dtype or ''}" if alias and (alias.backend or alias.dtype) else ""

    async def _runner(self, name: str) -> Runner:
        key, _ = await asyncio.to_thread(self._resolve, name)
        runner = self.runners.get(key)
        if runner is not None:
            runner.last_used = time.monotonic()
            return runner
        async with self._load_lock:  # one load at a time: each one's fit depends on the others
            if key.startswith("pull:"):
                key = await asyncio.to_thread(self._pull, name)
            runner = self.runners.get(key)
            if runner is None:
                runner = await self._load(name, key)
            return runner

    def _pull(self, name: str) -> str:
        from modelmgr.fetch.pull import ensure_snapshot
        from modelmgr.project.refs import parse_ref

        try:
            return str(ensure_snapshot(parse_ref(name, aliases=self.config.aliases()), self.config).path) + self._how(name)
        except ModelmgrError as exc:
            raise _not_found(name, f"could not pull {name}: {exc}") from None

    def _plan(self, name: str) -> "LoadPlan":
        from modelmgr.run.plan import plan_load

        return plan_load(
            name, config=self.config, trust_remote_code=self.settings.trust_remote_code,
            allow_pickle=self.settings.allow_pickle, max_memory=self.settings.max_memory, max_batch=self.settings.parallel,
            alias_may_trust=False,  # only `serve --trust-remote-code` lets requests run a repo's code
        )

    async def _load(self, name: str, key: str) -> Runner:
        while True:
            try:
                plan = await asyncio.to_thread(self._plan, name)
            except UnsafeModel as exc:
                alias = self.config.models.get(name)
                ignored = (f"; trust_remote_code in [models.{name}] does not apply to the server"
                           if alias is not None and alias.trust_remote_code and not self.settings.trust_remote_code else "")
                raise ApiError(403, f"{exc} (for the server: start it with --trust-remote-code or --allow-pickle{ignored})",
                               type="permission_error", code="unsafe_model", param="model") from None
            except NotCached as exc:
                raise _not_found(name, str(exc)) from None
            except BackendError as exc:
                # Free memory may be what other, idle models hold: make room and plan again.
                if "does not fit" in str(exc) and await self._evict_one():
                    continue
                raise ApiError(503, str(exc), type="server_error", code="model_does_not_fit") from None
            needed = plan.selection.fit.needed or 0
            reason = self._over_budget(needed)
            if reason is None:
                break
            if not await self._evict_one():
                raise ApiError(503, f"{plan.label} needs ~{format_size(needed)} on {plan.backend.name}, but {reason}; "
                               "every loaded model is busy. Retry when one is idle, raise --max-memory/--max-loaded, or stop one (modelmgr stop).",
                               type="server_error", code="model_does_not_fit")
        log.info("loading %s on %s", plan.label, plan.backend.name)
        try:
            loaded = await asyncio.to_thread(plan.load)
        except ModelmgrError as exc:
            raise ApiError(503, str(exc), type="server_error", code="model_load_failed") from None
        runner = Runner(key=key, name=name, plan=plan, loaded=loaded, needed=needed, keep_alive=self.settings.keep_alive,
                        slots=asyncio.Semaphore(max(1, loaded.max_batch)))
        self.runners[key] = runner
        self._mark_idle(runner)  # until the request that caused the load takes its slot
        return runner

    def _over_budget(self, needed: int) -> str | None:
        settings = self.settings
        if settings.max_loaded is not None and len(self.runners) >= settings.max_loaded:
            return f"{len(self.runners)} of at most {settings.max_loaded} models are loaded (--max-loaded)"
        if settings.max_memory is not None:
            used = sum(r.needed for r in self.runners.values())
            if used + needed > settings.max_memory:
                return f"{format_size(used)} of the {format_size(settings.max_memory)} budget (--max-memory) is in use by {len(self.runners)} model(s)"
        return None

    async def _evict_one(self) -> bool:
        idle = [r for r in self.runners.values() if r.active == 0]
        if not idle:
            return False
        victim = min(idle, key=lambda r: r.last_used)
        await self.unload(victim, why="to make room")
        return True

    async def unload(self, runner: Runner, *, why: str) -> None:
        if self.runners.get(runner.key) is not runner:
            return
        del self.runners[runner.key]
        log.info("unloading %s (%s)", runner.name, why)
        await asyncio.to_thread(_free, runner)

    # --- lifecycle --------------------------------------------------------------------------

    async def stop_model(self, name: str) -> str:
        """Unload ``name`` now if idle, else as soon as its last request ends."""
        runner = self.find(name)
        if runner is None:
            raise ApiError(404, f"{name} is not loaded. `modelmgr ps` lists what is.", code="model_not_loaded", param="model")
        if runner.active:
            runner.keep_alive, runner.stopping = 0.0, True
            return "stopping"
        await self.unload(runner, why="stopped")
        return "unloaded"

    def find(self, name: str) -> Runner | None:
        for runner in self.runners.values():
            if name in (runner.name, runner.plan.label, runner.plan.model.ref.repo_id):
                return runner
        try:
            key, _ = self._resolve(name)
        except ApiError:
            return None
        return self.runners.get(key)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            now = time.monotonic()
            for runner in list(self.runners.values()):
                if runner.active == 0 and runner.expires_at is not None and now >= runner.expires_at:
                    await self.unload(runner, why="keep-alive expired")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for runner in list(self.runners.values()):
            await self.unload(runner, why="server stopping")


_UNSET = object()


async def _take_slot(runner: Runner, gone: "asyncio.Future | None") -> None:
    """Wait for a slot on ``runner``; raise client_closed() if ``gone`` is done first."""
    if gone is None or not runner.slots.locked():
        if gone is not None and gone.done():
            raise client_closed()
        await runner.slots.acquire()
        return
    waiter = asyncio.ensure_future(runner.slots.acquire())

    def give_back(task: asyncio.Future) -> None:  # a slot taken just as the client left goes to the next
        if not task.cancelled() and task.exception() is None:
            runner.slots.release()

    try:
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        waiter.add_done_callback(give_back)
        waiter.cancel()
        raise
    if not waiter.done():
        waiter.add_done_callback(give_back)
        waiter.cancel()
        raise client_closed()


_free_lock = threading.Lock()


def _free(runner: Runner) -> None:
    with _free_lock:
        try:
            runner.backend.unload(runner.loaded)
        except Exception as exc:  # noqa: BLE001 - a plugin's failure to clean up must not stop the server
            log.warning("unloading %s: %s: %s", runner.name, type(exc).__name__, exc)
        runner.loaded = None  # type: ignore[assignment]
        gc.collect()  # the model's tensors sit in reference cycles (modules point at each other)
        try:
            import ctypes

            ctypes.CDLL(None).malloc_trim(0)  # give the freed heap back to the OS, where budgets are measured
        except (OSError, AttributeError):
            pass


def _not_found(name: str, message: str) -> ApiError:
    return ApiError(404, message, code="model_not_found", param="model")
