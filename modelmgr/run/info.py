"""What modelmgr knows of a model before loading it: the dataclasses both readers fill in,
``run/modelinfo.py`` from config.json and safetensors headers, ``run/ggufinfo.py`` from a GGUF
header."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

# Context assumed for the KV cache when the user does not say: the model's own, capped, because a
# 128k-token cache would dwarf the weights and nobody chatting at a prompt comes near it.
DEFAULT_CONTEXT_CAP = 4096


@dataclass(frozen=True)
class TensorCounts:
    """Parameters split the way 8-bit quantization treats them: bitsandbytes converts the 2-D
    weights of linear layers and leaves embeddings, the output head, norms and biases alone."""

    linear: int = 0
    embedding: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.linear + self.embedding + self.other


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    architecture: str | None
    model_type: str | None
    parameters: TensorCounts
    parameter_source: str  # "safetensors headers", "GGUF header", "config.json (approximate)" or "file size (approximate)"
    context_length: int | None
    stored_dtype: str | None
    num_layers: int | None
    num_kv_heads: int | None
    head_dim: int | None
    files: tuple[tuple[str, int], ...]  # every file of the snapshot: (relative path, bytes)
    weight_files: tuple[str, ...]
    weight_format: str | None  # "safetensors", "pickle", "gguf" or None when there are no weights
    has_remote_code: bool  # config.json has auto_map: loading may run the repository's Python
    quantization: str | None  # quantization_config.quant_method of a pre-quantized checkpoint; a GGUF's "Q4_K_M"
    config: Mapping[str, Any]  # config.json; for a GGUF, its header's scalar metadata
    chat_template: str | None = None  # a GGUF's tokenizer.chat_template (transformers models keep theirs in files)
    tokenizer_model: str | None = None  # a GGUF's tokenizer.ggml.model: "gpt2", "llama", ...

    @property
    def parameter_count(self) -> int:
        return self.parameters.total

    @property
    def total_size(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def weights_size(self) -> int:
        names = set(self.weight_files)
        return sum(size for name, size in self.files if name in names)

    def default_context(self, requested: int | None = None) -> int:
        if requested:
            return requested
        return min(self.context_length or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "model_type": self.model_type,
            "parameters": self.parameter_count,
            "parameter_source": self.parameter_source,
            "context_length": self.context_length,
            "stored_dtype": self.stored_dtype,
            "format": self.weight_format,
            "weight_format": self.weight_format,
            "weight_files": list(self.weight_files),
            "files": len(self.files),
            "size": self.total_size,
            "has_remote_code": self.has_remote_code,
            "quantization": self.quantization,
            "tokenizer_model": self.tokenizer_model,
            "has_chat_template": bool(self.chat_template) if self.weight_format == "gguf" else None,
        }
