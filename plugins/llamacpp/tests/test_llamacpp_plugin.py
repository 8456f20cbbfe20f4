"""The llamacpp plugin as users meet it: discovered through its entry point, chosen by
`--backend auto` for GGUF, running real llama.cpp on the seeded tiny GGUF from a loopback Hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
from click.testing import CliRunner

import modelmgr
from modelmgr.cli import cli
from modelmgr.testing import TINY_GGUF_ID, TINY_MODEL_ID

NOT_INSTALLED = "modelmgr-llamacpp is not installed: make test (or pip install 'modelmgr[gguf]' -e plugins/llamacpp)"
# CI builds llama-cpp-python (make test): there a missing plugin is a failure, not a skip.
if not os.environ.get("CI"):
    pytest.importorskip("llama_cpp", reason=NOT_INSTALLED)
    pytest.importorskip("modelmgr_llamacpp", reason=NOT_INSTALLED)
    pytestmark = pytest.mark.skipif(not any(ep.name == "llamacpp" for ep in metadata.entry_points(group="modelmgr")), reason=NOT_INSTALLED)

from modelmgr_llamacpp.backend import LlamaCppBackend  # noqa: E402
from modelmgr_llamacpp.generation import _is_end  # noqa: E402

PROMPT = "The river is green"


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_discovered_and_listed() -> None:
    from modelmgr.run.plugins import plugin_infos
    from modelmgr.run.registry import get_registry

    info = next(info for info in plugin_infos() if info.name == "llamacpp")
    assert (info.distribution, info.error) == ("modelmgr-llamacpp", None)
    assert isinstance(get_registry().get("llamacpp"), LlamaCppBackend)
    rows = {row["name"]: row for row in json.loads(invoke("backends", "--json").stdout)}
    assert rows["llamacpp"]["available"] is True and rows["llamacpp"]["source"] == "modelmgr-llamacpp 0.1.0"
    assert rows["llamacpp"]["device"] == "cpu" and "built without GPU support" in rows["llamacpp"]["reason"]


def test_run_a_tag_streams_a_reply_on_llamacpp(gguf_hub) -> None:
    result = invoke("run", f"{TINY_GGUF_ID}:Q4_0", PROMPT, "--endpoint", gguf_hub.url, "--max-new-tokens", "16", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    assert f"Loading {TINY_GGUF_ID}:Q4_0 on llamacpp (Q4_0)" in result.stderr
    assert "tokens/s on llamacpp (cpu, " in result.stderr and " threads, Q4_0)." in result.stderr
    fetched = sorted(r.path.rsplit("/", 1)[-1] for r in gguf_hub.requests if "/resolve/" in r.path and r.method == "GET")
    assert fetched == ["tiny-llama-Q4_0.gguf"]

    # Seeded: an unseeded run may sample <|im_end|> early (1 seed in 200 stops after 3 tokens).
    data = json.loads(invoke("run", f"{TINY_GGUF_ID}:Q4_0", PROMPT, "--offline", "--json", "--max-new-tokens", "16", "--seed", "1").stdout)
    assert (data["backend"], data["format"], data["quantization"], data["dtype"]) == ("llamacpp", "gguf", "Q4_0", "Q4_0")
    assert data["device"].startswith("cpu") and data["completion_tokens"] == 16 and data["tokens_per_second"] > 0
    assert data["prompt_tokens"] == 21  # the ChatML template's markers around the prompt


def test_greedy_llamacpp_matches_transformers(local_hub, gguf_hub) -> None:
    """The tiny GGUF is the tiny safetensors model converted: greedy F16 on llama.cpp says what
    float32 transformers says (and so the converter and the chat template are right)."""
    local_hub.add_repos_from(gguf_hub)
    common = ("--endpoint", local_hub.url, "--json", "--temperature", "0", "--max-new-tokens", "12")
    ours = json.loads(invoke("run", f"{TINY_GGUF_ID}:F16", PROMPT, *common).stdout)
    theirs = json.loads(invoke("run", TINY_MODEL_ID, PROMPT, *common).stdout)
    assert (ours["backend"], theirs["backend"]) == ("llamacpp", "cpu")  # --backend auto, by format
    assert ours["reply"] == theirs["reply"] and ours["prompt_tokens"] == theirs["prompt_tokens"]


def test_sampling_settings(tiny_gguf_dir) -> None:
    from modelmgr.run.chat import complete

    backend = LlamaCppBackend()
    loaded = backend.load(tiny_gguf_dir, modelmgr.LoadOptions(quant="Q8_0"))
    messages = [{"role": "user", "content": PROMPT}]

    def reply(**settings):
        return complete(backend, loaded, messages, modelmgr.GenerationSettings(**settings))

    seeded = reply(temperature=0.9, seed=7, max_new_tokens=24)
    assert seeded.text == reply(temperature=0.9, seed=7, max_new_tokens=24).text
    assert seeded.text != reply(temperature=0.9, seed=8, max_new_tokens=24).text
    assert reply(temperature=0.9, top_p=0.5, seed=7, max_new_tokens=24).completion_tokens == 24
    assert reply(temperature=0, max_new_tokens=5).completion_tokens == 5
    model = loaded.model
    assert _is_end(model, model.token_eos()) and not _is_end(model, 300)  # <|im_end|> ends a turn

    # Cancelling at the first piece stops there. Seeded, and counted as a bound: a first token that
    # is a lone UTF-8 byte yields nothing, so up to 4 tokens (one character's bytes) may come
    # before the first piece (4 unseeded runs in 200 counted 2).
    generation = backend.generate(loaded, messages, modelmgr.GenerationSettings(max_new_tokens=50, seed=7))
    pieces = 0
    for _ in generation:
        pieces += 1
        generation.cancel()
    # (A second piece only when the cancel cut a character short: its bytes flushed as U+FFFD.)
    assert pieces in (1, 2) and 1 <= generation.completion_tokens <= 4


def test_a_two_turn_chat_uses_the_template(tiny_gguf_dir) -> None:
    from modelmgr.run.chat import ChatSession

    backend = LlamaCppBackend()
    loaded = backend.load(tiny_gguf_dir, modelmgr.LoadOptions())
    session = ChatSession(backend, loaded, modelmgr.GenerationSettings(temperature=0, max_new_tokens=8), system="Be brief.")
    first = session.send("hello")
    second = session.send("and again")
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens  # the history went in


def test_modelmgr_load_returns_the_llama(gguf_hub) -> None:
    from llama_cpp import Llama

    model, tokenizer = modelmgr.load(f"{TINY_GGUF_ID}:q8_0", endpoints=[gguf_hub.url])
    assert isinstance(model, Llama) and tokenizer is model
    assert model.metadata["general.file_type"] == "7"  # Q8_0


def test_estimate_and_choice(gguf_hub) -> None:
    shown = json.loads(invoke("show", f"{TINY_GGUF_ID}:Q4_0", "--endpoint", gguf_hub.url, "--json").stdout)
    fits = {fit["backend"]: fit for fit in shown["backends"]}
    assert fits["llamacpp"]["fits"] and fits["llamacpp"]["dtype"] == "Q4_0"
    # The mapped file, a float16 KV cache for the model's 512 tokens (2 layers x 4 heads x 16), runtime.
    kv = 2 * 2 * 4 * 16 * 512 * 2
    weights = 114560
    assert fits["llamacpp"]["needed"] == weights + kv + 64 * 1024**2 + weights // 10
    assert not fits["cpu"]["available"] and "not gguf" in fits["cpu"]["reason"]


def test_dtype_is_refused_for_gguf(gguf_hub) -> None:
    result = subprocess.run([sys.executable, "-m", "modelmgr", "run", f"{TINY_GGUF_ID}:Q4_0", "hi", "--dtype", "float32",
                             "--endpoint", gguf_hub.url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: a GGUF file computes in the quantization it was written in (Q4_0), not --dtype float32: "
        "drop --dtype, or pick another quantization with org/name:QUANT."
    )


def test_load_plugins_disables_it(gguf_hub) -> None:
    env = {**os.environ, "MODELMGR_LOAD_PLUGINS": "transformers"}
    listed = subprocess.run([sys.executable, "-m", "modelmgr", "backends", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert [row["name"] for row in json.loads(listed.stdout)] == ["cpu", "cuda", "int8"]
    ran = subprocess.run([sys.executable, "-m", "modelmgr", "run", f"{TINY_GGUF_ID}:Q4_0", "hi", "--endpoint", gguf_hub.url],
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1] == (
        f"Error: {TINY_GGUF_ID}:Q4_0 has gguf weights, and no installed backend loads them (installed: cpu, cuda, int8). "
        "For GGUF files, install the llama.cpp backend: pip install 'modelmgr[gguf]' plugins/llamacpp (the modelmgr-llamacpp plugin)."
    )
