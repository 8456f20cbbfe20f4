"""The types a backend plugin implements and receives: the Backend base class, load options,
a loaded model, generation settings and the generation being streamed.

This is what hookspecs and third-party plugins see (through the ``modelmgr`` facade); it imports
nothing of the registry or the choice among backends.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from modelmgr.errors import BackendError
from modelmgr.run.memory import free_ram
from modelmgr.run.modelinfo import ModelInfo, estimate_memory

DTYPES = ("auto", "float32", "bfloat16", "float16")
AUTO = "auto"
Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": text}


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""  # why not, and how to fix it; may also say something useful when ok

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    dtype: str = AUTO
    max_memory: int | None = None  # bytes; caps the free memory a backend may plan with
    context_length: int | None = None  # tokens the KV cache is sized for; None: the model's, capped
    trust_remote_code: bool = False
    allow_pickle: bool = False
    commit: str | None = None  # the 40-hex commit the user pinned; None for a branch, a tag or a local folder
    quant: str | None = None  # the GGUF quantization the reference names (org/name:Q4_K_M); None: the folder's only or default one
    # Generations the caller means to run at once on this model (a server's clients); a backend
    # that can batch them prepares for up to this many and says how many in LoadedModel.max_batch.
    max_batch: int = 1
    # Where ``dtype`` was set, so an error can name the setting to change: "--dtype", or a config key.
    dtype_source: str = "--dtype"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise BackendError(f"Unknown dtype {self.dtype!r}. Valid dtypes: {', '.join(DTYPES)}.")


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    backend_name: str
    device: str
    dtype: str
    load_seconds: float = 0.0
    # How many generate() calls may be in progress at once on this model, from any threads; a
    # server queues the rest. 1 (the default): one at a time.
    max_batch: int = 1


@dataclass(frozen=True, kw_only=True)
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy: the same prompt always gets the same reply
    top_p: float | None = None  # None: the model's own generation_config decides
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Generation:
    """A reply being generated. Iterating yields text pieces as the model produces them.

    ``prompt_tokens`` is known from the start; ``completion_tokens`` once iteration ends.
    ``cancel()`` stops generation early (Ctrl-C) and may be called from the consuming thread.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __iter__(self) -> Iterator[str]:  # pragma: no cover - the interface
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop generating; the default has nothing running in the background to stop."""


class Backend:
    """Base class for backends. Subclasses set ``name`` and ``description`` and implement
    ``load`` and ``generate``; the defaults of the rest suit a backend that runs in RAM."""

    name: str = ""
    description: str = ""
    dtypes: tuple[str, ...] = ("float32",)  # compute dtypes it accepts; the first is its default
    # ModelInfo.weight_format values it loads; automatic choice only offers it models in these.
    # None: any (a backend that reads no weights, like the example's echo).
    weight_formats: tuple[str, ...] | None = ("safetensors", "pickle")

    def available(self) -> Availability:
        """Whether this backend can run here. Must be cheap: `modelmgr backends` asks every one."""
        return Availability(True)

    def device(self) -> str:
        """Where it would put the model here: "cpu" or "cuda" (auto selection asks)."""
        return "cpu"

    def resolve_dtype(self, info: ModelInfo, options: LoadOptions) -> str:
        """The dtype this backend will compute in, given the model and the options."""
        if options.dtype == AUTO:
            return self.dtypes[0]
        if options.dtype not in self.dtypes:
            raise BackendError(
                f"the {self.name} backend computes in {' or '.join(self.dtypes)}, not {options.dtype}. "
                f"Use --dtype {self.dtypes[0]} or another --backend."
            )
        return options.dtype

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        """Bytes this backend needs to load ``info`` and generate with it."""
        return estimate_memory(info, dtype=self.resolve_dtype(info, options), context_length=options.context_length).total

    def runs_natively(self, info: ModelInfo) -> bool:
        """Whether it can load a model whose config.json has an auto_map without running the
        repository's code (transformers implements its model_type). False: such a model needs
        --trust-remote-code."""
        return False

    def free_memory(self) -> int | None:
        """Bytes of the memory this backend would use that are free now; None if unknown."""
        return free_ram()

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        raise NotImplementedError(f"backend {self.name!r} does not implement load()")

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        """Start a reply to ``messages`` (apply the chat template if the model has one)."""
        raise NotImplementedError(f"backend {self.name!r} does not implement generate()")

    def generate_text(self, loaded: LoadedModel, prompt: str, settings: GenerationSettings) -> Generation:
        """Continue ``prompt`` as raw text, without a chat template (the server's /v1/completions).
        The default sends it as one user turn, for backends that only chat."""
        return self.generate(loaded, [{"role": "user", "content": prompt}], settings)

    def unload(self, loaded: LoadedModel) -> None:
        """Release what ``load`` started (threads, device memory) before ``loaded`` is dropped.
        The default has nothing to release: dropping the last reference frees the model."""
