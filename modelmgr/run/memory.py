"""How much memory this process could still take, without torch or psutil.

Only RAM lives here; a GPU's free memory is the business of the backend that drives it.
"""
from __future__ import annotations

import os
from pathlib import Path

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def _meminfo_available(path: Path = _MEMINFO) -> int | None:
    # MemAvailable, not MemFree: the kernel's own estimate of what can be had without swapping,
    # page cache included (a model just pulled is mostly page cache, and loading reuses it).
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom(root: Path = _CGROUP) -> int | None:
    """A container's memory limit minus its usage (cgroup v2); None when unlimited or unknown."""
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def _sysconf_available() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None  # macOS has no SC_AVPHYS_PAGES; Windows has no sysconf


def free_ram() -> int | None:
    """Bytes of RAM this process could still allocate, or None when the platform will not say."""
    candidates = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    return min(candidates) if candidates else _sysconf_available()


def cap(free: int | None, max_memory: int | None) -> int | None:
    """Free memory limited by the user's ``--max-memory`` (either may be unknown)."""
    if max_memory is None:
        return free
    return max_memory if free is None else min(free, max_memory)


def process_rss() -> int | None:
    """Resident memory of this process (Linux), for benchmarks and load reports."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
