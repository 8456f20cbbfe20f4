"""modelmgr: pull, cache, administer and run open LLMs.

The public API is imported lazily, so ``import modelmgr`` stays cheap: nothing here pulls in
torch or transformers until a model is actually loaded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

_LAZY = {
    "pull": ("modelmgr.fetch.pull", "pull"),
    "load": ("modelmgr.run.backends", "load"),
    "hookimpl": ("modelmgr.run.hookspecs", "hookimpl"),
    "Backend": ("modelmgr.run.backends", "Backend"),
    "LoadOptions": ("modelmgr.run.backends", "LoadOptions"),
    "load_config": ("modelmgr.project.config", "load_config"),
    "scan_cache": ("modelmgr.cache.scan", "scan_cache"),
    "ModelRef": ("modelmgr.project.refs", "ModelRef"),
    "parse_ref": ("modelmgr.project.refs", "parse_ref"),
}
_ERRORS = (
    "ModelmgrError", "InvalidReference", "ConfigError", "HubError", "RepoNotFound", "RevisionNotFound",
    "EntryNotFound", "GatedRepo", "UnsafeServerResponse", "IntegrityError", "OfflineError", "NotCached",
    "DiskSpaceError", "BackendError", "UnsafeModel",
)
__all__ = sorted([*_LAZY, *_ERRORS])

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.run.backends import Backend, LoadOptions, load
    from modelmgr.cache.scan import scan_cache
    from modelmgr.project.config import load_config
    from modelmgr.errors import *  # noqa: F403
    from modelmgr.run.hookspecs import hookimpl
    from modelmgr.fetch.pull import pull
    from modelmgr.project.refs import ModelRef, parse_ref


def __getattr__(name: str) -> Any:
    import importlib

    if name in _ERRORS:
        return getattr(importlib.import_module("modelmgr.errors"), name)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'modelmgr' has no attribute {name!r}")
