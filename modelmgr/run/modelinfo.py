"""What a model snapshot is, read from its files alone: config.json and the safetensors headers,
or a GGUF file's header (run/ggufinfo.py).

No torch here. A safetensors file starts with an 8-byte little-endian header length and a JSON
header naming every tensor's dtype and shape, so the exact parameter count of a 70B model is
known after reading a few kilobytes, before anything is loaded or even fully downloaded.
"""
from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from modelmgr.errors import BackendError
from modelmgr.run.info import DEFAULT_CONTEXT_CAP, ModelInfo, TensorCounts  # noqa: F401 - ModelInfo: re-exported

# A real header is a few hundred kB even for thousands of tensors; anything past this is not one.
MAX_HEADER_BYTES = 100 * 1024 * 1024

BYTES_PER_DTYPE = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
_SAFETENSORS_DTYPES = {
    "F64": ("float64", 8), "F32": ("float32", 4), "BF16": ("bfloat16", 2), "F16": ("float16", 2),
    "F8_E4M3": ("float8_e4m3", 1), "F8_E5M2": ("float8_e5m2", 1),
    "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "max_seq_len", "n_ctx")


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, without reading its tensors."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise BackendError(f"{path} is not a safetensors file: shorter than 8 bytes. Pull the model again.")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise BackendError(f"{path} is not a safetensors file: header length {length} is implausible. Pull the model again.")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackendError(f"{path} has a corrupt safetensors header. Run `modelmgr verify` or pull the model again.") from None
    if not isinstance(header, dict):
        raise BackendError(f"{path} has a corrupt safetensors header. Run `modelmgr verify` or pull the model again.")
    return header


def _is_embedding(name: str) -> bool:
    return "embed" in name or "lm_head" in name or name.endswith("wte.weight") or name.endswith("wpe.weight")


def count_tensors(headers: list[dict[str, Any]]) -> tuple[TensorCounts, str | None]:
    """Parameter counts by kind, and the dtype holding most of them."""
    linear = embedding = other = 0
    by_dtype: Counter[str] = Counter()
    for header in headers:
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            count = math.prod(entry.get("shape") or [1])
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype", ""), (str(entry.get("dtype")).lower(), 0))[0]
            by_dtype[dtype] += count
            if _is_embedding(name):
                embedding += count
            elif len(entry.get("shape") or []) == 2 and name.endswith(".weight"):
                linear += count
            else:
                other += count
    stored = by_dtype.most_common(1)[0][0] if by_dtype else None
    return TensorCounts(linear, embedding, other), stored


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs keep the language model's dimensions under text_config."""
    nested = config.get("text_config")
    if isinstance(nested, dict) and "hidden_size" not in config:
        return nested
    return config


def _first(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _counts_from_config(config: Mapping[str, Any]) -> TensorCounts | None:
    """A decoder-only transformer's size from its dimensions: good to a few percent for the
    Llama family, only a fallback for checkpoints without safetensors."""
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    vocab = _first(config, "vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = _first(config, "num_attention_heads", "n_head") or 1
    kv_heads = _first(config, "num_key_value_heads") or heads
    head_dim = _first(config, "head_dim") or hidden // heads
    intermediate = _first(config, "intermediate_size", "n_inner") or 4 * hidden
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o and k, v projections
    mlp = 3 * hidden * intermediate  # gate, up, down (2 for GELU models: a slight overestimate)
    embedding = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return TensorCounts(linear=layers * (attention + mlp), embedding=embedding, other=layers * 2 * hidden + hidden)


def _weight_files(path: Path, names: list[str]) -> tuple[list[str], str | None]:
    """The files transformers would load: the index's shards, else top-level weight files."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            return sorted(set(weight_map.values())), "safetensors"
        except (OSError, ValueError, AttributeError):
            pass
    top = [name for name in names if "/" not in name]
    if "model.safetensors" in top:
        return ["model.safetensors"], "safetensors"
    safetensors = [name for name in top if name.endswith(".safetensors")]
    if safetensors:
        return safetensors, "safetensors"
    pickles = [name for name in top if name.endswith(PICKLE_SUFFIXES) and name != "training_args.bin"]
    return (pickles, "pickle") if pickles else ([], None)


def _files(path: Path) -> tuple[tuple[str, int], ...]:
    files = []
    for file in sorted(path.rglob("*")):
        if file.is_file() and ".cache" not in file.relative_to(path).parts:
            files.append((file.relative_to(path).as_posix(), file.stat().st_size))
    return tuple(files)


def read_model_info(path: Path, *, quant: str | None = None) -> ModelInfo:
    """Describe the model in a snapshot (or any local model directory).

    A folder of GGUF files is described by one quantization's header: ``quant`` ("Q4_K_M", as in
    ``org/name:Q4_K_M``), else the only one there, else the pull's rule. With a ``quant``, the
    GGUF is described even when the folder also holds a transformers model.
    """
    path = Path(path)
    config_path = path / "config.json"
    files = _files(path)
    weight_files, weight_format = _weight_files(path, [name for name, _ in files])
    has_gguf = any(name.lower().endswith(".gguf") and "/" not in name for name, _ in files)
    if quant is not None or has_gguf and not weight_files:
        from modelmgr.run.ggufinfo import gguf_model_info  # numpy-free, but only GGUF folders need it

        return gguf_model_info(path, files, quant)
    if not config_path.is_file():
        raise BackendError(f"{path} has no config.json and no GGUF file, so it is not a model directory modelmgr can run. Check the reference or pull the model again.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(f"cannot read {config_path}: {exc}. Pull the model again.") from None
    if not isinstance(config, dict):
        raise BackendError(f"{config_path} is not a JSON object. Pull the model again.")

    text = _text_config(config)
    stored_dtype = None
    counts: TensorCounts | None = None
    source = "safetensors headers"
    present = [name for name in weight_files if (path / name).is_file()]
    if weight_format == "safetensors" and present and len(present) == len(weight_files):
        counts, stored_dtype = count_tensors([read_safetensors_header(path / name) for name in present])
    if counts is None:
        counts = _counts_from_config(text)
        source = "config.json (approximate)"
    if counts is None:
        sizes = dict(files)
        weight_bytes = sum(sizes.get(name, 0) for name in weight_files)
        per = BYTES_PER_DTYPE.get(str(config.get("dtype") or config.get("torch_dtype")), 2)
        counts = TensorCounts(linear=weight_bytes // per)
        source = "file size (approximate)"
    if stored_dtype is None:
        stored_dtype = config.get("dtype") or config.get("torch_dtype") or text.get("dtype") or text.get("torch_dtype")

    heads = _first(text, "num_attention_heads", "n_head")
    hidden = _first(text, "hidden_size", "n_embd", "d_model")
    quantization = config.get("quantization_config")
    architectures = config.get("architectures") or []
    return ModelInfo(
        path=path,
        architecture=architectures[0] if architectures else None,
        model_type=config.get("model_type"),
        parameters=counts,
        parameter_source=source,
        context_length=_first(text, *_CONTEXT_KEYS),
        stored_dtype=stored_dtype,
        num_layers=_first(text, "num_hidden_layers", "n_layer", "num_layers"),
        num_kv_heads=_first(text, "num_key_value_heads") or heads,
        head_dim=_first(text, "head_dim") or (hidden // heads if hidden and heads else None),
        files=files,
        weight_files=tuple(weight_files),
        weight_format=weight_format,
        has_remote_code=bool(config.get("auto_map")),
        quantization=quantization.get("quant_method", "unknown") if isinstance(quantization, dict) else None,
        config=config,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    overhead: int
    context_length: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


def kv_cache_bytes(info: ModelInfo, *, context_length: int, bytes_per_value: int) -> int:
    """Keys and values for every layer at batch size 1: 2 x layers x kv_heads x head_dim x tokens."""
    if not (info.num_layers and info.num_kv_heads and info.head_dim):
        return 0
    return 2 * info.num_layers * info.num_kv_heads * info.head_dim * context_length * bytes_per_value


def estimate_memory(
    info: ModelInfo,
    *,
    dtype: str,
    int8: bool = False,
    context_length: int | None = None,
    runtime_bytes: int = 0,
) -> MemoryEstimate:
    """Bytes a backend needs to hold the model and chat with it.

    ``dtype`` is the compute dtype; with ``int8`` the linear weights take one byte each (plus a
    float32 scale per output row, which this ignores: under 1%) and everything else stays in
    ``dtype``. A pre-quantized checkpoint is counted at its size on disk, since it loads as stored.
    ``runtime_bytes`` is what the backend's machinery costs before any weight (a CUDA context,
    the torch libraries); on top comes 10% of the weights for allocator slack, load-time
    temporaries and one forward pass's activations. It is an estimate to decide what fits, not
    a promise: it errs a little high for the steady state. Loading can peak higher for a moment:
    8-bit quantization passes each weight through a 16-bit copy (on a CPU, from a float32
    checkpoint, the peak was about 2x the steady int8 size in benchmarks/bench_run.py).
    """
    per = BYTES_PER_DTYPE.get(dtype)
    if per is None:
        raise BackendError(f"unknown dtype {dtype!r}. Valid dtypes: {', '.join(BYTES_PER_DTYPE)}.")
    counts = info.parameters
    if info.quantization:
        weights = info.weights_size
    elif int8:
        weights = counts.linear + (counts.embedding + counts.other) * per
    else:
        weights = counts.total * per
    context = info.default_context(context_length)
    kv = kv_cache_bytes(info, context_length=context, bytes_per_value=per)
    return MemoryEstimate(weights=weights, kv_cache=kv, overhead=runtime_bytes + weights // 10, context_length=context)
