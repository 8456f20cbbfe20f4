"""A toy modelmgr backend named ``example``: it "answers" by echoing the last message back
with its words reversed, streamed one word at a time.

It loads no weights and needs no torch, so it runs anywhere in milliseconds, yet it implements
the whole Backend interface the way a real backend must: availability with a reason, a memory
estimate, loading from the snapshot folder modelmgr hands over, and a cancellable stream of
text. Copy this file to start a real backend (llama.cpp, vLLM, an HTTP server, ...).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from modelmgr import Availability, Backend, Generation, GenerationSettings, LoadOptions, LoadedModel, Message, ModelInfo, hookimpl

__version__ = "0.1.0"


class WordTokenizer:
    """A stand-in tokenizer: one token per whitespace-separated word."""

    def encode(self, text: str) -> list[str]:
        return text.split()


class EchoGeneration(Generation):
    """Yields the reply piece by piece; ``cancel()`` (Ctrl-C in a chat) stops it between pieces."""

    def __init__(self, words: list[str], prompt_tokens: int, max_new_tokens: int):
        self.words = words[:max_new_tokens]
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.cancelled = False

    def __iter__(self) -> Iterator[str]:
        for index, word in enumerate(self.words):
            if self.cancelled:
                return
            self.completion_tokens += 1
            yield word if index == 0 else " " + word

    def cancel(self) -> None:
        self.cancelled = True


class ExampleBackend(Backend):
    name = "example"
    description = "toy backend from the modelmgr-example plugin: echoes the prompt reversed (no torch)"
    dtypes = ("float32", "bfloat16", "float16")  # it computes nothing, so any dtype will do

    def available(self) -> Availability:
        # A real backend checks its libraries and hardware here, cheaply (find_spec, not import),
        # and says how to fix what is missing: "llama-cpp-python is not installed: pip install ...".
        return Availability(True, "always: it needs nothing")

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        # It keeps only config.json in memory. A real backend computes weights + KV cache +
        # overhead; modelmgr.run.modelinfo.estimate_memory does that for the usual layouts.
        return 1024 * 1024

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        # `path` is a snapshot folder in the huggingface_hub cache (or the user's local folder).
        # Read it; never fetch anything: modelmgr has already pulled what is needed.
        config = json.loads((Path(path) / "config.json").read_text())
        return LoadedModel(
            model={"architecture": (config.get("architectures") or ["unknown"])[0], "path": str(path)},
            tokenizer=WordTokenizer(),
            backend_name=self.name,
            device="cpu",
            dtype="float32" if options.dtype == "auto" else options.dtype,
        )

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        tokenizer: WordTokenizer = loaded.tokenizer
        prompt_tokens = sum(len(tokenizer.encode(message["content"])) for message in messages)
        last = messages[-1]["content"] if messages else ""
        return EchoGeneration(list(reversed(tokenizer.encode(last))), prompt_tokens, settings.max_new_tokens)


@hookimpl
def register_backends(register):
    register(ExampleBackend())
