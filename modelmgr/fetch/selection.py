"""Which files of a repository a ``from_pretrained`` load needs.

A typical LLM repo carries its weights two to five times over (safetensors, a pickle copy,
ONNX, GGUF quantisations, Flax, TF). Downloading all of it is what makes ``hf download``
slow; a load needs the config, the tokenizer, the chat template and one copy of the weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Iterable, Mapping, Sequence, TypeVar

from modelmgr.errors import EntryNotFound
from modelmgr.fetch.quants import QuantChoice, choose_quant

T = TypeVar("T")

# Small top-level files transformers reads when present (tokenizers of every family, templates).
NEEDED_FILES = {
    "config.json", "generation_config.json", "params.json",
    "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json", "processor_config.json",
}
NEEDED_PATTERNS = (
    "*.tiktoken", "tokenizer*.model", "additional_chat_templates/*.jinja",
    # Remote code: downloaded so `--trust-remote-code` can work offline, never run without it.
    "*.py",
    "LICENSE*", "license*", "USE_POLICY*",
)
SAFETENSORS = ("*.safetensors", "*.safetensors.index.json")
PICKLE = ("pytorch_model*.bin", "pytorch_model*.bin.index.json", "*.pt", "*.pth")


def _top_level(path: str) -> bool:
    return "/" not in path


def _matches(path: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch(path, pattern) for pattern in patterns)


def default_selection(paths: Sequence[str]) -> list[str]:
    """The files a load needs: config, tokenizer, template and one copy of the weights."""
    chosen = [p for p in paths if p in NEEDED_FILES or _matches(p, NEEDED_PATTERNS) and (_top_level(p) or p.startswith("additional_chat_templates/"))]
    weights = [p for p in paths if _top_level(p) and _matches(p, SAFETENSORS)]
    if not weights:
        # Only pickle weights: fetch them; loading still needs --allow-pickle.
        weights = [p for p in paths if _top_level(p) and _matches(p, PICKLE)]
    if not weights:
        # Something we do not recognise (custom formats): better everything than nothing.
        # (GGUF-only repos never get here: select() takes one quantization of them.)
        return list(paths)
    return sorted(set(chosen) | set(weights))


def select_files(
    paths: Sequence[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    all_files: bool = False,
) -> list[str]:
    """``--include`` restricts to matching files (as ``hf download`` does), ``--exclude`` removes,
    ``--all-files`` takes everything."""
    if all_files:
        chosen = list(paths)
    elif include:
        chosen = [p for p in paths if _matches(p, include)]
    else:
        chosen = default_selection(paths)
    return sorted(p for p in chosen if not _matches(p, exclude))


@dataclass(frozen=True)
class Selection:
    files: list[str]
    quant: QuantChoice | None = None  # the GGUF quantization taken, with the reason

    @property
    def note(self) -> str | None:
        if self.quant is None:
            return None
        others = [q for q in self.quant.available if q != self.quant.quant]
        rest = f" (also in the repo: {', '.join(others)}; pick one with :QUANT)" if others else ""
        return f"GGUF quantization {self.quant.reason}{rest}"


def select(
    files: Mapping[str, int],
    *,
    quant: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    all_files: bool = False,
    free_memory: int | None = None,
    repo: str = "the repo",
) -> Selection:
    """The files to pull of a repo (path -> bytes). ``--include`` and ``--all-files`` override
    everything; a quantization tag takes that GGUF (all its parts) and nothing else; a repo with
    safetensors or pickle weights gets what from_pretrained needs (its GGUF files stay behind);
    a GGUF-only repo gets one quantization by ``choose_quant``'s rule."""
    paths = list(files)
    if all_files or include:
        return Selection(select_files(paths, include=include, exclude=exclude, all_files=all_files))
    has_transformers_weights = any(_top_level(p) and _matches(p, (*SAFETENSORS, *PICKLE)) for p in paths)
    if quant is None and has_transformers_weights:
        return Selection(select_files(paths, exclude=exclude))
    choice = choose_quant(files, tag=quant, free_memory=free_memory, repo=repo)
    if choice is None:
        if quant is not None:
            raise EntryNotFound(f"{repo} has no GGUF files, so the tag :{quant} matches nothing. Drop the tag to pull its {', '.join(sorted({p.rsplit('.', 1)[-1] for p in paths if '.' in p})[:4]) or 'files'}.")
        return Selection(select_files(paths, exclude=exclude))
    return Selection(sorted(p for p in choice.files if not _matches(p, exclude)), choice)
