"""The Backend interface, load options, the registry of backends and the choice among them.

A backend turns a snapshot folder into a model and a tokenizer and generates text with them.
Backends come from plugins (the built-in cpu, cuda and int8 ones too) through the
``register_backends`` hook. This module never imports torch: choosing a backend needs only
config.json, the safetensors headers and how much memory is free.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from modelmgr.errors import BackendError, ModelmgrError, UnsafeModel
from modelmgr.run.memory import cap, free_ram
from modelmgr.run.modelinfo import ModelInfo, estimate_memory, read_model_info
from modelmgr.project.refs import ModelRef, is_commit, parse_ref
from modelmgr.units import format_size

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.project.config import Config, ModelAlias
    from modelmgr.fetch.events import EventSink

DTYPES = ("auto", "float32", "bfloat16", "float16")
AUTO = "auto"
# `--backend auto` tries these in order and takes the first that is available and fits;
# int8 only when it runs on a GPU (8-bit on a CPU saves memory but is slower than float32).
AUTO_ORDER = ("cuda", "int8", "cpu")
Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": text}


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # why not, and how to fix it; may also say something useful when ok

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    dtype: str = AUTO
    max_memory: int | None = None  # bytes; caps the free memory a backend may plan with
    context_length: int | None = None  # tokens the KV cache is sized for; None: the model's, capped
    trust_remote_code: bool = False
    allow_pickle: bool = False
    commit: str | None = None  # the 40-hex commit the user pinned; None for a branch, a tag or a local folder

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BackendError(f"Unknown dtype {self.dtype!r}. Valid dtypes: {', '.join(DTYPES)}.")


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    backend_name: str
    device: str
    dtype: str
    load_seconds: float = 0.0


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy: the same prompt always gets the same reply
    top_p: float | None = None  # None: the model's own generation_config decides
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Generation:
    """A reply being generated. Iterating yields text pieces as the model produces them.

    ``prompt_tokens`` is known from the start; ``completion_tokens`` once iteration ends.
    ``cancel()`` stops generation early (Ctrl-C) and may be called from the consuming thread.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - the interface
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop generating; the default has nothing running in the background to stop."""


class Backend:
    """Base class for backends. Subclasses set ``name`` and ``description`` and implement
    ``load`` and ``generate``; the defaults of the rest suit a backend that runs in RAM."""

    name: str = ""
    description: str = ""
    dtypes: tuple[str, ...] = ("float32",)  # compute dtypes it accepts; the first is its default

    def available(self) -> Availability:
        """Whether this backend can run here. Must be cheap: `modelmgr backends` asks every one."""
        return Availability(True)

    def device(self) -> str:
        """Where it would put the model here: "cpu" or "cuda" (auto selection asks)."""
        return "cpu"

    def resolve_dtype(self, info: ModelInfo, options: LoadOptions) -> str:
        """The dtype this backend will compute in, given the model and the options."""
        if options.dtype == AUTO:
            return self.dtypes[0]
        if options.dtype not in self.dtypes:
            raise BackendError(
                f"the {self.name} backend computes in {' or '.join(self.dtypes)}, not {options.dtype}. "
                f"Use --dtype {self.dtypes[0]} or another --backend."
            )
        return options.dtype

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        """Bytes this backend needs to load ``info`` and generate with it."""
        return estimate_memory(info, dtype=self.resolve_dtype(info, options), context_length=options.context_length).total

    def free_memory(self) -> int | None:
        """Bytes of the memory this backend would use that are free now; None if unknown."""
        return free_ram()

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        raise NotImplementedError(f"backend {self.name!r} does not implement load()")

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        """Start a reply to ``messages`` (apply the chat template if the model has one)."""
        raise NotImplementedError(f"backend {self.name!r} does not implement generate()")


# ---------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Registry:
    backends: Mapping[str, Backend]  # in registration order
    plugins: Mapping[str, str]  # backend name -> the plugin that registered it
    problems: tuple[str, ...] = ()  # duplicates, bad names, plugins whose hook raised

    def names(self) -> list[str]:
        return list(self.backends)

    def get(self, name: str) -> Backend:
        backend = self.backends.get(name)
        if backend is None:
            valid = ", ".join(sorted(self.backends)) or "none (no backend plugin is installed or allowed)"
            raise BackendError(f"Unknown backend {name!r}. Valid backends: {valid}.")
        return backend


def _valid_name(name: object) -> bool:
    """Names go on command lines and into config files: keep them plain."""
    return isinstance(name, str) and name != AUTO and re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) is not None


def get_registry() -> Registry:
    """Every backend the loaded plugins register. Built afresh each call (cheap: no imports),
    so plugins registered or removed at run time (tests) are seen."""
    from modelmgr.run.plugins import get_plugin_manager

    backends: dict[str, Backend] = {}
    plugins: dict[str, str] = {}
    problems: list[str] = []
    hook = get_plugin_manager().hook.register_backends
    # Each plugin's implementation is called on its own, in pluggy's call order (the built-in
    # plugin is tryfirst, so its names cannot be taken), so one that raises is reported by name
    # and the others still register.
    for impl in reversed(hook.get_hookimpls()):
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue

        def register(backend: Backend, _plugin: str = impl.plugin_name) -> None:
            name = getattr(backend, "name", None)
            if not _valid_name(name):
                problems.append(f"plugin {_plugin!r} registered a backend with an invalid name {name!r} (lowercase letters, digits, '-' and '_'; not 'auto'); skipped.")
            elif name in backends:
                problems.append(f"plugin {_plugin!r} registered backend {name!r}, which plugin {plugins[name]!r} already registered; the first one is kept.")
            else:
                backends[name] = backend
                plugins[name] = _plugin

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not hide the others' backends
            problems.append(f"plugin {impl.plugin_name!r} failed in register_backends: {type(exc).__name__}: {exc}")
    return Registry(backends, plugins, tuple(problems))


# ---------------------------------------------------------------------------- fit and selection


@dataclass(frozen=True)
class Fit:
    """One backend measured against one model, here and now."""

    backend: str
    available: bool
    reason: str
    dtype: str | None
    needed: int | None  # bytes; None when the backend could not estimate
    free: int | None  # bytes, capped by max_memory; None when unknown or unavailable
    capped: bool = False  # free memory is the user's --max-memory, not what the machine has

    @property
    def fits(self) -> bool:
        return self.available and (self.needed is None or self.free is None or self.needed <= self.free)

    def describe(self) -> str:
        if not self.available:
            return f"{self.backend} unavailable ({self.reason.split(';')[0].rstrip('.')})"
        needed = format_size(self.needed) if self.needed is not None else "an unknown amount"
        free = "unknown" if self.free is None else format_size(self.free)
        return f"needs {needed} on {self.backend} ({self.dtype}), {free} {'allowed by --max-memory' if self.capped else 'free'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "available": self.available, "reason": self.reason, "dtype": self.dtype,
            "needed": self.needed, "free": self.free, "fits": self.fits,
        }


def assess(backend: Backend, info: ModelInfo, options: LoadOptions) -> Fit:
    """Whether ``backend`` can take ``info`` here. Never raises for the backend's own failures."""
    try:
        availability = backend.available()
    except Exception as exc:  # noqa: BLE001 - a plugin's bug shows as a reason, not a crash
        availability = Availability(False, f"available() failed: {type(exc).__name__}: {exc}")
    try:
        dtype = backend.resolve_dtype(info, options)
        needed: int | None = backend.estimate(info, options)
    except ModelmgrError as exc:
        return Fit(backend.name, False, str(exc), None, None, None)
    except Exception as exc:  # noqa: BLE001
        dtype, needed = None, None
        availability = availability if not availability.ok else Availability(False, f"estimate() failed: {type(exc).__name__}: {exc}")
    if not availability.ok:
        return Fit(backend.name, False, availability.reason, dtype, needed, None)
    try:
        machine = backend.free_memory()
    except Exception:  # noqa: BLE001 - unknown free memory never blocks a load
        machine = None
    free = cap(machine, options.max_memory)
    capped = options.max_memory is not None and (machine is None or options.max_memory < machine)
    return Fit(backend.name, True, availability.reason, dtype, needed, free, capped)


@dataclass(frozen=True)
class Selection:
    backend: Backend
    fit: Fit

    @property
    def dtype(self) -> str:
        return self.fit.dtype or "auto"


def _alternatives(registry: Registry, info: ModelInfo, options: LoadOptions, tried: set[tuple[str, str | None]]) -> list[str]:
    """Built-in backend/dtype choices that would fit, as the flags that pick them. Only the
    built-ins: a toy or special-purpose plugin backend "fitting" is no advice for this model."""
    hints = []
    for name in AUTO_ORDER:
        backend = registry.backends.get(name)
        if backend is None:
            continue
        for dtype in dict.fromkeys([options.dtype, *(d for d in backend.dtypes if d in DTYPES)]):
            fit = assess(backend, info, replace(options, dtype=dtype))
            if (name, fit.dtype) in tried or not fit.fits or fit.needed is None:
                continue
            tried.add((name, fit.dtype))
            flag = f"--backend {name}" + (f" --dtype {dtype}" if dtype not in (options.dtype, AUTO) else "")
            hints.append(f"{flag} ({format_size(fit.needed)})")
            break  # the backend's preferred dtype that fits is advice enough
    return hints


def _refuse(label: str, fits: list[Fit], registry: Registry, info: ModelInfo, options: LoadOptions) -> BackendError:
    tried = {(fit.backend, fit.dtype) for fit in fits}
    hints = _alternatives(registry, info, options, tried)
    if hints:
        advice = "Try " + " or ".join(hints[:3])
    elif any(fit.capped for fit in fits):
        advice = "Raise --max-memory, or pick a smaller model"
    else:
        advice = "Free some memory or pick a smaller model"
    lead = "does not fit" if any(fit.available for fit in fits) else "cannot be loaded here"
    return BackendError(f"{label} {lead}: " + "; ".join(fit.describe() for fit in fits) + f". {advice}.")


def select_backend(
    info: ModelInfo,
    options: LoadOptions,
    requested: str = AUTO,
    *,
    registry: Registry | None = None,
    label: str | None = None,
) -> Selection:
    """The backend to load ``info`` with. ``requested`` is a backend name or "auto".

    Auto asks the ``select_backend`` hook first, then takes the first of cuda, int8 (on a GPU)
    and cpu that is available and fits. Raises BackendError with the numbers when nothing fits.
    """
    registry = registry if registry is not None else get_registry()
    label = label or str(info.path)
    if requested != AUTO:
        backend = registry.get(requested)
        backend.resolve_dtype(info, options)  # an unsupported --dtype says so plainly
        fit = assess(backend, info, options)
        if not fit.available:
            raise BackendError(f"the {requested} backend cannot load {label} here: {fit.reason}")
        if not fit.fits:
            raise _refuse(label, [fit], registry, info, options)
        return Selection(backend, fit)

    from modelmgr.run.plugins import get_plugin_manager

    chosen = get_plugin_manager().hook.select_backend(info=info, options=options, backends=dict(registry.backends))
    if chosen is not None:
        if chosen not in registry.backends:
            raise BackendError(f"a plugin's select_backend hook chose {chosen!r}, which is not a registered backend. Valid backends: {', '.join(registry.names())}.")
        return select_backend(info, options, chosen, registry=registry, label=label)

    fits = []
    for name in AUTO_ORDER:
        backend = registry.backends.get(name)
        if backend is None:
            continue
        fit = assess(backend, info, options)
        if fit.available and name == "int8" and backend.device() == "cpu":
            continue  # 8-bit on a CPU is a memory saver to ask for, not a default
        if fit.fits:
            return Selection(backend, fit)
        fits.append(fit)
    if not fits:
        valid = ", ".join(registry.names()) or "none"
        raise BackendError(
            f"no built-in backend (cuda, int8, cpu) is installed to load {label} automatically. "
            f"Installed backends: {valid}. Pass --backend NAME, or install the transformers plugin with pip install 'modelmgr[run]'."
        )
    raise _refuse(label, fits, registry, info, options)


# ---------------------------------------------------------------------------- from a reference to a loaded model


def check_load_safety(info: ModelInfo, options: LoadOptions, *, label: str, repo_id: str | None, commit: str | None) -> None:
    """Refuse what would run code from the model's files without the user's informed consent.

    Lives in the core, not in each backend, so a third-party backend cannot forget it.
    """
    if info.has_remote_code:
        pin = f"{repo_id}@{commit}" if repo_id and commit else None
        if not options.trust_remote_code:
            how = f"pass --trust-remote-code and pin the commit you reviewed: {pin}" if pin else "pass --trust-remote-code"
            raise UnsafeModel(
                f"{label} ships its own Python code (config.json has auto_map) and loading it would run that code. "
                f"If you trust it, {how}."
            )
        if repo_id and options.commit is None:
            # A branch or tag can move to new code after it was reviewed: only a commit is what you read.
            raise UnsafeModel(
                f"refusing to run remote code from {label}, which names a branch or tag that can change. "
                f"Pin the commit: {pin} --trust-remote-code."
            )
    if info.weight_format == "pickle" and not options.allow_pickle:
        shown = ", ".join(info.weight_files[:3]) + (", ..." if len(info.weight_files) > 3 else "")
        raise UnsafeModel(
            f"{label} has only pickle weights ({shown}); pickle weights can run code when loaded. "
            f"Pass --allow-pickle if you trust {label}, or use a model with safetensors weights."
        )


@dataclass(frozen=True)
class LoadPlan:
    """Everything decided before the first byte of weights is read."""

    model: "ResolvedModel"
    info: ModelInfo
    options: LoadOptions
    selection: Selection

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def commit(self) -> str | None:
        return self.model.commit

    @property
    def backend(self) -> Backend:
        return self.selection.backend

    def load(self) -> LoadedModel:
        backend = self.backend
        started = time.perf_counter()
        try:
            loaded = backend.load(self.path, self.options)
        except ModelmgrError:
            raise
        except MemoryError as exc:
            raise BackendError(f"ran out of memory loading {self.label} on {backend.name}: try --backend int8, a 16-bit --dtype or a smaller model.") from exc
        except Exception as exc:
            raise BackendError(f"the {backend.name} backend failed to load {self.label}: {type(exc).__name__}: {exc}") from exc
        if self.model.repo_id is not None:
            from modelmgr.cache.recency import record_use

            # snapshots/{commit} -> the repo folder -> the cache it lives in: prune evicts by this.
            record_use(self.path.parents[2], self.model.repo_id)
        return replace(loaded, load_seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class ResolvedModel:
    """A reference turned into a folder on disk."""

    label: str  # how messages name it: org/name[@revision] or the folder
    ref: ModelRef
    path: Path
    repo_id: str | None  # None for a local folder
    commit: str | None
    alias: "ModelAlias | None" = None


def resolve_model(text: str | ModelRef, *, config: "Config", on_event: "EventSink | None" = None) -> ResolvedModel:
    """The snapshot folder for a reference: a local folder as is, a Hub model from the cache,
    pulled first when it is not there (offline: only the cache)."""
    if isinstance(text, ModelRef):
        ref, alias = text, None
    else:
        ref = parse_ref(text, aliases=config.aliases())
        name = text.strip().partition("@")[0]
        alias = config.models.get(name) if not ref.is_local and "/" not in name else None
    if ref.is_local:
        return ResolvedModel(str(ref.local_path), ref, ref.local_path, None, None)
    from modelmgr.fetch.pull import ensure_snapshot

    snapshot = ensure_snapshot(ref, config, **({"on_event": on_event} if on_event else {}))
    return ResolvedModel(str(ref), ref, snapshot.path, snapshot.repo_id, snapshot.commit, alias)


def _pick(explicit: str | None, alias_value: str | None, configured: str | None) -> str:
    for value in (explicit, alias_value, configured):
        if value and value != AUTO:
            return value
    return AUTO


def plan_load(
    text: str | ModelRef,
    *,
    config: "Config",
    backend: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    context_length: int | None = None,
    max_memory: int | None = None,
    on_event: "EventSink | None" = None,
) -> LoadPlan:
    """Resolve a reference (pulling it when needed), read the model, check it is safe to load,
    and choose the backend. ``backend``/``dtype``: explicit choices; None or "auto" defers to the
    alias's setting, then the config's, then automatic choice."""
    model = resolve_model(text, config=config, on_event=on_event)
    alias = model.alias
    options = LoadOptions(
        dtype=_pick(dtype, alias.dtype if alias else None, config.dtype),
        max_memory=max_memory if max_memory is not None else config.max_memory,
        context_length=context_length,
        trust_remote_code=bool(trust_remote_code or (alias and alias.trust_remote_code)),
        allow_pickle=allow_pickle,
        commit=model.ref.revision if model.ref.revision and is_commit(model.ref.revision) else None,
    )
    info = read_model_info(model.path)
    check_load_safety(info, options, label=model.label, repo_id=model.repo_id, commit=model.commit)
    requested = _pick(backend, alias.backend if alias else None, config.backend)
    selection = select_backend(info, options, requested, label=model.label)
    return LoadPlan(model, info, options, selection)


def load(
    model: str,
    backend: str = AUTO,
    *,
    dtype: str | None = None,
    max_memory: int | str | None = None,
    context_length: int | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    offline: bool | None = None,
    endpoints: Sequence[str] = (),
    config: "Config | None" = None,
    on_event: "EventSink | None" = None,
) -> tuple[Any, Any]:
    """Load a model by ID, ``ID@revision``, alias or local folder; return ``(model, tokenizer)``.

    Pulls it into the cache first when needed. ``backend="auto"`` picks by what is available and
    fits (or the alias's or config's backend when they name one).
    """
    from modelmgr.project.config import load_config
    from modelmgr.units import parse_size

    if config is None:
        config = load_config(flags={"hub.offline": True if offline else None}, flag_endpoints=tuple(endpoints))
    plan = plan_load(
        model, config=config, backend=backend, dtype=dtype, trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, context_length=context_length,
        max_memory=parse_size(max_memory) if max_memory is not None else None, on_event=on_event,
    )
    loaded = plan.load()
    return loaded.model, loaded.tokenizer


__all__ = [
    "AUTO_ORDER", "Availability", "Backend", "DTYPES", "Fit", "Generation", "GenerationSettings", "LoadOptions",
    "LoadPlan", "LoadedModel", "Message", "Registry", "Selection", "assess", "check_load_safety", "get_registry",
    "load", "plan_load", "select_backend",
]


# ---------------------------------------------------------------------------- what is installed


@dataclass(frozen=True)
class BackendStatus:
    name: str
    description: str
    plugin: str
    source: str  # "built-in", "distribution version", or "registered in code"
    available: bool
    reason: str
    device: str | None
    free: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def backend_statuses(registry: Registry | None = None) -> list[BackendStatus]:
    """Every registered backend with where it comes from and whether it works here; built-ins first."""
    from modelmgr.run.plugins import plugin_infos

    registry = registry if registry is not None else get_registry()
    infos = {info.name: info for info in plugin_infos()}
    statuses = []
    for name, backend in registry.backends.items():
        plugin = registry.plugins[name]
        info = infos.get(plugin)
        try:
            availability = backend.available()
        except Exception as exc:  # noqa: BLE001 - shown, not fatal
            availability = Availability(False, f"available() failed: {type(exc).__name__}: {exc}")
        device = free = None
        if availability.ok:
            try:
                device, free = backend.device(), backend.free_memory()
            except Exception:  # noqa: BLE001 - the listing matters more than these two columns
                pass
        statuses.append(BackendStatus(
            name, backend.description, plugin, info.source if info else "registered in code",
            availability.ok, availability.reason, device, free,
        ))
    statuses.sort(key=lambda status: status.source != "built-in")  # stable: registration order within
    return statuses
