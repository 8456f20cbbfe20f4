"""The seeded tiny GGUF builder: byte-identical builds, and files the gguf package reads as we do."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelmgr.run.ggufheader import read_gguf_header
from modelmgr.testing import TINY_GGUF_QUANTS, build_tiny_gguf_repo

gguf = pytest.importorskip("gguf", reason="the tiny GGUF builder needs the gguf package: pip install 'modelmgr[test]'")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_builds_are_byte_identical(tmp_path: Path, tiny_gguf_dir: Path) -> None:
    again = build_tiny_gguf_repo(tmp_path / "again")
    assert digests(again) == digests(tiny_gguf_dir)
    assert sorted(digests(again)) == sorted(f"tiny-llama-{quant}.gguf" for quant in TINY_GGUF_QUANTS)


@pytest.mark.parametrize("quant", TINY_GGUF_QUANTS)
def test_the_gguf_package_reads_what_our_reader_reads(tiny_gguf_dir: Path, quant: str) -> None:
    path = tiny_gguf_dir / f"tiny-llama-{quant}.gguf"
    reference = gguf.GGUFReader(str(path))
    ours = read_gguf_header(path)
    assert [t.name for t in reference.tensors] == [t.name for t in ours.tensors]
    assert [tuple(int(d) for d in t.shape) for t in reference.tensors] == [t.shape for t in ours.tensors]
    assert ours.quantization == quant
    template = reference.fields["tokenizer.chat_template"]
    assert bytes(template.parts[template.data[0]]).decode() == ours.get("tokenizer.chat_template")
    assert len(reference.fields["tokenizer.ggml.tokens"].data) == ours.get("tokenizer.ggml.tokens") == 1024
    assert len(reference.fields["tokenizer.ggml.merges"].data) == ours.get("tokenizer.ggml.merges") > 500
