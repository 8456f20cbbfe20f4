"""A GGUF file's header, read without numpy, llama.cpp or loading a single weight.

Layout (llama.cpp's gguf.md): magic ``GGUF``, version (u32), tensor count (u64), metadata count
(u64), the metadata (key string, value type u32, value), then one info per tensor (name, rank
u32, dims u64 each, ggml type u32, offset u64). Strings are a u64 length and UTF-8 bytes.

Every count and length is checked against the bytes the file still has before it is used, so a
hostile header (a count of 2**60, a string running past the end, a truncated file) is one
BackendError, never a crash or an allocation of gigabytes. Big arrays (the vocabulary, the
merges) are walked, not kept: only their length is needed here.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from modelmgr.errors import BackendError

MAGIC = b"GGUF"
MAX_RANK = 4  # GGML_MAX_DIMS
KEEP_ARRAY = 64  # arrays up to this length are kept as lists; longer ones become their length
MAX_KEY = 65535

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# llama_ftype (general.file_type) -> the name llama.cpp's quantize and the Hub's file names use.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}
# ggml_type -> name, for files without general.file_type (the most common tensor type decides).
TENSOR_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
    11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
    18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8",
    25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]  # arrays longer than KEEP_ARRAY are stored as their length
    tensors: tuple[TensorInfo, ...]

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    def arch_int(self, suffix: str) -> int | None:
        """``<architecture>.<suffix>`` as a positive int (per-layer arrays: their first value)."""
        value = self.metadata.get(f"{self.architecture}.{suffix}")
        if isinstance(value, list) and value:
            value = value[0]
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    @property
    def quantization(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        counts: dict[int, int] = {}
        for tensor in self.tensors:
            if len(tensor.shape) >= 2:  # norms stay F32 in every quantization
                counts[tensor.ggml_type] = counts.get(tensor.ggml_type, 0) + tensor.count
        if not counts:
            return None
        return TENSOR_TYPES.get(max(counts, key=counts.__getitem__))


class _Reader:
    """Reads little-endian values from a file, refusing to go past its end."""

    def __init__(self, handle: BinaryIO, size: int, path: Path):
        self.handle, self.size, self.path = handle, size, path

    def remaining(self) -> int:
        return self.size - self.handle.tell()

    def fail(self, why: str) -> BackendError:
        return BackendError(f"{self.path} is not a valid GGUF file: {why}. Run `modelmgr verify` or pull the model again.")

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining():
            raise self.fail(f"{what} needs {count} bytes but the file has {self.remaining()} left (truncated or corrupt)")
        return self.handle.read(count)

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item: int) -> int:
        value = self.scalar("<Q", what)
        if value * min_item > self.remaining():
            raise self.fail(f"{what} is {value}, more than the {self.remaining()} bytes left could hold")
        return value

    def string(self, what: str, *, keep: bool = True) -> str | None:
        length = self.count(f"the length of {what}", 1)
        if not keep:
            self.handle.seek(length, os.SEEK_CUR)
            return None
        return self.take(length, what).decode("utf-8", errors="replace")

    def value(self, kind: int, what: str, *, keep: bool = True) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], what)
        if kind == _STRING:
            return self.string(what, keep=keep)
        if kind == _ARRAY:
            item = self.scalar("<I", f"the element type of {what}")
            if item == _ARRAY:
                raise self.fail(f"{what} is an array of arrays, which GGUF does not use")
            if item != _STRING and item not in _SCALARS:
                raise self.fail(f"{what} has unknown element type {item}")
            min_item = 8 if item == _STRING else struct.calcsize(_SCALARS[item])
            length = self.count(f"the length of {what}", min_item)
            keep_items = keep and length <= KEEP_ARRAY
            if item != _STRING and not keep_items:
                self.handle.seek(length * min_item, os.SEEK_CUR)  # bounded by count() above
                return length
            items = [self.value(item, f"{what}[{index}]", keep=keep_items) for index in range(length)]
            return items if keep_items else length
        raise self.fail(f"{what} has unknown value type {kind}")


def read_gguf_header(path: Path | str) -> GGUFHeader:
    """The metadata and tensor list of a GGUF file. Raises BackendError for anything malformed."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror or exc}. Pull the model again.") from None
    with handle:
        reader = _Reader(handle, os.fstat(handle.fileno()).st_size, path)
        if reader.remaining() < 4 or reader.take(4, "the magic number") != MAGIC:
            raise reader.fail("it does not start with 'GGUF'")
        version = reader.scalar("<I", "the version")
        if version not in (2, 3):
            raise reader.fail(f"version {version} is not one this reader knows (2 or 3)")
        # Each tensor info takes at least 8+4+8+4+8 bytes, each metadata entry 8+1+4+1.
        tensor_count = reader.count("the tensor count", 32)
        kv_count = reader.count("the metadata count", 14)
        metadata: dict[str, Any] = {}
        for index in range(kv_count):
            key = reader.string(f"metadata key {index}")
            assert key is not None
            if len(key) > MAX_KEY:
                raise reader.fail(f"metadata key {index} is {len(key)} characters long")
            kind = reader.scalar("<I", f"the type of {key!r}")
            metadata[key] = reader.value(kind, repr(key))
        tensors = []
        for index in range(tensor_count):
            name = reader.string(f"the name of tensor {index}") or ""
            rank = reader.scalar("<I", f"the rank of {name!r}")
            if rank > MAX_RANK:
                raise reader.fail(f"tensor {name!r} has {rank} dimensions (at most {MAX_RANK})")
            shape = tuple(reader.scalar("<Q", f"a dimension of {name!r}") for _ in range(rank))
            if any(dim > 2**40 for dim in shape):
                raise reader.fail(f"tensor {name!r} has an implausible shape {shape}")
            ggml_type = reader.scalar("<I", f"the type of {name!r}")
            reader.scalar("<Q", f"the offset of {name!r}")
            tensors.append(TensorInfo(name, shape, ggml_type))
    return GGUFHeader(path, version, metadata, tuple(tensors))
