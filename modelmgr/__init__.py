"""modelmgr: pull, cache, administer and run open LLMs.

The public API is imported lazily, so ``import modelmgr`` stays cheap: nothing here pulls in
torch or transformers until a model is actually loaded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "pull": ("modelmgr.pull", "pull"),
    "load": ("modelmgr.backends", "load"),
    "hookimpl": ("modelmgr.hookspecs", "hookimpl"),
    "Backend": ("modelmgr.backends", "Backend"),
    "LoadOptions": ("modelmgr.backends", "LoadOptions"),
    "load_config": ("modelmgr.config", "load_config"),
    "scan_cache": ("modelmgr.cache", "scan_cache"),
    "ModelRef": ("modelmgr.refs", "ModelRef"),
    "parse_ref": ("modelmgr.refs", "parse_ref"),
}
_ERRORS = (
    "ModelmgrError", "InvalidReference", "ConfigError", "HubError", "RepoNotFound", "RevisionNotFound",
    "EntryNotFound", "GatedRepo", "UnsafeServerResponse", "IntegrityError", "OfflineError", "NotCached",
    "DiskSpaceError", "BackendError", "UnsafeModel",
)
__all__ = sorted([*_LAZY, *_ERRORS])

if TYPE_CHECKING:  # pragma: no cover
    from .backends import Backend, LoadOptions, load
    from .cache import scan_cache
    from .config import load_config
    from .errors import *  # noqa: F403
    from .hookspecs import hookimpl
    from .pull import pull
    from .refs import ModelRef, parse_ref


def __getattr__(name: str) -> Any:
    import importlib

    if name in _ERRORS:
        return getattr(importlib.import_module("modelmgr.errors"), name)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'modelmgr' has no attribute {name!r}")
