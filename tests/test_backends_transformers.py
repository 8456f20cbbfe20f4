"""The built-in cpu, cuda and int8 backends with real transformers, torch and bitsandbytes on the
seeded tiny model. Loads are shared per session where a test only reads the model."""
from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

import pytest

import modelmgr
from modelmgr.run.api import GenerationSettings, LoadOptions
from modelmgr.run.plan import plan_load
from modelmgr.run.registry import get_registry
from modelmgr.run.chat import complete
from modelmgr.project.config import load_config
from modelmgr.errors import UnsafeModel
from modelmgr.run.modelinfo import estimate_memory, read_model_info
from modelmgr.testing import TINY_MODEL_ID

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

GREEDY = GenerationSettings(max_new_tokens=24, temperature=0)
HELLO = [{"role": "user", "content": "Where is the river?"}]


def load_with(backend_name: str, path: Path, **options):
    backend = get_registry().get(backend_name)
    return backend, backend.load(path, LoadOptions(**options))


@pytest.fixture(scope="session")
def cpu_model(tiny_model_dir: Path):
    return load_with("cpu", tiny_model_dir)


def plain_transformers_reply(path: Path, messages, max_new_tokens: int) -> str:
    """The recipe from transformers' docs, to hold modelmgr's streaming path against."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)


def test_cpu_greedy_is_deterministic_and_matches_plain_transformers(cpu_model, tiny_model_dir: Path) -> None:
    backend, loaded = cpu_model
    assert (loaded.backend_name, loaded.device, loaded.dtype) == ("cpu", "cpu", "float32")
    first = complete(backend, loaded, HELLO, GREEDY)
    second = complete(backend, loaded, HELLO, GREEDY)
    assert first.text and first.text == second.text
    assert first.completion_tokens == 24 and first.prompt_tokens > 5
    assert first.text == plain_transformers_reply(tiny_model_dir, HELLO, 24)


def test_sampling_is_repeatable_with_a_seed(cpu_model) -> None:
    backend, loaded = cpu_model
    settings = GenerationSettings(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    assert complete(backend, loaded, HELLO, settings).text == complete(backend, loaded, HELLO, settings).text


def test_tokens_stream_as_generated_and_cancel_stops(cpu_model) -> None:
    backend, loaded = cpu_model
    pieces: list[str] = []
    complete(backend, loaded, HELLO, GenerationSettings(max_new_tokens=40, temperature=0), on_text=pieces.append)
    assert len(pieces) > 5  # not one block at the end

    generation = backend.generate(loaded, HELLO, GenerationSettings(max_new_tokens=200, temperature=0))
    for _ in generation:
        generation.cancel()  # as Ctrl-C does: generation stops at the next token
    assert 0 < generation.completion_tokens < 10


def test_a_template_refusing_the_conversation_is_explained(cpu_model) -> None:
    import copy
    import dataclasses

    from modelmgr.errors import BackendError

    backend, loaded = cpu_model
    tokenizer = copy.deepcopy(loaded.tokenizer)
    tokenizer.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}x"
    strict = dataclasses.replace(loaded, tokenizer=tokenizer)
    with pytest.raises(BackendError, match="chat template refused the conversation: System role not supported.*drop --system"):
        complete(backend, strict, [{"role": "system", "content": "s"}, *HELLO], GREEDY)


def test_float32_estimate_matches_the_loaded_weights(cpu_model, tiny_model_dir: Path) -> None:
    _, loaded = cpu_model
    info = read_model_info(tiny_model_dir)
    parameters = sum(p.numel() * p.element_size() for p in loaded.model.parameters())  # not rotary buffers
    assert estimate_memory(info, dtype="float32").weights == parameters


def test_int8_loads_and_generates_on_the_cpu(tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture) -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    import bitsandbytes as bnb

    backend, loaded = load_with("int8", tiny_model_dir)
    assert (loaded.backend_name, loaded.device, loaded.dtype) == ("int8", "cpu", "int8")
    assert any(isinstance(module, bnb.nn.Linear8bitLt) for module in loaded.model.modules())
    with caplog.at_level(logging.WARNING):
        first = complete(backend, loaded, HELLO, GREEDY)
        second = complete(backend, loaded, HELLO, GREEDY)
    assert first.text and first.text == second.text and first.completion_tokens == 24
    assert "MatMul8bitLt" not in caplog.text and "MatMul8bitLt" not in capfd.readouterr().err


def test_builtin_availability_here() -> None:
    registry = get_registry()
    assert registry.get("cpu").available().ok
    cuda = registry.get("cuda").available()
    if not cuda.ok:
        assert cuda.reason.startswith("no CUDA device: ")
    int8 = registry.get("int8")
    if importlib.util.find_spec("bitsandbytes") is not None:
        assert int8.available().ok and int8.device() == ("cuda" if cuda.ok else "cpu")


def test_missing_packages_are_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmgr_transformers import requirements
    from modelmgr_transformers.backends import CudaBackend, Int8Backend

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("bitsandbytes", "torch") else real(name, *a))
    requirements.cuda_status.cache_clear()
    try:
        assert Int8Backend().available().reason == "torch and bitsandbytes are not installed: pip install 'modelmgr[int8]'"
        assert CudaBackend().available().reason == "torch is not installed: pip install 'modelmgr[run]'"
    finally:
        requirements.cuda_status.cache_clear()


def test_cpu_build_of_torch_is_named_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmgr_transformers import requirements

    monkeypatch.setattr(requirements, "torch_version", lambda: "2.13.0+cpu")
    requirements.cuda_status.cache_clear()
    try:
        assert requirements.cuda_status().reason == (
            "no CUDA device: this is the CPU build of torch (2.13.0+cpu); install a CUDA build of torch to use a GPU"
        )
    finally:
        requirements.cuda_status.cache_clear()


def test_pickle_weights_load_only_when_allowed(tiny_model_dir: Path, tmp_path: Path, cpu_model) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin-only"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    config = load_config()
    with pytest.raises(UnsafeModel, match="pickle weights can run code.*--allow-pickle"):
        plan_load(str(folder), config=config, backend="cpu")
    plan = plan_load(str(folder), config=config, backend="cpu", allow_pickle=True)
    loaded = plan.load()
    backend, safetensors_loaded = cpu_model
    assert complete(plan.backend, loaded, HELLO, GREEDY).text == complete(backend, safetensors_loaded, HELLO, GREEDY).text


def test_without_a_chat_template_the_prompt_goes_in_plain(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelmgr.testing import build_tiny_model

    path = build_tiny_model(tmp_path / "no-template", with_chat_template=False)
    backend, loaded = load_with("cpu", path)
    assert not loaded.tokenizer.chat_template
    reply = complete(backend, loaded, [{"role": "user", "content": "The river"}], GREEDY)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    inputs = tokenizer("The river", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    assert reply.text == tokenizer.decode(output[0, inputs["input_ids"].shape[-1]:], skip_special_tokens=True)
    assert reply.prompt_tokens == inputs["input_ids"].shape[-1]


def test_python_api_pulls_then_loads(local_hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    model, tokenizer = modelmgr.load(TINY_MODEL_ID, backend="cpu", dtype="bfloat16")
    assert type(model).__name__ == "LlamaForCausalLM" and str(model.dtype) == "torch.bfloat16"
    assert tokenizer.chat_template
    # Now cached: offline works, without the server.
    local_hub.stop()
    model, _ = modelmgr.load(TINY_MODEL_ID, offline=True)
    assert str(model.device) == "cpu"
