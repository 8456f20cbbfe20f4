"""The seeded tiny Llama as GGUF files, written with the ``gguf`` package's GGUFWriter: tensors,
the tokenizer's vocabulary and merges, and the chat template. No network and no conversion
script; byte-identical on every build.

``convert_llama_to_gguf`` converts any Llama folder whose tokenizer is a byte-level BPE (the
tiny model, the benchmark's 120M model) into one quantization; ``build_tiny_gguf_repo`` writes a
repo folder with several, as GGUF repos on the Hub hold them. numpy, gguf and safetensors are
imported inside the functions, so importing modelmgr.testing stays cheap.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

from modelmgr.testing.tinymodel import tiny_model_files

TINY_GGUF_ID = "modelmgr-test/tiny-llama-GGUF"
TINY_GGUF_QUANTS = ("F16", "Q8_0", "Q4_0")
# The quantizations gguf.quants can write (the K-quants it can only read); llama_ftype numbers.
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9}

_NAMES = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(name: str) -> str:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    prefix, layer, rest = name.split(".", 2)[0], name.split(".")[2], name.split(".", 3)[3]
    if prefix != "model" or not layer.isdigit():
        raise ValueError(f"unexpected Llama tensor {name!r}")
    module, _, kind = rest.rpartition(".")
    return f"blk.{layer}.{_NAMES[module]}.{kind}"


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's rotary layout for Q and K (convert_hf_to_gguf.py's LlamaModel.permute), so the
    GGUF computes what the transformers model does."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _tokenizer(source: Path) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Tokens by id, their types (1 normal, 3 control), merges "a b", and the special ids."""
    data = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    control = set()
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            control.add(added["id"])
    tokens = [""] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    types = [3 if index in control else 1 for index in range(len(tokens))]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in data["model"].get("merges", [])]
    config = json.loads((source / "config.json").read_text())
    specials = {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id") if isinstance(config.get(key), int)}
    return tokens, types, merges, specials


def _chat_template(source: Path) -> str | None:
    jinja = source / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = json.loads((source / "tokenizer_config.json").read_text()).get("chat_template")
    return template if isinstance(template, str) else None


def convert_llama_to_gguf(source: Path | str, dest: Path | str, *, quant: str = "F16", name: str = "tiny-llama") -> Path:
    """Write the Llama model in ``source`` (safetensors, tokenizer.json) as one GGUF file."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize
    from safetensors.numpy import load_file

    quant = quant.upper()
    if quant not in FILE_TYPES:
        raise ValueError(f"cannot write {quant}: gguf.quants writes {', '.join(FILE_TYPES)}")
    source, dest = Path(source), Path(dest)
    config = json.loads((source / "config.json").read_text())
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    hidden = config["hidden_size"]
    tensors: dict[str, Any] = {}
    for file in sorted(source.glob("*.safetensors")):
        tensors.update(load_file(file))

    writer = GGUFWriter(str(dest), "llama")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    rope = config.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    writer.add_file_type(FILE_TYPES[quant])
    tokens, types, merges, specials = _tokenizer(source)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if "bos_token_id" in specials:
        writer.add_bos_token_id(specials["bos_token_id"])
    if "eos_token_id" in specials:
        writer.add_eos_token_id(specials["eos_token_id"])
    if "pad_token_id" in specials:
        writer.add_pad_token_id(specials["pad_token_id"])
    writer.add_add_bos_token(False)  # the chat template writes its own markers
    template = _chat_template(source)
    if template:
        writer.add_chat_template(template)

    qtype = getattr(GGMLQuantizationType, quant)
    for hf_name in sorted(tensors, key=_order):
        array = tensors[hf_name].astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            array = _permute(array, heads)
        elif hf_name.endswith("k_proj.weight"):
            array = _permute(array, kv_heads)
        gguf_name = _gguf_name(hf_name)
        if array.ndim == 1 or quant == "F32":
            writer.add_tensor(gguf_name, array)  # norms stay float32 in every quantization
        elif quant == "F16":
            writer.add_tensor(gguf_name, array.astype(np.float16))
        else:
            writer.add_tensor(gguf_name, quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


def _order(name: str) -> tuple[int, str]:
    """llama.cpp's order: embeddings, the blocks by number, then the output norm."""
    parts = name.split(".")
    if name.startswith("model.embed_tokens"):
        return (-1, name)
    if len(parts) > 2 and parts[2].isdigit():
        return (int(parts[2]), name)
    return (1 << 30, name)


def build_tiny_gguf_repo(dest: Path | str, *, quants: Sequence[str] = TINY_GGUF_QUANTS, seed: int = 0, stem: str = "tiny-llama") -> Path:
    """A GGUF repo folder: ``{stem}-{QUANT}.gguf`` for each of ``quants``, from the seeded tiny Llama."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    source = tiny_model_files(seed)
    for quant in quants:
        convert_llama_to_gguf(source, dest / f"{stem}-{quant.upper()}.gguf", quant=quant, name=stem)
    return dest


_built: dict[tuple[int, tuple[str, ...]], Path] = {}
_lock = threading.Lock()


def tiny_gguf_files(seed: int = 0, quants: Sequence[str] = TINY_GGUF_QUANTS) -> Path:
    """The tiny GGUF repo folder, built once per process (removed at exit); do not modify it."""
    key = (seed, tuple(q.upper() for q in quants))
    with _lock:
        if key not in _built:
            root = Path(tempfile.mkdtemp(prefix="modelmgr-tiny-gguf-"))
            atexit.register(shutil.rmtree, root, ignore_errors=True)
            _built[key] = build_tiny_gguf_repo(root / f"seed-{seed}", quants=key[1], seed=seed)
        return _built[key]
