"""The tiny model builds byte-identically, has the promised shape, and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmgr.testing import build_tiny_model
from modelmgr.testing.tinymodel import EOS, REMOTE_CODE, VOCAB_SIZE


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_builds_are_byte_identical_in_and_across_processes(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    assert contents(again) == contents(tiny_model_dir)
    # A fresh interpreter (through the module's command line) writes the same bytes too.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-m", "modelmgr.testing", "build-tiny", str(tmp_path / "other")],
                   check=True, env=env, capture_output=True)
    assert contents(tmp_path / "other") == contents(tiny_model_dir)


def test_seed_changes_the_weights_and_tokenizer(tiny_model_dir, tmp_path):
    other = contents(build_tiny_model(tmp_path / "seed1", seed=1))
    assert other["model.safetensors"] != contents(tiny_model_dir)["model.safetensors"]


def test_shape_size_and_special_tokens(tiny_model_dir):
    files = contents(tiny_model_dir)
    assert set(files) == {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                          "tokenizer.json", "tokenizer_config.json"}
    assert 550_000 < sum(map(len, files.values())) < 750_000
    config = json.loads(files["config.json"])
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (64, 128, 2)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 4)
    assert config["vocab_size"] == VOCAB_SIZE and config["tie_word_embeddings"] is True
    assert config["max_position_embeddings"] == 512 and config["dtype"] == "float32"
    vocab = json.loads(files["tokenizer.json"])["model"]["vocab"]
    assert len(vocab) == VOCAB_SIZE
    assert json.loads(files["generation_config.json"])["eos_token_id"] == vocab[EOS]


def test_options_change_only_what_they_name(tmp_path):
    plain = contents(build_tiny_model(tmp_path / "plain", with_chat_template=False,
                                      extra_files={"README.md": b"# tiny\n", "sub/x.bin": b"\0"}))
    assert "chat_template.jinja" not in plain
    assert (plain["README.md"], plain["sub/x.bin"]) == (b"# tiny\n", b"\0")
    remote = contents(build_tiny_model(tmp_path / "remote", auto_map=True))
    config = json.loads(remote["config.json"])
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_tiny.TinyForCausalLM"
    assert config["model_type"] == "tiny-remote"
    assert remote["modeling_tiny.py"] == REMOTE_CODE


def test_transformers_loads_it_chats_and_refuses_remote_code(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the water"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    assert tokenizer.decode(prompt["input_ids"][0]) == "<|im_start|>user\nthe water<|im_end|>\n<|im_start|>assistant\n"
    output = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    new_tokens = output[0][prompt["input_ids"].shape[1]:].tolist()
    assert len(new_tokens) >= 1 and len(set(new_tokens)) > 1

    remote = build_tiny_model(tmp_path / "remote", auto_map=True)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(remote, trust_remote_code=False)
