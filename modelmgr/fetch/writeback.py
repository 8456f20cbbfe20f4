"""Start writing a downloaded range to disk early, so the fsync before a blob's rename has
little left to wait for.

Without it the kernel keeps a fast download dirty in the page cache (up to gigabytes) and the
final fsync stalls on all of it at once; with it the disk writes while the network reads.
Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the writeback and returns at once. On
other systems this does nothing and the fsync alone keeps the guarantee.
"""
from __future__ import annotations

import sys

SYNC_FILE_RANGE_WRITE = 2
_call = None


def _load():
    global _call
    if _call is not None:
        return _call
    _call = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.sync_file_range
            function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            function.restype = ctypes.c_int
            _call = function
        except (OSError, AttributeError):
            _call = False
    return _call


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to begin writing ``length`` bytes at ``offset`` to disk; never waits."""
    function = _load()
    if function:
        function(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # a failure only costs the overlap
