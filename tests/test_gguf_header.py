"""The GGUF header reader on real files and on hostile ones, and the quantization rule."""
from __future__ import annotations

import os
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest

from modelmgr.errors import BackendError, EntryNotFound
from modelmgr.fetch.quants import choose_quant, quant_of
from modelmgr.run.ggufheader import read_gguf_header
from modelmgr.run.modelinfo import read_model_info

from .helpers import cli

GB = 10**9


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def header(*, tensors: int = 0, kvs: int = 1, body: bytes | None = None, version: int = 3) -> bytes:
    """A GGUF prefix: magic, version, counts, then ``body`` (by default one string KV)."""
    if body is None:
        body = _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
    return b"GGUF" + struct.pack("<IQQ", version, tensors, kvs) + body


HOSTILE = {
    "tensor count 2**60": header(tensors=2**60),
    "metadata count 2**60": header(kvs=2**60),
    "a key running past the end": header(body=struct.pack("<Q", 2**40) + b"general"),
    "a string value running past the end": header(body=_string("general.name") + struct.pack("<IQ", 8, 10**12) + b"x"),
    "an array of 2**60 strings": header(body=_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**60)),
    "an array of 2**60 u32": header(body=_string("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 4, 2**60)),
    "an array of arrays": header(body=_string("x") + struct.pack("<IIQ", 9, 9, 1)),
    "an unknown value type": header(body=_string("x") + struct.pack("<I", 99)),
    "a tensor of rank 1000": header(tensors=1, kvs=0, body=_string("w") + struct.pack("<I", 1000) + b"\0" * 64),
    "version 1": header(version=1),
    "not GGUF at all": b"PK\x03\x04 something else",
    "empty": b"",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_headers_are_one_clear_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / "model-Q4_0.gguf"
    path.write_bytes(HOSTILE[name])
    with pytest.raises(BackendError, match=r"is not a valid GGUF file: .*\. Run `modelmgr verify` or pull the model again\.$"):
        read_gguf_header(path)


def _sparse(path: Path, prefix: bytes, size: int) -> Path:
    """``prefix`` then zeros up to ``size`` bytes, in a sparse file: no disk, no time."""
    path.write_bytes(prefix)
    os.truncate(path, size)
    return path


def _max_rss() -> int:
    """The process's peak resident memory in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


MiB = 2**20
SPARSE = {
    # (the file's start, its size, what the error says): each would have read or walked
    # gigabytes, or millions of items, before the caps.
    "a 1.5 GB chat template": (
        header(body=_string("tokenizer.chat_template") + struct.pack("<IQ", 8, 1536 * MiB)),
        1600 * MiB, r"'tokenizer.chat_template' is 1610612736 bytes long \(at most 16777216\)"),
    "a 1.5 GB key": (header(body=struct.pack("<Q", 1536 * MiB)), 1600 * MiB, r"metadata key 0 is 1610612736 bytes long \(at most 65535\)"),
    "a 1.5 GB tensor name": (
        header(tensors=1, kvs=0, body=struct.pack("<Q", 1536 * MiB)), 1600 * MiB, r"the name of tensor 0 is 1610612736 bytes long"),
    "10M empty tokens": (
        header(body=_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 10**7)),
        80 * MiB + 100, r"the length of 'tokenizer.ggml.tokens' is 10000000, more than the 4194304 elements"),
    "a 1.5 GB token": (
        header(body=_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 100) + _string("a") * 99 + struct.pack("<Q", 1536 * MiB)),
        1600 * MiB, r"'tokenizer.ggml.tokens'\[99\] is 1610612736 bytes long"),
    "10M metadata entries": (header(kvs=10**7), 200 * MiB, r"the metadata count is 10000000, more than the 65536 any real model has"),
    "10M tensors": (header(tensors=10**7, kvs=0), 400 * MiB, r"the tensor count is 10000000, more than the 1048576 any real model has"),
}


@pytest.mark.parametrize("name", list(SPARSE))
def test_huge_strings_and_arrays_are_refused_before_they_are_read(tmp_path: Path, name: str) -> None:
    prefix, size, message = SPARSE[name]
    path = _sparse(tmp_path / "model-Q4_0.gguf", prefix, size)
    before, start = _max_rss(), time.monotonic()
    with pytest.raises(BackendError, match=message):
        read_gguf_header(path)
    assert time.monotonic() - start < 2 and _max_rss() - before < 64 * MiB


def test_what_a_header_keeps_has_one_budget(tmp_path: Path) -> None:
    """Twenty values of 15 MiB each (every one under MAX_STRING): refused at 64 MiB kept, not 300."""
    path = tmp_path / "model-Q4_0.gguf"
    with open(path, "wb") as handle:  # the values are holes: only the keys are written
        handle.write(header(kvs=20, body=b""))
        for i in range(20):
            handle.write(_string(f"general.k{i}") + struct.pack("<IQ", 8, 15 * MiB))
            handle.seek(15 * MiB, os.SEEK_CUR)
        handle.truncate()
    before = _max_rss()
    with pytest.raises(BackendError, match=r"its header holds more than 64 MiB of metadata and tensor names"):
        read_gguf_header(path)
    assert _max_rss() - before < 128 * MiB


def test_a_huge_string_modelmgr_does_not_read_is_skipped(tmp_path: Path) -> None:
    """A 1.5 GB value under a key modelmgr never reads is stepped over with a seek, not refused."""
    path = tmp_path / "model-Q4_0.gguf"
    with open(path, "wb") as handle:
        handle.write(header(kvs=2, body=b""))
        handle.write(_string("tokenizer.huggingface.json") + struct.pack("<IQ", 8, 1536 * MiB))
        handle.seek(1536 * MiB, os.SEEK_CUR)
        handle.write(_string("general.architecture") + struct.pack("<I", 8) + _string("llama"))
    before = _max_rss()
    head = read_gguf_header(path)
    assert head.architecture == "llama" and "tokenizer.huggingface.json" not in head.metadata
    assert _max_rss() - before < 64 * MiB


def test_a_long_string_array_is_walked_not_kept(tmp_path: Path) -> None:
    """A vocabulary of 300k tokens is walked a chunk at a time: its length, quickly."""
    tokens = b"".join(_string(f"t{i}") for i in range(300_000))
    path = tmp_path / "model-Q4_0.gguf"
    path.write_bytes(header(kvs=2, body=_string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 300_000) + tokens
                            + _string("general.architecture") + struct.pack("<I", 8) + _string("llama")))
    start = time.monotonic()
    head = read_gguf_header(path)
    assert head.get("tokenizer.ggml.tokens") == 300_000 and head.architecture == "llama"
    assert time.monotonic() - start < 2
    path.write_bytes(path.read_bytes()[:3_000_000])  # past the 2.4 MB the count check needs
    with pytest.raises(BackendError, match=r"'tokenizer.ggml.tokens'\[\d+\] .*(truncated or corrupt)"):
        read_gguf_header(path)


def test_every_truncation_of_a_real_file_is_an_error(tmp_path: Path, tiny_gguf_dir: Path) -> None:
    import gguf

    source = tiny_gguf_dir / "tiny-llama-Q4_0.gguf"
    data = source.read_bytes()
    header_end = gguf.GGUFReader(str(source)).data_offset  # the gguf package's own reading of it
    assert len(read_gguf_header(source).tensors) == 20
    # Cuts through the counts, the metadata (vocabulary, merges, template) and the tensor infos
    # (the last ends at most 31 bytes of alignment padding before the data).
    for cut in sorted({0, 1, 3, 4, 8, 23, 24, 100, 1000, header_end // 3, header_end // 2, header_end - 40, header_end - 200}):
        path = tmp_path / "cut.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(BackendError, match="is not a valid GGUF file"):
            read_gguf_header(path)


def test_a_real_header(tiny_gguf_dir: Path) -> None:
    head = read_gguf_header(tiny_gguf_dir / "tiny-llama-Q8_0.gguf")
    assert (head.architecture, head.quantization, head.arch_int("block_count"), head.arch_int("context_length")) == ("llama", "Q8_0", 2, 512)
    assert head.get("tokenizer.ggml.tokens") == 1024  # a long array is kept as its length
    assert head.get("tokenizer.ggml.model") == "gpt2" and "<|im_start|>" in head.get("tokenizer.chat_template")


@pytest.mark.parametrize("command", [("show",), ("run", "hello", "--json"), ("run", "hello")])
def test_a_hostile_gguf_is_one_line_and_exit_1(capsys, tmp_path: Path, command: tuple[str, ...]) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model-Q4_0.gguf").write_bytes(HOSTILE["tensor count 2**60"])
    outcome = cli(capsys, command[0], str(folder), *command[1:])
    assert outcome.code == 1
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "the tensor count is 1152921504606846976" in lines[0]


def test_model_info_from_a_folder_of_quantizations(tmp_path: Path, tiny_gguf_dir: Path) -> None:
    assert read_model_info(tiny_gguf_dir).quantization == "Q4_0"  # the pull's rule: nearest to Q4_K_M
    assert read_model_info(tiny_gguf_dir, quant="f16").weight_files == ("tiny-llama-F16.gguf",)
    with pytest.raises(EntryNotFound, match="has no Q6_K GGUF file. Quantizations it has: F16, Q8_0, Q4_0"):
        read_model_info(tiny_gguf_dir, quant="Q6_K")


@pytest.mark.parametrize("name, quant", [
    ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
    ("Model-Q8_0-00001-of-00003.gguf", "Q8_0"), ("model.IQ4_XS.gguf", "IQ4_XS"), ("model-bf16.gguf", "BF16"),
    ("model-f16.gguf", "F16"), ("model.gguf", None), ("Q4_0-tuned-Q5_K_S.gguf", "Q5_K_S"),
    # Unsloth's dynamic quantizations keep their "UD-" and their XL / XS / XXS.
    ("gpt-oss-20b-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"), ("gpt-oss-20b-Q4_K_XL.gguf", "Q4_K_XL"),
    ("Qwen3-30B-A3B-UD-IQ1_S.gguf", "UD-IQ1_S"), ("DeepSeek-R1-UD-IQ2_XXS-00001-of-00004.gguf", "UD-IQ2_XXS"),
    ("m-UD-Q2_K_XL.gguf", "UD-Q2_K_XL"), ("m-q3_k_xs.gguf", "Q3_K_XS"), ("m-ud-q8_k_xl.gguf", "UD-Q8_K_XL"),
    ("m-Q4_K.gguf", "Q4_K"), ("m-IQ4_NL.gguf", "IQ4_NL"), ("CUDA-model-Q4_K_M.gguf", "Q4_K_M"),
])
def test_quant_of_file_names(name: str, quant: str | None) -> None:
    assert quant_of(name) == quant


def test_the_default_rule() -> None:
    files = {"m-F16.gguf": 16 * GB, "m-Q8_0.gguf": 8 * GB, "m-Q5_K_M.gguf": 6 * GB, "m-Q2_K.gguf": 3 * GB}
    # Nearest to Q4_K_M (4.85 bits): Q5_K_M (5.69), then Q2_K (3.35), Q8_0, F16.
    assert choose_quant(files, tag=None, free_memory=None).quant == "Q5_K_M"
    assert choose_quant(files, tag=None, free_memory=100 * GB).quant == "Q5_K_M"
    tight = choose_quant(files, tag=None, free_memory=4 * GB)
    assert tight.quant == "Q2_K" and "fits in" in tight.reason
    nothing = choose_quant(files, tag=None, free_memory=GB)
    assert nothing.quant == "Q2_K" and "none fits" in nothing.reason and "the smallest" in nothing.reason
    assert choose_quant({**files, "m-Q4_K_M.gguf": 5 * GB}, tag=None, free_memory=GB).quant == "Q4_K_M"
    assert choose_quant({"config.json": 1}, tag=None, free_memory=None) is None


def test_unsloth_quantizations() -> None:
    files = {"m-UD-Q4_K_XL.gguf": 5 * GB, "m-Q8_0.gguf": 8 * GB, "m-UD-IQ1_S.gguf": GB, "m-Q2_K.gguf": 3 * GB}
    choice = choose_quant(files, tag="ud-q4_k_xl", free_memory=None)
    assert (choice.quant, choice.files) == ("UD-Q4_K_XL", ("m-UD-Q4_K_XL.gguf",))
    assert choice.available == ("Q8_0", "UD-Q4_K_XL", "Q2_K", "UD-IQ1_S")  # by bits, UD- as its base
    # No Q4_K_M: UD-Q4_K_XL (5.0 bits) is the nearest to it, not Q2_K or Q8_0.
    assert choose_quant(files, tag=None, free_memory=None).quant == "UD-Q4_K_XL"
    assert choose_quant(files, tag=None, free_memory=5 * GB).quant == "Q2_K"  # the nearest that fits
    assert choose_quant({**files, "m-Q4_K_M.gguf": 5 * GB}, tag=None, free_memory=None).quant == "Q4_K_M"
    # Same bits, plain first: Q4_K_XL before UD-Q4_K_XL.
    assert choose_quant({**files, "m-Q4_K_XL.gguf": 6 * GB}, tag=None, free_memory=None).quant == "Q4_K_XL"
    with pytest.raises(EntryNotFound, match=r"has no Q4_K_XL GGUF file\. .*Did you mean org/m:UD-Q4_K_XL\?"):
        choose_quant(files, tag="Q4_K_XL", free_memory=None, repo="org/m")
