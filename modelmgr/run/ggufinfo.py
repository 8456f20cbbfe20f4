"""A GGUF model's ModelInfo, from its header alone: architecture, parameters, context, quantization,
chat template and tokenizer, before llama.cpp (or anything else) is loaded."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from modelmgr.errors import BackendError
from modelmgr.fetch.quants import choose_quant, gguf_groups
from modelmgr.run.ggufheader import GGUFHeader, read_gguf_header
from modelmgr.run.info import ModelInfo, TensorCounts

_EMBEDDINGS = ("token_embd.", "output.", "position_embd.")


def pick_gguf(path: Path, files: Sequence[tuple[str, int]], quant: str | None) -> tuple[str, list[str]]:
    """The quantization to load from a folder and its files (all parts): the tag, else the only
    one there, else by the pull's rule (Q4_K_M, else the nearest that fits here)."""
    from modelmgr.run.memory import free_ram

    sizes = {name: size for name, size in files if "/" not in name}
    if quant is None and len(gguf_groups(sizes)) > 1:
        free = free_ram()
    else:
        free = None
    choice = choose_quant(sizes, tag=quant, free_memory=free, repo=str(path))
    if choice is None:
        raise BackendError(f"{path} has no GGUF file. Check the reference or pull the model again.")
    return choice.quant, list(choice.files)


def _scalars(header: GGUFHeader) -> dict[str, Any]:
    """The metadata a person might look at: no vocabulary, no template (they have their own fields)."""
    return {k: v for k, v in header.metadata.items() if not isinstance(v, list) and k != "tokenizer.chat_template"}


def gguf_model_info(path: Path, files: tuple[tuple[str, int], ...], quant: str | None) -> ModelInfo:
    """The ModelInfo of one quantization in a folder of GGUF files."""
    name, parts = pick_gguf(path, files, quant)
    present = [part for part in parts if (path / part).is_file()]
    if not present:
        raise BackendError(f"{path} is missing {parts[0]}. Pull the model again.")
    headers = [read_gguf_header(path / part) for part in present]
    first = headers[0]
    linear = embedding = other = 0
    for header in headers:
        for tensor in header.tensors:
            if tensor.name.startswith(_EMBEDDINGS):
                embedding += tensor.count
            elif len(tensor.shape) == 2 and tensor.name.endswith(".weight"):
                linear += tensor.count
            else:
                other += tensor.count
    heads = first.arch_int("attention.head_count")
    hidden = first.arch_int("embedding_length")
    head_dim = first.arch_int("attention.key_length") or (hidden // heads if hidden and heads else None)
    quantization = first.quantization or name
    template = first.get("tokenizer.chat_template")
    tokenizer = first.get("tokenizer.ggml.model")
    return ModelInfo(
        path=path,
        architecture=first.architecture,
        model_type=first.architecture,
        parameters=TensorCounts(linear, embedding, other),
        parameter_source="GGUF header" + ("" if len(present) == len(parts) else f" ({len(present)} of {len(parts)} parts)"),
        context_length=first.arch_int("context_length"),
        stored_dtype=quantization,
        num_layers=first.arch_int("block_count"),
        num_kv_heads=first.arch_int("attention.head_count_kv") or heads,
        head_dim=head_dim,
        files=files,
        weight_files=tuple(parts),
        weight_format="gguf",
        has_remote_code=False,  # a GGUF is data: llama.cpp runs no code from it
        quantization=quantization,
        config=_scalars(first),
        chat_template=template if isinstance(template, str) else None,
        tokenizer_model=tokenizer if isinstance(tokenizer, str) else None,
    )
