"""modelinfo (config + safetensors headers, estimates) and memory (free RAM), without torch."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from modelmgr.run import memory
from modelmgr.errors import BackendError
from modelmgr.run.modelinfo import (
    DEFAULT_CONTEXT_CAP,
    count_tensors,
    estimate_memory,
    kv_cache_bytes,
    read_model_info,
    read_safetensors_header,
)

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 100,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "dtype": "bfloat16",
}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A real safetensors file: an 8-byte length, the JSON header, then zeroed data."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape) in tensors.items():
        length = sizes[dtype]
        for dim in shape:
            length *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + length]}
        offset += length
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


def llama_tensors(dtype: str = "BF16") -> dict[str, tuple[str, list[int]]]:
    tensors = {"model.embed_tokens.weight": (dtype, [100, 64]), "lm_head.weight": (dtype, [100, 64]), "model.norm.weight": (dtype, [64])}
    for layer in range(2):
        prefix = f"model.layers.{layer}."
        tensors |= {
            prefix + "self_attn.q_proj.weight": (dtype, [64, 64]),
            prefix + "self_attn.k_proj.weight": (dtype, [32, 64]),
            prefix + "self_attn.v_proj.weight": (dtype, [32, 64]),
            prefix + "self_attn.o_proj.weight": (dtype, [64, 64]),
            prefix + "mlp.gate_proj.weight": (dtype, [128, 64]),
            prefix + "mlp.up_proj.weight": (dtype, [128, 64]),
            prefix + "mlp.down_proj.weight": (dtype, [64, 128]),
            prefix + "input_layernorm.weight": (dtype, [64]),
            prefix + "post_attention_layernorm.weight": (dtype, [64]),
        }
    return tensors


LINEAR = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 3 * 128 * 64)
EMBEDDING = 2 * 100 * 64
OTHER = 64 + 2 * 2 * 64


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    write_safetensors(tmp_path / "model.safetensors", llama_tensors())
    (tmp_path / "tokenizer.json").write_text("{}")
    return tmp_path


def test_header_is_read_without_the_tensors(model_dir: Path) -> None:
    header = read_safetensors_header(model_dir / "model.safetensors")
    assert header["lm_head.weight"] == {"dtype": "BF16", "shape": [100, 64], "data_offsets": [12800, 25600]}


def test_counts_split_linear_embedding_and_other(model_dir: Path) -> None:
    info = read_model_info(model_dir)
    assert (info.parameters.linear, info.parameters.embedding, info.parameters.other) == (LINEAR, EMBEDDING, OTHER)
    assert info.parameter_count == LINEAR + EMBEDDING + OTHER
    assert info.parameter_source == "safetensors headers"
    assert (info.architecture, info.model_type, info.stored_dtype, info.context_length) == ("LlamaForCausalLM", "llama", "bfloat16", 512)
    assert (info.num_layers, info.num_kv_heads, info.head_dim) == (2, 2, 16)
    assert info.weight_files == ("model.safetensors",) and info.weight_format == "safetensors"
    assert info.total_size == sum(p.stat().st_size for p in model_dir.iterdir())
    assert not info.has_remote_code and info.quantization is None


def test_sharded_checkpoint_follows_the_index(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    tensors = list(llama_tensors().items())
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", dict(tensors[:10]))
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", dict(tensors[10:]))
    write_safetensors(tmp_path / "consolidated.safetensors", dict(tensors))  # a second copy not to count
    weight_map = {name: "model-00001-of-00002.safetensors" for name, _ in tensors[:10]}
    weight_map |= {name: "model-00002-of-00002.safetensors" for name, _ in tensors[10:]}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    info = read_model_info(tmp_path)
    assert len(info.weight_files) == 2
    assert info.parameter_count == LINEAR + EMBEDDING + OTHER


def test_pickle_only_falls_back_to_the_config(tmp_path: Path) -> None:
    config = dict(LLAMA_CONFIG, auto_map={"AutoModelForCausalLM": "x.Y"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (tmp_path / "training_args.bin").write_bytes(b"\x80\x04")
    info = read_model_info(tmp_path)
    assert info.weight_format == "pickle" and info.weight_files == ("pytorch_model.bin",)
    assert info.parameter_source == "config.json (approximate)"
    # The formula knows the Llama layout exactly, up to the norms.
    assert abs(info.parameter_count - (LINEAR + EMBEDDING + OTHER)) <= 64
    assert info.has_remote_code


def test_file_size_is_the_last_resort(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery", "dtype": "float16"}))
    (tmp_path / "pytorch_model.bin").write_bytes(bytes(2000))
    info = read_model_info(tmp_path)
    assert info.parameter_source == "file size (approximate)" and info.parameter_count == 1000
    assert info.context_length is None and info.default_context() == DEFAULT_CONTEXT_CAP


def test_multimodal_config_uses_text_config(tmp_path: Path) -> None:
    config = {"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "text_config": LLAMA_CONFIG}
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = read_model_info(tmp_path)
    assert (info.context_length, info.num_layers, info.head_dim) == (512, 2, 16)
    assert info.weight_format is None and info.weight_files == ()


@pytest.mark.parametrize(
    "content, message",
    [(b"\x01", "shorter than 8 bytes"), (struct.pack("<Q", 10**12), "implausible"), (struct.pack("<Q", 4) + b"nope", "corrupt")],
)
def test_bad_headers_are_reported(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_CONFIG))
    (tmp_path / "model.safetensors").write_bytes(content)
    with pytest.raises(BackendError, match=message):
        read_model_info(tmp_path)


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no config.json"):
        read_model_info(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(BackendError, match="not a JSON object"):
        read_model_info(tmp_path)


def test_estimates_per_dtype_and_int8(model_dir: Path) -> None:
    info = read_model_info(model_dir)
    total = LINEAR + EMBEDDING + OTHER
    kv16 = 2 * 2 * 2 * 16 * 512 * 2  # k and v, layers, kv heads, head_dim, context, bytes
    assert kv_cache_bytes(info, context_length=512, bytes_per_value=2) == kv16

    f32 = estimate_memory(info, dtype="float32")
    assert (f32.weights, f32.kv_cache, f32.context_length) == (4 * total, 2 * kv16, 512)
    assert f32.overhead == f32.weights // 10 and f32.total == f32.weights + f32.kv_cache + f32.overhead

    bf16 = estimate_memory(info, dtype="bfloat16", context_length=100, runtime_bytes=1000)
    assert (bf16.weights, bf16.kv_cache, bf16.overhead) == (2 * total, kv16 * 100 // 512, 1000 + 2 * total // 10)

    # int8 keeps embeddings and norms in 16 bits: more than half of the 16-bit size, less than all of it.
    int8 = estimate_memory(info, dtype="float16", int8=True)
    assert int8.weights == LINEAR + 2 * (EMBEDDING + OTHER)
    with pytest.raises(BackendError, match="Valid dtypes"):
        estimate_memory(info, dtype="float8")


def test_prequantized_checkpoint_counts_its_size_on_disk(model_dir: Path) -> None:
    (model_dir / "config.json").write_text(json.dumps(dict(LLAMA_CONFIG, quantization_config={"quant_method": "gptq"})))
    info = read_model_info(model_dir)
    assert info.quantization == "gptq"
    assert estimate_memory(info, dtype="float16").weights == info.weights_size


def test_counting_ignores_metadata() -> None:
    counts, stored = count_tensors([{"__metadata__": {"a": "b"}, "x.weight": {"dtype": "F16", "shape": [2, 3]}}])
    assert (counts.total, counts.linear, stored) == (6, 6, "float16")


def test_free_ram_reads_meminfo_and_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    8000000 kB\n")
    assert memory._meminfo_available(meminfo) == 8000000 * 1024
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("max\n")
    assert memory._cgroup_headroom(cgroup) is None
    (cgroup / "memory.max").write_text("1000000\n")
    (cgroup / "memory.current").write_text("400000\n")
    assert memory._cgroup_headroom(cgroup) == 600000

    monkeypatch.setattr(memory, "_meminfo_available", lambda: 5000)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: 3000)
    assert memory.free_ram() == 3000  # the tighter of the two
    assert memory.cap(3000, 100) == 100 and memory.cap(None, 100) == 100 and memory.cap(3000, None) == 3000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_free_ram_and_rss_on_this_machine() -> None:
    assert memory.free_ram() > 0
    assert memory.process_rss() > 0


def test_modelinfo_never_imports_torch(model_dir: Path) -> None:
    import subprocess

    code = f"import sys; from modelmgr.run.modelinfo import read_model_info; import modelmgr.run.plan, modelmgr.run.chat; read_model_info({str(model_dir)!r}); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
