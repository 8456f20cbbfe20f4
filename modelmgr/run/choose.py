"""The choice of backend: each measured against the model here and now (available? fits in the
free memory?), the first that fits in auto order, and advice with the numbers when none does."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from modelmgr.errors import BackendError, ModelmgrError
from modelmgr.run.api import AUTO, DTYPES, Availability, Backend, LoadOptions
from modelmgr.run.memory import cap
from modelmgr.run.modelinfo import ModelInfo
from modelmgr.run.registry import Registry, get_registry
from modelmgr.units import format_size

# `--backend auto` tries these in order and takes the first that is available and fits;
# int8 only when it runs on a GPU (8-bit on a CPU saves memory but is slower than float32).
AUTO_ORDER = ("cuda", "int8", "cpu")


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


def reads(backend: Backend, info: ModelInfo) -> bool:
    """Whether ``backend`` loads weights in ``info``'s format (GGUF, safetensors, ...)."""
    formats = getattr(backend, "weight_formats", None)
    return formats is None or info.weight_format is None or info.weight_format in formats


def assess(backend: Backend, info: ModelInfo, options: LoadOptions) -> Fit:
    """Whether ``backend`` can take ``info`` here. Never raises for the backend's own failures."""
    if not reads(backend, info):
        formats = " and ".join(backend.weight_formats or ())
        return Fit(backend.name, False, f"it loads {formats} weights, not {info.weight_format}", None, None, None)
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
    and cpu that is available and fits; for weights none of those reads (GGUF), the first
    registered backend that declares the format in ``weight_formats`` and fits. Raises
    BackendError with the numbers when nothing fits.
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
    # For a format the built-ins do not read (GGUF), the backends that declare it: llama.cpp's.
    # transformers' formats stay with the built-ins: a plugin that reads anything is not a default.
    foreign = info.weight_format is not None and info.weight_format not in (Backend.weight_formats or ())
    declared = [name for name, backend in registry.backends.items()
                if foreign and name not in AUTO_ORDER and info.weight_format in (getattr(backend, "weight_formats", None) or ())]
    candidates = [name for name in AUTO_ORDER if name in registry.backends and reads(registry.backends[name], info)] + declared
    if foreign and not candidates:
        installed = ", ".join(registry.names()) or "none"
        hint = " For GGUF files, install the llama.cpp backend: pip install 'modelmgr[gguf]' plugins/llamacpp (the modelmgr-llamacpp plugin)." if info.weight_format == "gguf" else ""
        raise BackendError(f"{label} has {info.weight_format} weights, and no installed backend loads them (installed: {installed}).{hint}")
    if foreign and len(candidates) == 1:
        registry.backends[candidates[0]].resolve_dtype(info, options)  # an unsupported --dtype says so plainly
    for name in candidates:
        backend = registry.backends[name]
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
