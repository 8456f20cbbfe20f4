"""A GGUF file's header, read without numpy, llama.cpp or loading a single weight.

Layout (llama.cpp's gguf.md): magic ``GGUF``, version (u32), tensor count (u64), metadata count
(u64), the metadata (key string, value type u32, value), then one info per tensor (name, rank
u32, dims u64 each, ggml type u32, offset u64). Strings are a u64 length and UTF-8 bytes.

Every count and length is checked against the bytes the file still has before it is used, and
against a cap no real model comes near, before anything is read, so a hostile header (a count of
2**60, a string running past the end, a 1.5 GB string in a sparse file, ten million empty
strings, a truncated file) is one BackendError in bounded time and memory, never a crash or an
allocation of gigabytes. Big arrays (the vocabulary, the merges) are walked in chunks, not kept:
only their length is needed here. What the header keeps (keys, short strings, tensor names) is
charged against one budget, MAX_KEPT.
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
MAX_KEY = 65535  # bytes of a metadata key or a tensor name, checked before it is read
MAX_STRING = 16 * 2**20  # a string value: a chat template is KBs, a vocabulary's tokens are bytes
MAX_ARRAY = 4 * 2**20  # elements of a string array: real vocabularies and merges are < 1M
MAX_WALKED = 4 * MAX_ARRAY  # string-array elements walked in one header, all arrays together
MAX_METADATA = 2**16  # metadata entries: real files have tens
MAX_TENSORS = 2**20  # tensor infos: real files have thousands
MAX_KEPT = 64 * 2**20  # bytes kept in memory (strings, keys, names, each plus _OVERHEAD)
_OVERHEAD = 64  # what a kept str or TensorInfo costs beyond its bytes, roughly
_CHUNK = 2**20  # how much of a long string array is read at once while walking it
# String values modelmgr reads: one over MAX_STRING is refused; any other is skipped with a seek.
NEEDED_STRINGS = ("general.architecture", "general.name", "tokenizer.ggml.model", "tokenizer.chat_template")

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
    """Reads little-endian values from a file, refusing to go past its end or past the caps."""

    def __init__(self, handle: BinaryIO, size: int, path: Path):
        self.handle, self.size, self.path = handle, size, path
        self.kept = 0  # bytes kept so far, against MAX_KEPT
        self.walked = 0  # string-array elements walked so far, against MAX_WALKED

    def remaining(self) -> int:
        return self.size - self.handle.tell()

    def fail(self, why: str) -> BackendError:
        return BackendError(f"{self.path} is not a valid GGUF file: {why}. Run `modelmgr verify` or pull the model again.")

    def keep(self, count: int) -> None:
        self.kept += count + _OVERHEAD
        if self.kept > MAX_KEPT:
            raise self.fail(f"its header holds more than {MAX_KEPT // 2**20} MiB of metadata and tensor names")

    def take(self, count: int, what: str) -> bytes:
        if count > self.remaining():
            raise self.fail(f"{what} needs {count} bytes but the file has {self.remaining()} left (truncated or corrupt)")
        return self.handle.read(count)

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def count(self, what: str, min_item: int, limit: int | None = None, unit: str = "") -> int:
        value = self.scalar("<Q", what)
        if value * min_item > self.remaining():
            raise self.fail(f"{what} is {value}, more than the {self.remaining()} bytes left could hold")
        if limit is not None and value > limit:
            raise self.fail(f"{what} is {value}, more than the {limit}{unit} any real model has")
        return value

    def string(self, what: str, *, keep: bool = True, limit: int = MAX_STRING, skip_long: bool = False) -> str | None:
        """A string, kept (and charged) or skipped. Longer than ``limit``: refused, or with
        ``skip_long`` skipped and None, so that no length this side of the file's size is read."""
        length = self.count(f"the length of {what}", 1)
        if length > limit and not (skip_long and limit == MAX_STRING):
            raise self.fail(f"{what} is {length} bytes long (at most {limit})")
        if not keep or length > limit:
            self.handle.seek(length, os.SEEK_CUR)  # bounded by count() above
            return None
        self.keep(length)
        return self.take(length, what).decode("utf-8", errors="replace")

    def skip_strings(self, length: int, what: str) -> None:
        """Walk ``length`` strings without keeping them: their lengths read a chunk at a time."""
        self.walked += length
        if self.walked > MAX_WALKED:
            raise self.fail(f"its string arrays have more than {MAX_WALKED} elements in all")
        position, end = self.handle.tell(), self.size
        buffer, start = b"", position
        for index in range(length):
            offset = position - start
            if offset + 8 > len(buffer):
                self.handle.seek(position)
                buffer, start, offset = self.handle.read(_CHUNK), position, 0
                if len(buffer) < 8:
                    raise self.fail(f"{what}[{index}] runs past the end of the file (truncated or corrupt)")
            (size,) = struct.unpack_from("<Q", buffer, offset)
            if size > MAX_STRING:
                raise self.fail(f"{what}[{index}] is {size} bytes long (at most {MAX_STRING})")
            position += 8
            if position + size > end:
                raise self.fail(f"{what}[{index}] needs {size} bytes but the file has {end - position} left (truncated or corrupt)")
            position += size
        self.handle.seek(position)

    def value(self, kind: int, what: str, *, skip_long: bool = False) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind], what)
        if kind == _STRING:
            return self.string(what, skip_long=skip_long)
        if kind == _ARRAY:
            item = self.scalar("<I", f"the element type of {what}")
            if item == _ARRAY:
                raise self.fail(f"{what} is an array of arrays, which GGUF does not use")
            if item != _STRING and item not in _SCALARS:
                raise self.fail(f"{what} has unknown element type {item}")
            min_item = 8 if item == _STRING else struct.calcsize(_SCALARS[item])
            # Scalar arrays are skipped with one seek whatever their length; string arrays cost a
            # walk, so their length is capped.
            length = self.count(f"the length of {what}", min_item, MAX_ARRAY if item == _STRING else None, " elements")
            if length > KEEP_ARRAY:
                if item == _STRING:
                    self.skip_strings(length, what)
                else:
                    self.handle.seek(length * min_item, os.SEEK_CUR)  # bounded by count() above
                return length
            return [self.value(item, f"{what}[{index}]") for index in range(length)]
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
        tensor_count = reader.count("the tensor count", 32, MAX_TENSORS)
        kv_count = reader.count("the metadata count", 14, MAX_METADATA)
        metadata: dict[str, Any] = {}
        for index in range(kv_count):
            key = reader.string(f"metadata key {index}", limit=MAX_KEY)
            assert key is not None
            kind = reader.scalar("<I", f"the type of {key!r}")
            needed = key in NEEDED_STRINGS or key.startswith("tokenizer.chat_template.")
            value = reader.value(kind, repr(key), skip_long=not needed)
            if value is not None:  # None: a string over MAX_STRING that modelmgr does not read
                metadata[key] = value
        tensors = []
        for index in range(tensor_count):
            name = reader.string(f"the name of tensor {index}", limit=MAX_KEY) or ""
            reader.keep(3 * _OVERHEAD)  # the TensorInfo and its shape
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
