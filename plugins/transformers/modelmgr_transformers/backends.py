"""The three built-in backends: full precision on the CPU, 16-bit on GPUs, 8-bit weights anywhere."""
from __future__ import annotations

from typing import Any

from modelmgr import Availability, BackendError, LoadOptions, ModelInfo, estimate_memory, free_ram


from .base import CUDA_CONTEXT_BYTES, TransformersBackend, silence_bitsandbytes, torch_dtype
from .requirements import INT8_EXTRA, cuda_status, gpu_free_memory, require


class CpuBackend(TransformersBackend):
    name = "cpu"
    description = "transformers on the CPU, float32 (or bfloat16)"
    # float16 is left out: most CPUs emulate it, slower than float32 and less exact than bfloat16.
    dtypes = ("float32", "bfloat16")

    def model_kwargs(self, info: ModelInfo, options: LoadOptions) -> dict[str, Any]:
        return {"dtype": torch_dtype(self.resolve_dtype(info, options)), "device_map": None}


class CudaBackend(TransformersBackend):
    name = "cuda"
    description = "transformers on NVIDIA GPUs in 16-bit, spread over all of them by accelerate"
    dtypes = ("float16", "bfloat16", "float32")
    requires = ("torch", "transformers", "accelerate")
    runtime_bytes = CUDA_CONTEXT_BYTES

    def available(self) -> Availability:
        return cuda_status()

    def device(self) -> str:
        return "cuda"

    def resolve_dtype(self, info: ModelInfo, options: LoadOptions) -> str:
        if options.dtype == "auto":
            # Keep a bfloat16 checkpoint in bfloat16 (float16 can overflow on its activations);
            # anything else (float32 checkpoints included) halves to float16.
            return "bfloat16" if info.stored_dtype == "bfloat16" else "float16"
        return super().resolve_dtype(info, options)

    def free_memory(self) -> int | None:
        return gpu_free_memory()

    def model_kwargs(self, info: ModelInfo, options: LoadOptions) -> dict[str, Any]:
        import torch

        dtype = self.resolve_dtype(info, options)
        if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            dtype = "float16"  # pre-Ampere GPUs emulate bfloat16 slowly
        return {"dtype": torch_dtype(dtype), "device_map": "auto", **gpu_max_memory(options.max_memory)}


def gpu_max_memory(limit: int | None) -> dict[str, Any]:
    """accelerate's per-GPU max_memory for a total cap, split in proportion to what is free, and
    no CPU spill-over: a model that does not fit on the GPUs should fail, not crawl."""
    import torch

    free = [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]
    total = sum(free) or 1
    budget = min(limit, total) if limit else total
    return {"max_memory": {index: int(budget * share / total) for index, share in enumerate(free)}}


class Int8Backend(TransformersBackend):
    name = "int8"
    description = "transformers with bitsandbytes 8-bit weights: on the GPU when there is one, else the CPU"
    dtypes = ("float16",)
    requires = ("torch", "transformers", "accelerate", "bitsandbytes")

    def available(self) -> Availability:
        needs = require(*self.requires, extra=INT8_EXTRA)
        if not needs:
            return needs
        return Availability(True, f"on {self.device()}")

    def device(self) -> str:
        return "cuda" if cuda_status() else "cpu"

    def resolve_dtype(self, info: ModelInfo, options: LoadOptions) -> str:
        # Linear weights are int8; the rest (embeddings, norms, the output head) and the
        # activations stay in float16, bitsandbytes' native input type on CPU and GPU alike.
        if options.dtype not in ("auto", "float16"):
            source = getattr(options, "dtype_source", "--dtype")  # older cores do not say where it was set
            fix = "drop --dtype" if source == "--dtype" else f"set {source} to auto or float16, or pass --dtype float16"
            raise BackendError(f"the int8 backend keeps its non-8-bit parts in float16, not {options.dtype}: {fix}, or use another --backend.")
        return "int8"

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        self.resolve_dtype(info, options)
        runtime = CUDA_CONTEXT_BYTES if self.device() == "cuda" else self.runtime_bytes
        return estimate_memory(info, dtype="float16", int8=True, context_length=options.context_length, runtime_bytes=runtime).total

    def free_memory(self) -> int | None:
        return gpu_free_memory() if self.device() == "cuda" else free_ram()

    def model_kwargs(self, info: ModelInfo, options: LoadOptions) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        self.resolve_dtype(info, options)
        silence_bitsandbytes()
        placement: dict[str, Any] = {"device_map": "cpu"}
        if self.device() == "cuda":
            placement = {"device_map": "auto", **gpu_max_memory(options.max_memory)}
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "dtype": torch.float16, **placement}

    def loaded_dtype(self, model: Any, info: ModelInfo, options: LoadOptions) -> str:
        return "int8"
