"""modelmgr: pull, cache, administer and run open LLMs.

This module is the public API, and the only one a plugin imports: ``pull`` and ``load`` for
scripts; ``hookimpl``, ``Backend`` and the load and generation types, ``ModelInfo``,
``estimate_memory``, ``free_ram`` and ``plain_prompt`` for backend authors; the errors for both.

Everything is imported lazily, so ``import modelmgr`` stays cheap: nothing here pulls in torch
or transformers until a model is actually loaded. The implementation lives in sub-packages
whose names no public attribute shares, so ``modelmgr.pull`` is the function whatever was
imported before (``modelmgr.fetch.pull`` is the module).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

# public name -> (module, attribute)
_LAZY = {
    # scripts
    "pull": ("modelmgr.fetch.pull", "pull"),
    "load": ("modelmgr.run.plan", "load"),
    "load_config": ("modelmgr.project.config", "load_config"),
    "scan_cache": ("modelmgr.cache.scan", "scan_cache"),
    "ModelRef": ("modelmgr.project.refs", "ModelRef"),
    "parse_ref": ("modelmgr.project.refs", "parse_ref"),
    # backend plugins
    "hookimpl": ("modelmgr.run.hookspecs", "hookimpl"),
    "Backend": ("modelmgr.run.api", "Backend"),
    "Availability": ("modelmgr.run.api", "Availability"),
    "LoadOptions": ("modelmgr.run.api", "LoadOptions"),
    "LoadedModel": ("modelmgr.run.api", "LoadedModel"),
    "Generation": ("modelmgr.run.api", "Generation"),
    "GenerationSettings": ("modelmgr.run.api", "GenerationSettings"),
    "Message": ("modelmgr.run.api", "Message"),
    "DTYPES": ("modelmgr.run.api", "DTYPES"),
    "ModelInfo": ("modelmgr.run.modelinfo", "ModelInfo"),
    "MemoryEstimate": ("modelmgr.run.modelinfo", "MemoryEstimate"),
    "read_model_info": ("modelmgr.run.modelinfo", "read_model_info"),
    "estimate_memory": ("modelmgr.run.modelinfo", "estimate_memory"),
    "free_ram": ("modelmgr.run.memory", "free_ram"),
    "plain_prompt": ("modelmgr.run.chat", "plain_prompt"),
}
_ERRORS = (
    "ModelmgrError", "InvalidReference", "ConfigError", "HubError", "RepoNotFound", "RevisionNotFound",
    "EntryNotFound", "GatedRepo", "UnsafeServerResponse", "IntegrityError", "OfflineError", "NotCached",
    "DiskSpaceError", "BackendError", "UnsafeModel", "TokenRejected", "TokenNotSent", "UnknownBackend",
)
__all__ = sorted([*_LAZY, *_ERRORS, "__version__"])

if TYPE_CHECKING:  # pragma: no cover
    from .cache.scan import scan_cache
    from .errors import *  # noqa: F403
    from .fetch.pull import pull
    from .project.config import load_config
    from .project.refs import ModelRef, parse_ref
    from .run.api import DTYPES, Availability, Backend, Generation, GenerationSettings, LoadedModel, LoadOptions, Message
    from .run.chat import plain_prompt
    from .run.hookspecs import hookimpl
    from .run.memory import free_ram
    from .run.modelinfo import MemoryEstimate, ModelInfo, estimate_memory, read_model_info
    from .run.plan import load


def __getattr__(name: str) -> Any:
    import importlib

    if name in _ERRORS:
        return getattr(importlib.import_module("modelmgr.errors"), name)
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'modelmgr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
