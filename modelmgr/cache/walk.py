"""Reading one snapshot folder, as the scan and the lazily read file lists both need it.

One ``os.scandir`` per folder and one ``stat`` per file (through the link, to the blob, as
huggingface_hub does); plain tuples, since a cache holds many entries.
"""
from __future__ import annotations

import os
import stat
from typing import Callable

from modelmgr.cache.layout import BLOBS, temporary_owner

# What operating systems drop into folders; huggingface_hub ignores the same names.
OS_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})

# A scanned snapshot file: (relative path, absolute path, is a link, size, (st_dev, st_ino), atime, mtime)
REL, PATH, LINK, SIZE, KEY, ATIME, MTIME = range(7)

Warn = Callable[[str, str], None]  # (the path a problem is about, one line saying what it is)


def ignore(path: str, message: str) -> None:
    pass


def first_hop(path: str, is_link: bool = True) -> str:
    """What huggingface_hub calls a file's blob: its link's target made absolute, not resolved
    further; a file that is no link is its own blob. A link gone since the scan is its own too."""
    if not is_link:
        return path
    try:
        target = os.readlink(path)
    except OSError:
        return path
    return os.path.normpath(os.path.join(os.path.dirname(path), target))



def scan_snapshot(
    top: str, warn: Warn, blobs: dict[str, os.stat_result | None] | None = None, hops: dict[str, str] | None = None,
) -> tuple[list[tuple], list[str], int, list[str]]:
    """(entries, broken links, regular files, folders read) of one snapshot.

    With ``blobs`` (a dict the caller keeps for the whole repo, empty at first), a link written the
    way huggingface_hub writes it (``../../blobs/{name}``, one more ``../`` per folder level) is
    resolved by reading the link and taking ``lstat`` of ``blobs/{name}``, remembered in ``blobs``:
    a blob shared by both revisions is stat'ed once, not once per link, and its first hop is known
    without ``normpath`` (``hops`` gets it). A target that is no plain file there (a link, a folder,
    nothing), and every other file, is stat'ed through the link. (The blobs folder is not listed
    first: a listing costs four system calls, and a plain ``lstat`` of the name tells the same.)

    A ``.{name}.{pid}.{tid}.tmp`` entry is a link a pull was about to rename into place: not a
    file of the model (``prune --incomplete`` takes it once its writer is gone)."""
    blobs_dir = os.path.join(os.path.dirname(os.path.dirname(top)), BLOBS) + os.sep if blobs is not None else ""
    entries: list[tuple] = []
    missing: list[str] = []
    folders: list[str] = []
    copies = 0
    stack = [(top, "")]
    readlink, lstat, is_regular, add = os.readlink, os.lstat, stat.S_ISREG, entries.append  # a hot loop
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as iterator:
                listed = list(iterator)
        except OSError as exc:
            warn(folder, f"cannot read {folder}: {exc.strerror}; its files are skipped.")
            continue
        folders.append(folder)
        up = "../" * (prefix.count("/") + 2) + BLOBS + "/"  # how huggingface_hub's links start at this depth
        skip = len(up)
        for entry in listed:
            name = entry.name
            is_link = entry.is_symlink()  # links (to folders too) are never descended into, as in huggingface_hub
            if not is_link:
                try:
                    real_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    real_dir = False
                if real_dir:
                    stack.append((entry.path, prefix + name + "/"))
                    continue
            if name in OS_FILES or name[0] == "." and temporary_owner(name) is not None:
                continue
            path = entry.path
            if is_link and blobs is not None:
                try:
                    target = readlink(path)
                except OSError:
                    target = ""
                blob = target[skip:] if target.startswith(up) else ""
                if blob and "/" not in blob:
                    result = blobs.get(blob, False)
                    if result is False:
                        try:
                            result = lstat(blobs_dir + blob)
                        except OSError:
                            result = None
                        if result is not None and not is_regular(result.st_mode):
                            result = None
                        blobs[blob] = result
                    if result is not None:
                        if hops is not None:
                            hops[path] = blobs_dir + blob
                        add((prefix + name, path, True, result.st_size, (result.st_dev, result.st_ino), result.st_atime,
                             result.st_mtime))
                        continue
            try:
                result = entry.stat()  # through the link to the blob, as huggingface_hub does
            except OSError:
                if is_link:
                    warn(path, f"broken link {path}: its blob is missing. Pull the model again to repair it.")
                    missing.append(prefix + name)
                else:
                    warn(path, f"cannot stat {path}; skipped.")
                continue
            if stat.S_ISDIR(result.st_mode):  # a link to a folder is no file, as huggingface_hub sees it
                continue
            copies += not is_link
            add((prefix + name, path, is_link, result.st_size, (result.st_dev, result.st_ino), result.st_atime, result.st_mtime))
    return entries, missing, copies, folders
