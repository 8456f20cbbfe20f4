"""Inter-process locks on blobs, the same lock files huggingface_hub uses.

Correctness never rests on the lock alone (on some NFS mounts flock succeeds without locking):
blobs are content-addressed, written at explicit offsets, verified before their atomic rename,
so two writers that both believe they hold the lock still produce the right file. The lock
only saves bandwidth. A killed holder releases it with its file descriptors, so nothing hangs.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from modelmgr.fsutil import make_dirs, open_shared

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, content addressing still holds
    fcntl = None  # type: ignore[assignment]


@contextmanager
def file_lock(path: Path, *, on_wait: Callable[[], None] | None = None, every: float = 10.0) -> Iterator[None]:
    """Hold ``path``'s lock. While another process holds it, ``on_wait`` is called at once and
    again every ``every`` seconds, so a waiting pull never looks hung."""
    make_dirs(path.parent)
    # Never through a link (a planted one would create a file outside the cache), and shared by a
    # team, so another member's lock file is used as it is: nothing is ever written into it.
    fd = open_shared(path, os.O_RDWR | os.O_CREAT, own=False)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    _wait_saying_so(fd, on_wait, every)
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _wait_saying_so(fd: int, on_wait: Callable[[], None], every: float) -> None:
    # Polled rather than blocking, so the wait can be reported as it goes on; a tenth of a
    # second late at worst when the holder lets go.
    on_wait()
    next_notice = time.monotonic() + every
    while True:
        time.sleep(0.1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= next_notice:
                on_wait()
                next_notice = time.monotonic() + every


class try_lock:
    """Non-blocking ``flock`` of a blob's lock file (the one pulls hold while downloading).
    True when we hold it or nobody can (no lock file, no fcntl); False when someone else does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def __enter__(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return True
        try:
            # O_NONBLOCK: a FIFO planted under a lock's name would block a plain open forever.
            self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            return True  # no lock file (or a link, which no pull locks): no pull is downloading this blob
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the lock


def any_held(folder: Path) -> bool:
    """Whether some process holds one of the lock files in ``folder`` (a pull is downloading)."""
    try:
        names = [name for name in os.listdir(folder) if name.endswith(".lock")]
    except OSError:
        return False
    for name in names:
        with try_lock(folder / name) as free:
            if not free:
                return True
    return False
