"""Inter-process locks on blobs, the same lock files huggingface_hub uses.

Correctness never rests on the lock alone (on some NFS mounts flock succeeds without locking):
blobs are content-addressed, written at explicit offsets, verified before their atomic rename,
so two writers that both believe they hold the lock still produce the right file. The lock
only saves bandwidth. A killed holder releases it with its file descriptors, so nothing hangs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .fsutil import make_dirs, open_shared

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, content addressing still holds
    fcntl = None  # type: ignore[assignment]


@contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    make_dirs(path.parent)
    fd = open_shared(path, os.O_RDWR | os.O_CREAT)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
