"""Whether torch and friends are installed and a GPU is usable, asked as cheaply as possible.

``modelmgr backends`` asks every backend on every call, so nothing here imports torch (3 s)
unless the answer depends on it: a missing package is seen with find_spec, and the CPU build of
torch by its version's local tag ("2.13.0+cpu"), read from its installed metadata.
"""
from __future__ import annotations

import functools
import importlib.util
from importlib import metadata

from modelmgr import Availability

RUN_EXTRA = "pip install 'modelmgr[run]'"
INT8_EXTRA = "pip install 'modelmgr[int8]'"


def missing(*modules: str) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require(*modules: str, extra: str = RUN_EXTRA) -> Availability:
    absent = missing(*modules)
    if absent:
        verb = "is" if len(absent) == 1 else "are"
        return Availability(False, f"{' and '.join(absent)} {verb} not installed: {extra}")
    return Availability(True)


def torch_version() -> str | None:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cuda_status() -> Availability:
    """Whether torch can use a CUDA (or ROCm) GPU here, with the reason when it cannot."""
    needs = require("torch", "transformers", "accelerate")
    if not needs:
        return needs
    version = torch_version() or "unknown"
    if version.endswith("+cpu"):
        return Availability(False, f"no CUDA device: this is the CPU build of torch ({version}); install a CUDA build of torch to use a GPU")
    import torch

    if not torch.cuda.is_available():
        return Availability(False, f"no CUDA device: torch.cuda.is_available() is False (torch {version}, built for CUDA {torch.version.cuda or 'none'})")
    count = torch.cuda.device_count()
    return Availability(True, f"{count} GPU{'s' if count > 1 else ''}: {torch.cuda.get_device_name(0)}")


def gpu_free_memory() -> int | None:
    """Free bytes summed over every visible GPU (device_map="auto" spreads a model across them)."""
    if not cuda_status():
        return None
    import torch

    return sum(torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count()))
