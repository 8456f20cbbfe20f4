"""The entry point: registers the llamacpp backend."""
from __future__ import annotations

from modelmgr import hookimpl

from .backend import LlamaCppBackend


@hookimpl
def register_backends(register):
    register(LlamaCppBackend())
