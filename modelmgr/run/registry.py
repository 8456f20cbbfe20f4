"""The registry: every backend the loaded plugins register, and what `modelmgr backends` shows of them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from modelmgr.errors import UnknownBackend
from modelmgr.run.api import AUTO, Availability, Backend


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
            raise UnknownBackend(f"Unknown backend {name!r}. Valid backends: {valid}.")
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
    formats: tuple[str, ...] | None = None  # the weight formats it loads (None: any)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["formats"] = list(self.formats) if self.formats is not None else None
        return data


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
            availability.ok, availability.reason, device, free, getattr(backend, "weight_formats", None),
        ))
    statuses.sort(key=lambda status: status.source != "built-in")  # stable: registration order within
    return statuses
