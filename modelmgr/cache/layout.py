"""Paths of huggingface_hub's cache layout, shared by pulling and by cache administration.

This is the only module that spells a name inside a cache; everything else asks it.

```
{cache}/models--{org}--{name}/blobs/{etag}
{cache}/models--{org}--{name}/snapshots/{commit}/{path}   -> ../../blobs/{etag}
{cache}/models--{org}--{name}/refs/{branch}               (text: the commit)
{cache}/models--{org}--{name}/.no_exist/{commit}/{path}   (empty markers)
{cache}/.locks/models--{org}--{name}/{etag}.lock
```
modelmgr adds ``blobs/{etag}.incomplete`` for partial downloads that survive restarts (the name is
huggingface_hub's own, so its tools recognise and ignore them), the resume state of each in
``.modelmgr/partial/{etag}.json``, manifests in ``.modelmgr/manifests/{commit}.json`` and
``{cache}/.modelmgr/last-used/{folder}`` markers.

Temporary names, whose owner can be told from the name (see ``partial_download``):

- ``blobs/{etag}.incomplete``: modelmgr's resumable download (locked by ``{etag}.lock``);
- ``blobs/{etag}.{8 hex}.incomplete``: huggingface_hub's per-process download (same lock);
- ``blobs/{etag}.incomplete.{pid}.{tid}``: modelmgr's verified blob between its two renames;
- ``.{name}.{pid}.{tid}.tmp``: any small file or snapshot link modelmgr is replacing atomically;
- ``refs/{name}.{8 hex}.tmp``: a ref huggingface_hub is replacing.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
BLOBS = "blobs"
SNAPSHOTS = "snapshots"
REFS = "refs"
NO_EXIST = ".no_exist"
LOCKS = ".locks"
MODELMGR_DIR = ".modelmgr"
MANIFESTS = "manifests"  # inside MODELMGR_DIR
PARTIAL = "partial"  # inside MODELMGR_DIR
LAST_USED = "last-used"  # inside the cache's own MODELMGR_DIR
INCOMPLETE_SUFFIX = ".incomplete"
LOCK_SUFFIX = ".lock"
MANIFEST_SUFFIX = ".json"
STATE_SUFFIX = ".json"

# The etag part is matched loosely here (the caller validates it with project.names): a name of
# the right shape with a bad etag is still a temporary file, not a blob.
_HF_INCOMPLETE = re.compile(r"([0-9a-f]+)\.([0-9a-f]{8})\.incomplete")
_COMMITTING = re.compile(r"([0-9a-f]+)\.incomplete\.([0-9]+)\.([0-9]+)")
_TEMPORARY = re.compile(r"\.(.+)\.([0-9]+)\.([0-9]+)\.tmp")
_HF_TEMPORARY_REF = re.compile(r".+\.[0-9a-f]{8}\.tmp")  # huggingface_hub writes refs/{name}.{uuid8}.tmp, then renames

MODELMGR = "modelmgr"
HUGGINGFACE_HUB = "huggingface_hub"
COMMITTING = "committing"


def folder_name(repo_id: str, repo_type: str = "model") -> str:
    return f"{repo_type}s--" + repo_id.replace("/", "--")


# What a Hub id may hold, per part (an org is optional for old ids such as "gpt2"). fullmatch: a
# folder "models--org--na\nme" is no repo, whatever its name says.
_ID_PART = re.compile(r"[\w.-]+")  # as huggingface_hub validate_repo_id allows, no more


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """``models--org--name`` -> ``("model", "org/name")``; None for anything else."""
    kind, sep, rest = name.partition("--")
    if not sep or kind[:-1] not in REPO_TYPES or not kind.endswith("s") or not rest:
        return None
    parts = rest.split("--")
    if len(parts) > 2 or not all(_ID_PART.fullmatch(part) for part in parts):
        return None
    return kind[:-1], "/".join(parts)


def partial_download(name: str) -> tuple[str, str, int | None] | None:
    """``(writer, etag, pid)`` of a temporary entry of ``blobs/``, or None for anything else.

    ``writer`` is MODELMGR (resumable, kept across runs), HUGGINGFACE_HUB (per process: useless
    once its writer is gone) or COMMITTING (a verified blob a killed pull had not renamed yet);
    ``pid`` is only known for the last.
    """
    if name.endswith(INCOMPLETE_SUFFIX):
        hf = _HF_INCOMPLETE.fullmatch(name)
        if hf is not None:
            return HUGGINGFACE_HUB, hf.group(1), None
        return MODELMGR, name[: -len(INCOMPLETE_SUFFIX)], None
    committing = _COMMITTING.fullmatch(name)
    if committing is not None:
        return COMMITTING, committing.group(1), int(committing.group(2))
    return None


def is_temporary_ref(name: str) -> bool:
    """A ref file being replaced (modelmgr's ``.{name}.{pid}.{tid}.tmp``, huggingface_hub's
    ``{name}.{uuid8}.tmp``), or one a killed writer left: no ref of its own."""
    return name.startswith(".") or _HF_TEMPORARY_REF.fullmatch(name) is not None


def temporary_owner(name: str) -> tuple[str, int] | None:
    """``(final name, pid)`` of a ``.{name}.{pid}.{tid}.tmp`` entry, or None."""
    match = _TEMPORARY.fullmatch(name)
    return (match.group(1), int(match.group(2))) if match is not None else None


@dataclass(frozen=True)
class RepoPaths:
    cache: Path
    repo_id: str
    repo_type: str = "model"

    @property
    def root(self) -> Path:
        return self.cache / folder_name(self.repo_id, self.repo_type)

    @property
    def blobs(self) -> Path:
        return self.root / BLOBS

    @property
    def snapshots(self) -> Path:
        return self.root / SNAPSHOTS

    @property
    def refs(self) -> Path:
        return self.root / REFS

    @property
    def locks(self) -> Path:
        return self.cache / LOCKS / folder_name(self.repo_id, self.repo_type)

    @property
    def manifests(self) -> Path:
        return self.root / MODELMGR_DIR / MANIFESTS

    @property
    def partial_states(self) -> Path:
        return self.root / MODELMGR_DIR / PARTIAL

    def refuse_linked_folders(self, *folders: Path) -> None:
        """Refuse to write below a folder of this repo that is a symbolic link.

        huggingface_hub's layout has real folders only (links are the files of snapshots), so a
        link in place of ``blobs/``, ``snapshots/``, ``.modelmgr/`` or ``.locks/...`` was planted:
        writing through it would put model bytes, manifests or locks outside the cache. The repo
        folder itself and the cache above it may be links (a user moving a model to another disk).
        """
        from modelmgr.errors import UnsafeCacheEntry

        for folder in folders:
            base = self.root if folder.is_relative_to(self.root) else self.cache
            current = Path(folder)
            while current != base and current.is_relative_to(base):
                if current.is_symlink():
                    raise UnsafeCacheEntry(
                        f"{current} is a symbolic link inside the cache (to {os.readlink(current)!r}); modelmgr "
                        "writes only into real folders there. Remove the link and run the command again.")
                current = current.parent

    def blob(self, etag: str) -> Path:
        return self.blobs / etag

    def incomplete(self, etag: str) -> Path:
        return self.blobs / (etag + INCOMPLETE_SUFFIX)

    def lock(self, etag: str) -> Path:
        """huggingface_hub's lock for one blob; modelmgr takes the very same one."""
        return self.locks / (etag + LOCK_SUFFIX)

    def partial_state(self, etag: str) -> Path:
        """Which ranges of ``blobs/{etag}.incomplete`` are done (see fetch/download.py)."""
        return self.partial_states / (etag + STATE_SUFFIX)

    def snapshot(self, commit: str) -> Path:
        return self.snapshots / commit

    def ref(self, name: str) -> Path:
        # Refs come from users, configs and lockfiles; none may lead out of refs/.
        parts = name.split("/")
        if not name or name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
            from modelmgr.errors import InvalidReference

            raise InvalidReference(f"invalid revision {name!r}: use a branch, a tag or a 40-hex commit.")
        return self.refs / name

    def no_exist(self, commit: str, path: str) -> Path:
        return self.root / NO_EXIST / commit / path

    def read_ref(self, name: str) -> str | None:
        """The commit a branch or tag points to; None when there is none, or when the file holds
        anything but a 40-hex commit (``../../outside`` in a planted ref must never become a path)."""
        from modelmgr.fsutil import read_small
        from modelmgr.project.names import is_commit

        try:
            text = read_small(self.ref(name), 256).strip()
        except (OSError, ValueError):
            return None
        return text if is_commit(text) else None

    def write_ref(self, name: str, commit: str) -> None:
        """Point a branch or tag at a commit (atomically; untouched when already there)."""
        from modelmgr.fsutil import write_atomic

        if self.read_ref(name) != commit:
            write_atomic(self.ref(name), commit)

    def manifest(self, commit: str) -> Path:
        """modelmgr's record of the files a snapshot should hold (see manifest.py)."""
        return self.manifests / (commit + MANIFEST_SUFFIX)


def repo_paths(repo) -> RepoPaths:
    """The layout of a scanned repo (anything with ``cache_dir``, ``repo_id``, ``repo_type``)."""
    return RepoPaths(repo.cache_dir, repo.repo_id, repo.repo_type)


def relative_blob_link(snapshot_file: Path, blob: Path) -> str:
    """The relative target huggingface_hub writes, so the cache can be moved as a whole."""
    return os.path.relpath(blob, snapshot_file.parent)
