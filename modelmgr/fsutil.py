"""Writing into a cache that a team may share: new folders and files take their group
permissions from the setgid folder they are created in, and small files are replaced atomically.

On a shared cache (a setgid folder owned by the team's group) the kernel already gives new
entries the folder's group, but a user whose umask is 077 would still create files the rest of
the team cannot read. So a new entry inside a setgid folder gets that folder's group bits (read
and write for files, plus search for folders); the owner and other bits stay as the umask made
them. Outside setgid folders nothing changes.
"""
from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

_GROUP = stat.S_IRWXG
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a planted FIFO must not hang


def _shared_group_bits(folder: Path) -> int:
    """The group bits a new entry of ``folder`` should carry (0 when the folder is not shared)."""
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return 0
    return mode & _GROUP if mode & stat.S_ISGID else 0


def share_new(path: Path, *, fd: int | None = None) -> None:
    """Give a just-created file or folder its shared folder's group permissions."""
    bits = _shared_group_bits(path.parent)
    if not bits:
        return
    try:
        mode = os.fstat(fd).st_mode if fd is not None else os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            return  # a link's own mode means nothing
        if stat.S_ISDIR(mode):
            wanted = mode | bits | stat.S_ISGID
        else:
            wanted = mode | (bits & (stat.S_IRGRP | stat.S_IWGRP))
        if stat.S_IMODE(wanted) != stat.S_IMODE(mode):
            if fd is not None:
                os.fchmod(fd, stat.S_IMODE(wanted))
            else:
                os.chmod(path, stat.S_IMODE(wanted))
    except OSError:
        pass  # someone else's file in a shared cache: theirs to share


def make_dirs(path: Path) -> None:
    """``mkdir -p`` where each folder created is shared like its parent."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        if not _shared_group_bits(folder.parent):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise
            continue
        # In a shared folder, build the new folder under a private name, give it its permissions,
        # then rename it into place: a folder visible under its real name already has the right
        # mode, so another thread never creates a file in it with the umask's bits alone.
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.mkdir()
        share_new(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            tmp.rmdir()  # another thread or process made it first, and put something in it
            if not folder.is_dir():
                raise


def _exclusive(path: Path, flags: int, mode: int) -> int:
    """Create ``path`` anew, removing whatever (a link, a stale temporary) holds its name."""
    try:
        return os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    except FileExistsError:
        _remove_entry(path)
        return os.open(path, flags | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)


def _remove_entry(path: Path) -> None:
    """Unlink a planted link or file; a folder or anything we may not remove is refused."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        from modelmgr.errors import UnsafeCacheEntry

        raise UnsafeCacheEntry(
            f"{path} is in the way and cannot be removed ({exc.strerror}): it is not a file modelmgr wrote. "
            "Remove it by hand (or ask whoever owns it) and run the command again."
        ) from None


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half.

    The temporary name is predictable, so it is created exclusively and never through a link:
    a link planted under it would otherwise send the text anywhere on disk.
    """
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = _exclusive(tmp, os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        share_new(tmp)
        os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def open_shared(path: Path, flags: int, mode: int = 0o666, *, own: bool = True) -> int:
    """``os.open`` for a file modelmgr writes inside a cache, shared like its folder.

    The name is never followed: a link in its place (planted in a shared cache to make a pull
    write model bytes, or create a file, elsewhere) is removed and a fresh file created. What is
    opened must be a regular file; with ``own`` (data we write into), also one of our own: another
    user's partial file is replaced rather than trusted. Lock files pass ``own=False``, since a
    team shares them and only ever locks them.
    """
    from modelmgr.errors import UnsafeCacheEntry

    base = flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP or not flags & os.O_CREAT:
            raise
        fd = _exclusive(path, base | _NONBLOCK, mode)  # a link: replace it by a file of our own
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeCacheEntry(f"{path} is not a regular file (mode {stat.filemode(info.st_mode)}): "
                               "something other than a pull put it there. Remove it and run the command again.")
    if own and info.st_uid != os.geteuid() and flags & (os.O_WRONLY | os.O_RDWR):
        os.close(fd)
        if not flags & os.O_CREAT:
            raise UnsafeCacheEntry(f"{path} belongs to another user (uid {info.st_uid}); modelmgr writes only into its own files.")
        fd = _exclusive(path, base | _NONBLOCK, mode)
    share_new(path, fd=fd)
    return fd


def read_small(path: str | os.PathLike, limit: int = 4096) -> str:
    """The text of a small file read back from a cache (a ref, a state file), never through a
    link and never blocking on a FIFO; ValueError when it is no regular file or not UTF-8."""
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path} is larger than {limit} bytes")
    return data.decode("utf-8")
