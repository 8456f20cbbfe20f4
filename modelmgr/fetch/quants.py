"""GGUF repositories: which quantization each file holds, and which one a pull takes.

A GGUF repo holds one file per quantization (``Model-Q4_K_M.gguf``, ``model-q8_0.gguf``; large
ones split as ``Model-Q8_0-00001-of-00003.gguf``, every part needed). A load needs exactly one
quantization, so a pull takes one: the tag the reference names (``org/name:Q4_K_M``), else by
the rule in ``choose_quant``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from modelmgr.errors import EntryNotFound
from modelmgr.units import format_size

DEFAULT_QUANT = "Q4_K_M"  # what ollama and LM Studio default to: the usual size/quality balance

# Approximate bits per weight (llama.cpp's quantize table): "nearest to Q4_K_M" is measured on it.
BITS_PER_WEIGHT = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_1": 6.0,
    "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5, "Q4_1": 5.0, "Q4_K_M": 4.85, "Q4_K_S": 4.58,
    "Q4_0": 4.5, "IQ4_NL": 4.5, "MXFP4": 4.25, "IQ4_XS": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91,
    "IQ3_M": 3.66, "IQ3_S": 3.44, "Q3_K_S": 3.5, "Q2_K": 3.35, "IQ3_XS": 3.3, "IQ3_XXS": 3.06,
    "Q2_K_S": 2.9, "IQ2_M": 2.7, "IQ2_S": 2.5, "IQ2_XS": 2.31, "IQ2_XXS": 2.06, "TQ2_0": 2.06,
    "IQ1_M": 1.75, "TQ1_0": 1.69, "IQ1_S": 1.56,
    # Unsloth's "dynamic" K-quants: the base type with some layers kept at more bits, so a little
    # above the _M of the same base (their file sizes: Q4_K_XL is ~3% above Q4_K_M).
    "Q2_K_XL": 3.5, "Q3_K_XL": 4.1, "Q4_K_XL": 5.0, "Q5_K_XL": 5.85, "Q6_K_XL": 6.8, "Q8_K_XL": 9.0,
}
# Unsloth marks its dynamic quantizations with "UD-" (gpt-oss-20b-UD-Q4_K_XL.gguf): kept in the
# name, as the Hub spells it, and weighed as the quantization after it.
UD_PREFIX = "UD-"
# Longest first, so "Q4_K_M" is found before "Q4_K" could be; bounded by separators on both sides.
# Beyond the table: any K-quant (Q4_K, Q3_K_XS, Q5_K_XXS) and I-quant (IQ4_XL) by its shape.
_NAMES = "|".join(sorted((re.escape(name) for name in BITS_PER_WEIGHT), key=len, reverse=True))
_QUANT_IN_NAME = re.compile(
    rf"(?:^|[-._])((?:UD-)?(?:{_NAMES}|Q\d_K(?:_XXS|_XS|_XL|_[SML])?|IQ\d_(?:XXS|XS|XL|NL|[SML])))(?=[-._]|$)", re.IGNORECASE,
)
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# A file's share of free memory beyond its own size: the KV cache and llama.cpp's buffers.
FIT_MARGIN = 1.2


def is_gguf(path: str) -> bool:
    """A model's GGUF weights (not a vision projector or an importance matrix shipped beside them)."""
    name = path.rsplit("/", 1)[-1].lower()
    return name.endswith(".gguf") and not name.startswith(("mmproj", "imatrix"))


def bits_per_weight(quant: str) -> float | None:
    """Approximate bits per weight of a quantization name ("UD-Q4_K_XL" as Q4_K_XL); None: unknown."""
    name = quant.upper()
    return BITS_PER_WEIGHT.get(name[len(UD_PREFIX):] if name.startswith(UD_PREFIX) else name)


def quant_of(path: str) -> str | None:
    """The quantization a GGUF file name says it holds, upper-cased; None when it names none."""
    stem = _SPLIT.sub("", path.rsplit("/", 1)[-1])
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    found = _QUANT_IN_NAME.findall(stem)
    return found[-1].upper() if found else None


@dataclass(frozen=True)
class QuantChoice:
    quant: str
    files: tuple[str, ...]  # every part, in order
    size: int
    reason: str  # why this one, for `pull --dry-run` and the pull's log
    available: tuple[str, ...]  # every quantization of the repo


def gguf_groups(files: Mapping[str, int]) -> dict[str, list[str]]:
    """Quantization -> its GGUF files (all parts of a split one). A file whose name gives no
    quantization is its own group, named after the file."""
    groups: dict[str, list[str]] = {}
    for path in sorted(files):
        if is_gguf(path):
            groups.setdefault(quant_of(path) or path, []).append(path)
    return groups


def choose_quant(files: Mapping[str, int], *, tag: str | None, free_memory: int | None, repo: str = "the repo") -> QuantChoice | None:
    """The quantization to pull from ``files`` (path -> bytes); None when there is no GGUF.

    The rule: the tag when given; else Q4_K_M when present; else the quantization nearest to
    Q4_K_M in bits per weight whose files, with 20% for the KV cache and runtime, fit in
    ``free_memory`` (None: unknown, everything fits); else the smallest.
    """
    groups = gguf_groups(files)
    if not groups:
        return None
    available = tuple(sorted(groups, key=lambda q: -(bits_per_weight(q) or 0)))

    def choice(quant: str, reason: str) -> QuantChoice:
        parts = groups[quant]
        return QuantChoice(quant, tuple(parts), sum(files[p] for p in parts), reason, available)

    if tag is not None:
        for quant in groups:
            if quant.upper() == tag.upper():
                return choice(quant, f"{quant}: the tag asked for it")
        # Q4_K_XL for UD-Q4_K_XL (or back): named, not taken, so a tag names one set of files.
        bare = tag.upper().removeprefix(UD_PREFIX)
        near = [q for q in available if q.upper().removeprefix(UD_PREFIX) == bare]
        hint = f" Did you mean {repo}:{near[0]}?" if near else f" Write {repo}:QUANT with one of them."
        raise EntryNotFound(f"{repo} has no {tag} GGUF file. Quantizations it has: {', '.join(available)}.{hint}")
    if DEFAULT_QUANT in groups:
        return choice(DEFAULT_QUANT, f"{DEFAULT_QUANT}: the default quantization")
    sizes = {quant: sum(files[p] for p in parts) for quant, parts in groups.items()}
    target = BITS_PER_WEIGHT[DEFAULT_QUANT]
    # Nearest in bits, then a plain quantization before Unsloth's of the same bits, then smaller.
    nearest = sorted(groups, key=lambda q: (abs((bits_per_weight(q) or 99) - target), q.upper().startswith(UD_PREFIX), sizes[q]))
    for quant in nearest:
        if free_memory is None or sizes[quant] * FIT_MARGIN <= free_memory:
            here = "" if free_memory is None else f" that fits in {format_size(free_memory)} free here"
            return choice(quant, f"{quant}: no {DEFAULT_QUANT} in the repo; the nearest to it{here}")
    smallest = min(groups, key=lambda q: sizes[q])
    return choice(smallest, f"{smallest}: no {DEFAULT_QUANT}, and none fits in {format_size(free_memory or 0)} free here; the smallest")
