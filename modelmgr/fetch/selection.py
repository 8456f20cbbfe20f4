"""Which files of a repository a ``from_pretrained`` load needs.

A typical LLM repo carries its weights two to five times over (safetensors, a pickle copy,
ONNX, GGUF quantisations, Flax, TF). Downloading all of it is what makes ``hf download``
slow; a load needs the config, the tokenizer, the chat template and one copy of the weights.
"""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Iterable, Sequence, TypeVar

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
        # Something we do not recognise (GGUF-only, custom formats): better everything than nothing.
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
