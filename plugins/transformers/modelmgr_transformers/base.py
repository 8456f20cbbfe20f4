"""What the cpu, cuda and int8 backends share: a safe, quiet from_pretrained and streaming."""
from __future__ import annotations

import contextlib
import logging
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

from modelmgr import Availability, Backend, BackendError, Generation, GenerationSettings, LoadOptions, LoadedModel, Message, ModelInfo, estimate_memory, read_model_info


from .requirements import require

# Resident cost of torch + transformers in a fresh process, measured at ~350 MB on Linux x86-64
# with torch 2.13 (CPU) and transformers 5.24; counted because `run` checks the fit before
# importing either.
TORCH_RUNTIME_BYTES = 400 * 1024**2
# A CUDA context takes 300-900 MB of each GPU's memory before the first weight arrives.
CUDA_CONTEXT_BYTES = 512 * 1024**2

# model -> its BatchEngine, for models loaded to serve several generations at once. Weak, so a
# model dropped without unload() is not kept alive by this table (its engine thread still is).
_ENGINES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


class _DropMessages(logging.Filter):
    """Drops log records that start with any of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_bitsandbytes() -> None:
    """bitsandbytes 0.50 logs a cast warning on every 8-bit matmul whose input is not float16,
    and, on CPUs with AVX512-BF16, a note about an optional 4-bit kernel package on import.
    Neither is actionable for an 8-bit chat; both would bury the reply. Idempotent."""
    for name, prefix in (
        ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast"),
        ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefix))


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" progress bar: the caller prints its own one-line status."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def release_freed_memory() -> None:
    """Hand the heap that loading freed back to the OS. Converting or quantizing weights frees
    staging copies that glibc keeps in its arenas: after an 8-bit load on a CPU that is more than
    the model itself, and it would otherwise stay resident. A no-op off glibc."""
    import ctypes

    # No gc.collect(): it costs ~0.2 s after a transformers load, and the staging copies are
    # freed by reference counting already.
    try:
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols: libc on Linux
    except (OSError, AttributeError):  # musl, macOS, Windows: no malloc_trim
        pass


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class TransformersBackend(Backend):
    """A backend over AutoModelForCausalLM. Subclasses say where the model goes and in what dtype
    through ``model_kwargs``; loading, safety and streaming are the same for all three."""

    requires: tuple[str, ...] = ("torch", "transformers")
    runtime_bytes = TORCH_RUNTIME_BYTES

    def available(self) -> Availability:
        return require(*self.requires)

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        dtype = self.resolve_dtype(info, options)
        return estimate_memory(info, dtype=dtype, context_length=options.context_length, runtime_bytes=self.runtime_bytes).total

    def runs_natively(self, info: ModelInfo) -> bool:
        """transformers has its own class for this model_type (Phi-3, Qwen2...): with
        trust_remote_code=False, from_pretrained uses it and imports nothing the repo ships."""
        if not info.model_type or not self.available():
            return False
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return info.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    def model_kwargs(self, info: ModelInfo, options: LoadOptions) -> dict[str, Any]:
        """from_pretrained arguments that place the model: dtype, device_map, quantization."""
        raise NotImplementedError

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        availability = self.available()
        if not availability:
            raise BackendError(f"the {self.name} backend is unavailable: {availability.reason}")
        info = read_model_info(path)
        if not info.weight_files:
            raise BackendError(f"{path} has no weights (no .safetensors or .bin files). Pull the model again without --include filters.")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        common = {
            # Only the snapshot: no network, and no fetching of code an auto_map points at in
            # another repository, at a revision nobody pinned.
            "local_files_only": True,
            "trust_remote_code": options.trust_remote_code,
        }
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
            model = AutoModelForCausalLM.from_pretrained(
                path,
                # None lets transformers fall back to .bin files; only after the user allowed pickle.
                use_safetensors=None if options.allow_pickle else True,
                **common,
                **self.model_kwargs(info, options),
            )
        model.eval()
        release_freed_memory()
        max_batch = 1
        if options.max_batch > 1:
            from .batching import BatchEngine, can_batch

            if can_batch(model):
                _ENGINES[model] = BatchEngine(model, tokenizer, options.max_batch)
                max_batch = options.max_batch
        return LoadedModel(
            model=model,
            tokenizer=tokenizer,
            backend_name=self.name,
            device=describe_device(model),
            dtype=self.loaded_dtype(model, info, options),
            max_batch=max_batch,
        )

    def loaded_dtype(self, model: Any, info: ModelInfo, options: LoadOptions) -> str:
        return str(model.dtype).removeprefix("torch.")

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        from .streaming import TransformersGeneration

        engine = _ENGINES.get(loaded.model)
        if engine is not None:
            return engine.generation(messages, settings)
        return TransformersGeneration(loaded.model, loaded.tokenizer, messages, settings)

    def generate_text(self, loaded: LoadedModel, prompt: str, settings: GenerationSettings) -> Generation:
        from .streaming import TransformersGeneration

        engine = _ENGINES.get(loaded.model)
        if engine is not None:
            return engine.generation(None, settings, text=prompt)
        return TransformersGeneration(loaded.model, loaded.tokenizer, [], settings, text=prompt)

    def unload(self, loaded: LoadedModel) -> None:
        engine = _ENGINES.pop(loaded.model, None)
        if engine is not None:
            engine.close()


def describe_device(model: Any) -> str:
    """"cpu", "cuda:0", or "cuda:0,1" for a model that accelerate spread over several GPUs."""
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and device_map:
        places = []
        for place in device_map.values():
            name = f"cuda:{place}" if isinstance(place, int) else str(place)
            if name not in places:
                places.append(name)
        if len(places) > 1 and all(p.startswith("cuda:") for p in places):
            return "cuda:" + ",".join(p.split(":", 1)[1] for p in places)
        return "+".join(places)
    return str(model.device)
