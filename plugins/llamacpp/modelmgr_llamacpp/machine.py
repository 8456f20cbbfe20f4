"""What llama.cpp can use here: the CPU cores it should run on, and whether it can offload to a GPU."""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess

INSTALL = "pip install 'modelmgr[gguf]' plugins/llamacpp (llama-cpp-python builds from source: cmake and a C++ compiler)"


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def physical_cores() -> int:
    """Cores, not hyperthreads, that this process may run on: llama.cpp's decoding is bound by
    memory bandwidth, and a second thread per core only contends for it."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    physical = core = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    physical = value
                elif key == "core id":
                    core = value
                elif not key and core is not None:
                    cores.add((physical or "0", core))
                    physical = core = None
        if core is not None:
            cores.add((physical or "0", core))
    except OSError:
        pass
    return max(1, min(allowed, len(cores) if cores else allowed))


@functools.lru_cache(maxsize=1)
def gpu_offload() -> bool:
    """Whether this llama-cpp-python build can put layers on a GPU (built with CUDA, Metal...)."""
    if not llama_cpp_installed():
        return False
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def gpu_free_memory() -> int | None:
    """Free bytes on the first NVIDIA GPU, from nvidia-smi (llama.cpp's Python API does not say)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return int(out.split()[0]) * 1024 * 1024
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
