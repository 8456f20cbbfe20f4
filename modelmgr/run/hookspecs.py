"""The hooks a modelmgr plugin can implement. Markers and documented stubs, nothing else.

A plugin is a module (found through the ``modelmgr`` entry-point group) with functions
decorated by ``@modelmgr.hookimpl`` whose names match the stubs below.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

    from modelmgr.run.api import Backend, LoadOptions
    from modelmgr.run.modelinfo import ModelInfo

PROJECT = "modelmgr"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_backends(register: Callable[["Backend"], None]) -> None:
    """Register Backend instances by calling ``register(backend)`` once for each.

    A callback rather than a return value, so this hook can gain arguments later without
    breaking plugins. Backend names must be unique; a duplicate is reported and skipped.
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add subcommands to the ``modelmgr`` command line with ``cli.add_command(command)``."""


@hookspec(firstresult=True)
def select_backend(info: "ModelInfo", options: "LoadOptions", backends: Mapping[str, "Backend"]) -> str | None:
    """Choose the backend for ``--backend auto``: return the name of one of ``backends``, or None.

    Stops at the first non-None result. When every implementation returns None, the built-in
    rule applies: cuda, then int8 on a GPU, then cpu, the first that is available and fits.
    The chosen backend is still checked for availability and memory fit; a plugin should use
    ``backend.available()``, ``backend.estimate(info, options)`` and ``backend.free_memory()``
    to return only one that fits. Not called when the user names a backend.
    """
