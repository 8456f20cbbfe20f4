"""The entry point: registers the cpu, cuda and int8 backends."""
from __future__ import annotations

from modelmgr import hookimpl

from .backends import CpuBackend, CudaBackend, Int8Backend


# tryfirst: registered before any third-party plugin, so "cpu", "cuda" and "int8" always mean
# these backends and a plugin reusing a name is the one reported as a duplicate.
@hookimpl(tryfirst=True)
def register_backends(register):
    register(CpuBackend())
    register(CudaBackend())
    register(Int8Backend())
