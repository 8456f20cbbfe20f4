"""Writing into a cache that a team may share: new folders and files take their group
permissions from the setgid folder they are created in, and small files are replaced atomically.

On a shared cache (a setgid folder owned by the team's group) the kernel already gives new
entries the folder's group, but a user whose umask is 077 would still create files the rest of
the team cannot read. So a new entry inside a setgid folder gets that folder's group bits (read
and write for files, plus search for folders); the owner and other bits stay as the umask made
them. Outside setgid folders nothing changes.
"""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

_GROUP = stat.S_IRWXG


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


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
        share_new(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def open_shared(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that shares a newly created file like its folder."""
    fd = os.open(path, flags, mode)
    share_new(path, fd=fd)
    return fd
