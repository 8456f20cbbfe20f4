"""What the scan reads of a repo's small files: its refs and modelmgr's manifests.

Everything read back is checked before use: a ref that holds anything but a 40-hex commit, a
manifest of the wrong shape, a FIFO where a file should be, all become warnings, never paths.
"""
from __future__ import annotations

import os

from modelmgr.cache.layout import MANIFEST_SUFFIX, is_temporary_ref
from modelmgr.cache.walk import OS_FILES, Warn
from modelmgr.fsutil import read_small
from modelmgr.project.names import is_commit, is_safe_path

MAX_REF_BYTES = 256  # a ref holds 40 hex digits; anything much longer is no ref
MAX_MANIFEST_BYTES = 64 << 20  # some 300,000 files: far beyond any model repo


def read_refs(refs_dir: str, warn: Warn, seen: list[str] | None = None) -> dict[str, set[str]]:
    """commit -> names of the refs pointing at it (``main``, ``v1.0``, ``refs/pr/1``). ``seen``
    collects every folder and file read, for the scan index."""
    by_commit: dict[str, set[str]] = {}
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as iterator:
                entries = list(iterator)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            warn(folder, f"{folder} is a file, not a folder; refs ignored.")
            continue
        except OSError as exc:
            warn(folder, f"cannot read {folder}: {exc.strerror}; refs ignored.")
            continue
        if seen is not None:
            seen.append(folder)
        for entry in entries:
            name = prefix + entry.name
            try:
                # Never through a link: ``refs/loop -> .`` would walk forever, ``refs/x -> /`` the disk.
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            if real_dir:
                stack.append((entry.path, name + "/"))
                continue
            if entry.name in OS_FILES or is_temporary_ref(entry.name):
                continue  # refs being replaced, by modelmgr or huggingface_hub, or left so by a kill
            if seen is not None:
                seen.append(entry.path)
            try:
                commit = read_small(entry.path, MAX_REF_BYTES).strip()
            except OSError as exc:
                warn(entry.path, f"cannot read ref {entry.path}: {exc.strerror}; ignored.")
                continue
            except ValueError:
                warn(entry.path, f"ref {entry.path} is not a small text file; ignored. A ref holds a 40-hex commit.")
                continue
            if not commit:
                warn(entry.path, f"ref {entry.path} is empty; ignored.")
                continue
            if not is_commit(commit):
                # A ref names a snapshot folder: anything but a commit (``../../outside``) is broken.
                warn(entry.path, f"ref {entry.path} holds {commit[:60]!r}, not a 40-hex commit; ignored. "
                     "Pull the model again to repair it.")
                continue
            by_commit.setdefault(commit, set()).add(name)
    return by_commit


def read_manifests(entries: list[os.DirEntry], warn: Warn) -> dict[str, tuple[list[str], float]]:
    """commit -> (paths the manifest lists, the manifest's mtime)."""
    import json  # only caches modelmgr pulled into pay for it

    manifests: dict[str, tuple[list[str], float]] = {}
    for entry in entries:
        if not entry.name.endswith(MANIFEST_SUFFIX):
            continue  # among them, manifests being written (``{commit}.json.{pid}.tmp``)
        commit = entry.name[: -len(MANIFEST_SUFFIX)]
        try:
            document = json.loads(read_small(entry.path, MAX_MANIFEST_BYTES))
            paths = [item["path"] for item in document["files"]]
            if not is_commit(commit) or not all(is_safe_path(path) for path in paths):
                raise TypeError
            mtime = entry.stat().st_mtime
        except OSError as exc:
            warn(entry.path, f"cannot read manifest {entry.path}: {exc.strerror}; ignored.")
            continue
        except (ValueError, KeyError, TypeError, AttributeError):
            warn(entry.path, f"manifest {entry.path} is not valid (expected {{\"files\": [{{\"path\": ...}}, ...]}}); ignored.")
            continue
        if document.get("commit", commit) != commit:
            warn(entry.path, f"manifest {entry.path} names commit {document.get('commit')!r}, not its file name; trusting the file name.")
        manifests[commit] = (paths, mtime)
    return manifests
