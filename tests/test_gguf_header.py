"""The GGUF header reader on real files and on hostile ones, and the quantization rule."""
from __future__ import annotations

import shutil
import struct
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
