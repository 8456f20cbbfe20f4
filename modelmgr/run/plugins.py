"""The plugin manager: built-in and third-party plugins, all found through entry points.

Plugins are loaded once, lazily (``list`` and ``rm`` never pay for them). A plugin that fails
to import is recorded with its error and skipped, so one broken package cannot take the
command line down. ``MODELMGR_LOAD_PLUGINS`` (comma-separated entry-point names; empty for
none) allows only the named plugins; the config's ``plugins.disabled`` blocks some.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Iterable

import pluggy

from modelmgr.run import hookspecs
if TYPE_CHECKING:  # pragma: no cover
    import click

ENTRY_POINT_GROUP = "modelmgr"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    error: str | None = None

    @property
    def source(self) -> str:
        if self.distribution == "modelmgr":
            return "built-in"
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return "registered in code"


_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}


def _allowed(name: str, disabled: Iterable[str]) -> bool:
    allow = os.environ.get("MODELMGR_LOAD_PLUGINS")
    if allow is not None and name not in {part.strip() for part in allow.split(",") if part.strip()}:
        return False
    return name not in set(disabled)


def get_plugin_manager(*, disabled: Iterable[str] | None = None) -> pluggy.PluginManager:
    """The process-wide plugin manager, loading entry points on first use."""
    global _manager
    with _lock:
        if _manager is not None:
            return _manager
        if disabled is None:
            disabled = _disabled_from_config()
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not _allowed(entry_point.name, disabled):
                continue
            dist = getattr(entry_point, "dist", None)
            info = PluginInfo(entry_point.name, dist.metadata["Name"] if dist else None, dist.version if dist else None)
            try:
                module = entry_point.load()
                manager.register(module, name=entry_point.name)
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not fatal
                info = PluginInfo(info.name, info.distribution, info.version, f"{type(exc).__name__}: {exc}")
            _infos[entry_point.name] = info
        manager.check_pending()
        _manager = manager
        return manager


def _disabled_from_config() -> tuple[str, ...]:
    from modelmgr.project.config import load_config
    from modelmgr.errors import ConfigError

    try:
        return load_config().disabled_plugins
    except ConfigError:
        return ()  # the command itself will report the broken config


def plugin_infos() -> list[PluginInfo]:
    get_plugin_manager()
    return list(_infos.values())


def broken_plugins() -> list[PluginInfo]:
    return [info for info in plugin_infos() if info.error]


def plugin_commands() -> dict[str, "click.Command"]:
    import click

    collector = click.Group()
    get_plugin_manager().hook.register_commands(cli=collector)
    return dict(collector.commands)


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests use it after changing MODELMGR_LOAD_PLUGINS)."""
    global _manager
    with _lock:
        _manager = None
        _infos.clear()
