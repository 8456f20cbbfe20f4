from modelmgr.fetch.selection import default_selection, select_files

LLAMA_REPO = [
    ".gitattributes", "README.md", "LICENSE", "config.json", "generation_config.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "onnx/model.onnx", "model.Q4_K_M.gguf", "flax_model.msgpack", "tf_model.h5",
    "original/consolidated.00.pth", "original/tokenizer.model",
]


def test_default_takes_one_copy_of_the_weights_and_everything_a_load_reads():
    chosen = default_selection(LLAMA_REPO)
    assert chosen == sorted([
        "LICENSE", "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    ])


def test_pickle_weights_are_taken_only_when_there_is_no_safetensors_copy():
    repo = ["config.json", "pytorch_model.bin", "tokenizer.json", "model.onnx"]
    assert default_selection(repo) == ["config.json", "pytorch_model.bin", "tokenizer.json"]


def test_unknown_weight_formats_fall_back_to_everything():
    repo = ["README.md", "model.Q4_K_M.gguf", "model.Q8_0.gguf"]
    assert default_selection(repo) == repo


def test_include_restricts_like_hf_download_and_exclude_removes():
    assert select_files(LLAMA_REPO, include=["*.gguf"]) == ["model.Q4_K_M.gguf"]
    assert "LICENSE" not in select_files(LLAMA_REPO, exclude=["LICENSE*"])
    everything = select_files(LLAMA_REPO, all_files=True, exclude=["*.bin"])
    assert "onnx/model.onnx" in everything and "pytorch_model-00001-of-00002.bin" not in everything


def test_remote_code_and_chat_template_folders_are_kept():
    repo = ["config.json", "model.safetensors", "modeling_custom.py", "additional_chat_templates/tool_use.jinja"]
    assert default_selection(repo) == sorted(repo)
