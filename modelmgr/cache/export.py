"""A snapshot exported as plain files to a folder of the user's (``pull --local-dir``).

Copies, or reflinks where the filesystem has them (the same blocks, copy-on-write); never hard
links and never symlinks: an edit in the folder must not be able to change the cache, which
stays the source of truth. A file already there with the blob's size and time is left alone, so
exporting again after a pull that changed nothing copies nothing.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelmgr.errors import ModelmgrError

FICLONE = 0x40049409  # linux/fs.h: share the source's blocks (btrfs, xfs, bcachefs)


@dataclass(frozen=True)
class Exported:
    folder: Path
    copied: int
    kept: int


def export_snapshot(snapshot: Path, files: list[str], folder: Path) -> Exported:
    folder = folder.expanduser().resolve()
    if snapshot.resolve() in (folder, *folder.parents):
        raise ModelmgrError(f"--local-dir {folder} is inside the cache: choose a folder outside it.")
    copied = kept = 0
    for name in files:
        parts = PurePosixPath(name).parts
        if not parts or any(part in ("", ".", "..") for part in parts) or PurePosixPath(name).is_absolute():
            continue  # names were checked when pulled; never write outside the folder anyway
        source = snapshot.joinpath(*parts)
        target = folder.joinpath(*parts)
        blob = source.resolve()
        stat = blob.stat()
        if target.is_file() and not target.is_symlink():
            mine = target.stat()
            if mine.st_size == stat.st_size and int(mine.st_mtime) == int(stat.st_mtime) and mine.st_nlink == 1:
                kept += 1
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.modelmgr-export")
        _copy(blob, temporary)
        shutil.copystat(blob, temporary)
        os.chmod(temporary, 0o644 | (stat.st_mode & 0o111))
        # Replaced, never written in place: a hard link someone made to the old file keeps its bytes.
        os.replace(temporary, target)
        copied += 1
    return Exported(folder, copied, kept)


def _copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            import fcntl

            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return
        except (ImportError, OSError):
            pass  # no reflinks here: an ordinary copy (copy_file_range or sendfile underneath)
        shutil.copyfileobj(src, dst, 1024 * 1024)
