"""The llamacpp backend: a GGUF file on llama.cpp, every layer on the GPU when this build can
offload and the model fits there, else on the CPU with one thread per physical core."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from modelmgr import (
    Availability, Backend, BackendError, Generation, GenerationSettings, LoadedModel, LoadOptions, Message, ModelInfo,
    estimate_memory, free_ram, read_model_info,
)

from .machine import INSTALL, gpu_free_memory, gpu_offload, llama_cpp_installed, physical_cores

# What llama.cpp allocates beside the mapped weights and the KV cache: the compute buffer for a
# 512-token batch and the logits. ~40 MB for a 120M model, ~300 MB for 7B; 10% of the weights
# comes on top in estimate_memory.
RUNTIME_BYTES = 64 * 1024**2
KV_BYTES = 2  # llama.cpp keeps its KV cache in float16


class LlamaCppBackend(Backend):
    name = "llamacpp"
    description = "llama.cpp (llama-cpp-python) for GGUF files: quantized weights, fast on a CPU"
    weight_formats = ("gguf",)
    dtypes = ("auto",)

    def available(self) -> Availability:
        if not llama_cpp_installed():
            return Availability(False, f"llama-cpp-python is not installed: {INSTALL}")
        if gpu_offload():
            return Availability(True, "built with GPU offload: every layer goes to the GPU when the model fits")
        return Availability(True, f"built without GPU support (CPU only, {physical_cores()} threads); for CUDA: "
                                  "CMAKE_ARGS=-DGGML_CUDA=on pip install --force-reinstall --no-cache-dir llama-cpp-python")

    def device(self) -> str:
        return "cuda" if gpu_offload() and gpu_free_memory() is not None else "cpu"

    def resolve_dtype(self, info: ModelInfo, options: LoadOptions) -> str:
        if options.dtype != "auto":
            raise BackendError(f"a GGUF file computes in the quantization it was written in ({info.quantization or 'its own'}), "
                               f"not --dtype {options.dtype}: drop --dtype, or pick another quantization with org/name:QUANT.")
        return info.quantization or "gguf"

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        self.resolve_dtype(info, options)
        # Weights at their size on disk (llama.cpp maps the file), the float16 KV cache for the context.
        return estimate_memory(info, dtype="float16", context_length=options.context_length, runtime_bytes=RUNTIME_BYTES).total

    def free_memory(self) -> int | None:
        return gpu_free_memory() if self.device() == "cuda" else free_ram()

    def load(self, path: Path, options: LoadOptions) -> LoadedModel:
        if not llama_cpp_installed():
            raise BackendError(f"the llamacpp backend is unavailable: llama-cpp-python is not installed: {INSTALL}")
        info = read_model_info(path, quant=options.quant)
        if info.weight_format != "gguf":
            raise BackendError(f"{path} has no GGUF file; the llamacpp backend runs only GGUF models. Use --backend auto.")
        from llama_cpp import Llama

        on_gpu = self.device() == "cuda" and self._fits_gpu(info, options)
        threads = physical_cores()
        model = Llama(
            model_path=str(path / info.weight_files[0]),  # llama.cpp finds the other parts of a split file itself
            n_ctx=info.default_context(options.context_length),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1 if on_gpu else 0,
            verbose=False,
        )
        return LoadedModel(
            model=model, tokenizer=model, backend_name=self.name,
            device="cuda" if on_gpu else f"cpu, {threads} threads", dtype=info.quantization or "gguf",
        )

    def _fits_gpu(self, info: ModelInfo, options: LoadOptions) -> bool:
        free = gpu_free_memory()
        return free is None or self.estimate(info, options) <= free

    def generate(self, loaded: LoadedModel, messages: Sequence[Message], settings: GenerationSettings) -> Generation:
        from .generation import LlamaGeneration

        return LlamaGeneration(loaded.model, messages, settings)
