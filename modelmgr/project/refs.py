"""Model references: ``org/name``, ``org/name@revision``, aliases and local directories, and a
GGUF quantization tag: ``org/name:Q4_K_M`` or ``org/name:Q4_K_M@revision`` (ollama's syntax).

IDs are validated the way the Hub validates them, so a bad one fails here with a clear
message instead of becoming a strange path in the cache or a 404 from a server.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modelmgr.errors import InvalidReference
from modelmgr.project.names import is_commit

DEFAULT_REVISION = "main"
MAX_PART_LENGTH = 96

# Always used with fullmatch: ``re.match`` with ``$`` accepts a trailing newline, which would
# become a folder named "tiny\n" in the cache.
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Branch and tag names as git allows them, minus what could escape a path.
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]*")
# Quantization names as llama.cpp spells them (Q4_K_M, IQ4_XS, F16, BF16), any case, and as
# Unsloth does (UD-Q4_K_XL): words of letters, digits and '_' joined by single '-'; 32 at most.
_QUANT = re.compile(r"(?=.{1,32}\Z)[A-Za-z0-9][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*", re.DOTALL)




@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. Exactly one of ``repo_id`` and ``local_path`` is set."""

    repo_id: str | None = None
    revision: str | None = None  # None: the default branch, or whatever the config pins
    local_path: Path | None = None
    quant: str | None = None  # a GGUF quantization tag, upper-cased: "Q4_K_M"; None: the default rule

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    @property
    def revision_or_default(self) -> str:
        return self.revision or DEFAULT_REVISION

    def __str__(self) -> str:
        if self.local_path is not None:
            return str(self.local_path)
        name = f"{self.repo_id}:{self.quant}" if self.quant else str(self.repo_id)
        return f"{name}@{self.revision}" if self.revision else name


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` unchanged, or raise InvalidReference saying what is wrong with it."""

    def bad(why: str) -> InvalidReference:
        return InvalidReference(f"invalid model id {repo_id!r}: {why}. Expected 'org/name', for example 'Qwen/Qwen2.5-0.5B-Instruct'.")

    if repo_id.count("/") != 1:
        raise bad("it must contain exactly one '/'")
    for part in repo_id.split("/"):
        if not part:
            raise bad("the organisation and the name must both be non-empty")
        if len(part) > MAX_PART_LENGTH:
            raise bad(f"each part may have at most {MAX_PART_LENGTH} characters")
        if "--" in part or ".." in part:
            raise bad("'--' and '..' are not allowed")
        if not _PART.fullmatch(part):
            raise bad("use only letters, digits, '-', '_' and '.', starting with a letter or digit")
        if part.endswith((".", "-")) or part.endswith(".git"):
            raise bad("a part may not end with '.', '-' or '.git'")
    return repo_id


def validate_revision(revision: str, *, repo_id: str = "") -> str:
    if is_commit(revision):
        return revision
    if (
        not _REVISION.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".lock", "."))
        or len(revision) > 255
    ):
        raise InvalidReference(
            f"invalid revision {revision!r} for {repo_id or 'the model'}: use a branch, a tag or a 40-hex commit, for example 'main' or 'v1.0'."
        )
    return revision



def validate_quant(quant: str, *, text: str = "") -> str:
    """A quantization tag, upper-cased (tags match file names case-insensitively)."""
    if not _QUANT.fullmatch(quant):
        raise InvalidReference(
            f"invalid quantization tag {quant!r} in {text or quant!r}: write org/name:QUANT with a llama.cpp "
            "quantization name, for example 'org/name:Q4_K_M', 'org/name:Q8_0' or 'org/name:UD-Q4_K_XL'."
        )
    return quant.upper()


def _split_quant(name: str, text: str) -> tuple[str, str | None]:
    """``org/name:Q4_K_M`` -> ("org/name", "Q4_K_M"). Hub ids never contain ':'."""
    name, colon, quant = name.partition(":")
    if not colon:
        return name, None
    return name, validate_quant(quant, text=text)


def parse_ref(text: str, *, aliases: dict[str, tuple[str, str | None]] | None = None) -> ModelRef:
    """Parse what a user typed. Aliases map a short name to ``(repo_id, revision)``."""
    text = text.strip()
    if not text:
        raise InvalidReference("empty model reference: give 'org/name', 'org/name@revision' or a local directory.")
    # "../x" is a path only when that folder exists: otherwise it is a mistyped id, and the
    # user learns what a valid id looks like rather than that some folder is missing.
    relative_parent = text.startswith("../") or text == ".."
    if text.startswith(("./", "/", "~")) or text == "." or relative_parent and os.path.isdir(text):
        path = Path(os.path.expanduser(text)).resolve()
        if not path.is_dir():
            raise InvalidReference(f"local model directory {text!r} does not exist (resolved to {path}).")
        return ModelRef(local_path=path)
    name, _, revision = text.partition("@")
    name, quant = _split_quant(name, text)
    if aliases and name in aliases and "/" not in name:
        alias_id, alias_revision = aliases[name]
        return ModelRef(repo_id=validate_repo_id(alias_id), revision=validate_revision(revision, repo_id=alias_id) if revision else alias_revision, quant=quant)
    if "/" not in name and aliases is not None:
        known = ", ".join(sorted(aliases)) or "none are configured"
        if os.path.isdir(text):
            # A bare name is an id or an alias, never a path (as with `hf download`); say how to mean the folder.
            raise InvalidReference(f"invalid model id {name!r}: to use the folder of that name, write './{text}'.")
        raise InvalidReference(f"invalid model id {name!r}: it must look like 'org/name' (or be an alias; aliases: {known}).")
    validate_repo_id(name)
    if "@" in text and not revision:
        raise InvalidReference(f"invalid model reference {text!r}: nothing after '@'. Write 'org/name@main', a tag or a commit.")
    return ModelRef(repo_id=name, revision=validate_revision(revision, repo_id=name) if revision else None, quant=quant)
