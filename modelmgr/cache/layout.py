"""Paths of huggingface_hub's cache layout, shared by pulling and by cache administration.

```
{cache}/models--{org}--{name}/blobs/{etag}
{cache}/models--{org}--{name}/snapshots/{commit}/{path}   -> ../../blobs/{etag}
{cache}/models--{org}--{name}/refs/{branch}               (text: the commit)
{cache}/models--{org}--{name}/.no_exist/{commit}/{path}   (empty markers)
{cache}/.locks/models--{org}--{name}/{etag}.lock
```
modelmgr adds ``blobs/{etag}.incomplete`` for partial downloads that survive restarts; the
name is huggingface_hub's own, so its tools recognise and ignore them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")
INCOMPLETE_SUFFIX = ".incomplete"


def folder_name(repo_id: str, repo_type: str = "model") -> str:
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """``models--org--name`` -> ``("model", "org/name")``; None for anything else."""
    kind, sep, rest = name.partition("--")
    if not sep or kind[:-1] not in REPO_TYPES or not kind.endswith("s") or not rest:
        return None
    return kind[:-1], rest.replace("--", "/")


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
        return self.root / "blobs"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def refs(self) -> Path:
        return self.root / "refs"

    @property
    def locks(self) -> Path:
        return self.cache / ".locks" / folder_name(self.repo_id, self.repo_type)

    def blob(self, etag: str) -> Path:
        return self.blobs / etag

    def incomplete(self, etag: str) -> Path:
        return self.blobs / (etag + INCOMPLETE_SUFFIX)

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
        return self.root / ".no_exist" / commit / path

    def read_ref(self, name: str) -> str | None:
        try:
            return self.ref(name).read_text().strip() or None
        except OSError:
            return None

    def write_ref(self, name: str, commit: str) -> None:
        """Point a branch or tag at a commit (atomically; untouched when already there)."""
        from modelmgr.fsutil import write_atomic

        if self.read_ref(name) != commit:
            write_atomic(self.ref(name), commit)

    def manifest(self, commit: str) -> Path:
        """modelmgr's record of the files a snapshot should hold (see manifest.py)."""
        return self.root / ".modelmgr" / "manifests" / f"{commit}.json"


def relative_blob_link(snapshot_file: Path, blob: Path) -> str:
    """The relative target huggingface_hub writes, so the cache can be moved as a whole."""
    return os.path.relpath(blob, snapshot_file.parent)
