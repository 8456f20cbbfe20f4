"""The backend registry, selection by availability and memory fit, and the load safety checks.

Selection runs against fake backends (exact numbers, no torch); the built-in backends' own
behaviour is in test_backends_transformers.py.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from modelmgr import hookimpl
from modelmgr.run.api import Availability, Backend, LoadOptions
from modelmgr.run.choose import select_backend
from modelmgr.run.plan import check_load_safety
from modelmgr.run.registry import Registry, backend_statuses, get_registry
from modelmgr.errors import BackendError, UnsafeModel
from modelmgr.run.modelinfo import ModelInfo, read_model_info
from modelmgr.run.plugins import get_plugin_manager

GB = 10**9
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeBackend(Backend):
    """Needs ``needed`` bytes in float32 and half that in 16 bits; ``free`` is what it sees."""

    def __init__(self, name: str, *, needed: int = GB, free: int | None = 10 * GB, ok: bool = True,
                 reason: str = "", device: str = "cpu", dtypes: tuple[str, ...] = ("float32", "bfloat16")):
        self.name, self.needed, self.free, self.ok, self.reason, self._device = name, needed, free, ok, reason, device
        self.dtypes = dtypes
        self.description = f"fake {name}"

    def available(self) -> Availability:
        return Availability(self.ok, self.reason)

    def device(self) -> str:
        return self._device

    def estimate(self, info: ModelInfo, options: LoadOptions) -> int:
        return self.needed if self.resolve_dtype(info, options) == "float32" else self.needed // 2

    def free_memory(self) -> int | None:
        return self.free


def registry(*backends: Backend) -> Registry:
    return Registry({b.name: b for b in backends}, {b.name: "tests" for b in backends})


@pytest.fixture
def info(tmp_path: Path) -> ModelInfo:
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 512}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return read_model_info(tmp_path)


@contextmanager
def plugin(module: object, name: str) -> Iterator[None]:
    """Register a plugin object for the duration of a test, and always unregister it."""
    manager = get_plugin_manager()
    manager.register(module, name=name)
    try:
        yield
    finally:
        manager.unregister(name=name)


# --------------------------------------------------------------------------- the registry


def test_registry_holds_the_builtins() -> None:
    found = get_registry()
    assert {"cpu", "cuda", "int8"} <= set(found.names())
    assert found.plugins["cpu"] == "transformers" and not found.problems


def test_duplicates_bad_names_and_raising_plugins_are_reported_not_fatal() -> None:
    class Duplicate:
        @hookimpl
        def register_backends(self, register):
            register(FakeBackend("cpu"))
            register(FakeBackend("Bad Name"))
            register(FakeBackend("auto"))
            register(FakeBackend("fresh"))

    class Raising:
        @hookimpl
        def register_backends(self, register):
            raise RuntimeError("boom")

    with plugin(Duplicate(), "dupe-plugin"), plugin(Raising(), "raising-plugin"):
        found = get_registry()
        statuses = {s.name: s for s in backend_statuses(found)}
    assert "fresh" in found.names() and found.plugins["cpu"] == "transformers"
    problems = "\n".join(found.problems)
    assert "plugin 'dupe-plugin' registered backend 'cpu', which plugin 'transformers' already registered" in problems
    assert "invalid name 'Bad Name'" in problems and "invalid name 'auto'" in problems
    assert "plugin 'raising-plugin' failed in register_backends: RuntimeError: boom" in problems
    assert statuses["fresh"].source == "registered in code" and statuses["cpu"].source == "built-in"
    assert "fresh" not in get_registry().names()  # unregistered again


# --------------------------------------------------------------------------- selection


def test_auto_prefers_cuda_then_int8_on_a_gpu_then_cpu(info: ModelInfo) -> None:
    # Fake 16-bit needs are half of `needed`.
    cuda = FakeBackend("cuda", device="cuda", dtypes=("float16",), free=GB // 4)
    int8 = FakeBackend("int8", device="cuda", dtypes=("float16",), needed=GB, free=GB // 4)
    cpu = FakeBackend("cpu")
    assert select_backend(info, LoadOptions(), registry=registry(cpu, int8, cuda)).backend is cpu
    int8.needed = GB // 2
    assert select_backend(info, LoadOptions(), registry=registry(cpu, int8, cuda)).backend is int8
    cuda.free = GB
    chosen = select_backend(info, LoadOptions(), registry=registry(cpu, int8, cuda))
    assert chosen.backend is cuda and chosen.dtype == "float16" and chosen.fit.needed == GB // 2


def test_auto_never_picks_int8_on_a_cpu(info: ModelInfo) -> None:
    int8 = FakeBackend("int8", device="cpu", needed=1)
    cpu = FakeBackend("cpu", needed=2 * GB, free=GB)
    with pytest.raises(BackendError) as error:
        select_backend(info, LoadOptions(), registry=registry(cpu, int8))
    # ...but offers it, and cpu in bfloat16, with their sizes.
    assert str(error.value) == (
        f"{info.path} does not fit: needs 2.0 GB on cpu (float32), 1.0 GB free. "
        "Try --backend int8 (1 B) or --backend cpu --dtype bfloat16 (1.0 GB)."
    )
    assert select_backend(info, LoadOptions(), "int8", registry=registry(cpu, int8)).backend is int8


def test_refusal_gives_every_number(info: ModelInfo) -> None:
    cuda = FakeBackend("cuda", ok=False, reason="no CUDA device: torch is a CPU build; install another")
    cpu = FakeBackend("cpu", needed=14_200_000_000, free=3_900_000_000)
    with pytest.raises(BackendError) as error:
        select_backend(info, LoadOptions(), registry=registry(cpu, cuda), label="org/big")
    assert str(error.value) == (
        "org/big does not fit: cuda unavailable (no CUDA device: torch is a CPU build); "
        "needs 14.2 GB on cpu (float32), 3.9 GB free. Free some memory or pick a smaller model."
    )


def test_max_memory_caps_what_counts_as_free(info: ModelInfo) -> None:
    cpu = FakeBackend("cpu", needed=GB, free=10 * GB)
    fit = select_backend(info, LoadOptions(max_memory=2 * GB), registry=registry(cpu)).fit
    assert (fit.free, fit.capped) == (2 * GB, True)
    with pytest.raises(BackendError, match=r"needs 1.0 GB on cpu \(float32\), 1.0 kB allowed by --max-memory\. Raise --max-memory"):
        select_backend(info, LoadOptions(max_memory=1000, dtype="float32"), registry=registry(cpu))


def test_unknown_free_memory_does_not_block(info: ModelInfo) -> None:
    cpu = FakeBackend("cpu", free=None)
    assert select_backend(info, LoadOptions(), registry=registry(cpu)).fit.fits


def test_unknown_backend_lists_the_valid_ones(info: ModelInfo) -> None:
    with pytest.raises(BackendError, match=r"^Unknown backend 'x'\. Valid backends: cpu, cuda, int8\.$"):
        select_backend(info, LoadOptions(), "x", registry=registry(FakeBackend("int8"), FakeBackend("cpu"), FakeBackend("cuda")))


def test_unavailable_backend_says_why(info: ModelInfo) -> None:
    cuda = FakeBackend("cuda", ok=False, reason="no CUDA device: torch.cuda.is_available() is False")
    with pytest.raises(BackendError, match=r"the cuda backend cannot load .* here: no CUDA device: torch.cuda.is_available\(\) is False"):
        select_backend(info, LoadOptions(), "cuda", registry=registry(cuda))


def test_unsupported_dtype(info: ModelInfo) -> None:
    with pytest.raises(BackendError, match="the cpu backend computes in float32 or bfloat16, not float16"):
        select_backend(info, LoadOptions(dtype="float16"), "cpu", registry=registry(FakeBackend("cpu")))
    with pytest.raises(BackendError, match=r"Unknown dtype 'int4'\. Valid dtypes: auto, float32, bfloat16, float16\."):
        LoadOptions(dtype="int4")


def test_no_builtin_backend_for_auto(info: ModelInfo) -> None:
    with pytest.raises(BackendError, match="no built-in backend .* Installed backends: example"):
        select_backend(info, LoadOptions(), registry=registry(FakeBackend("example")))


def test_select_backend_hook_chooses_for_auto(info: ModelInfo) -> None:
    class Chooser:
        choice: str | None = "mine"

        @hookimpl
        def select_backend(self, info, options, backends):
            assert isinstance(info, ModelInfo) and isinstance(options, LoadOptions)
            return self.choice if self.choice in backends or self.choice == "ghost" else None

    mine, cpu = FakeBackend("mine"), FakeBackend("cpu")
    chooser = Chooser()
    with plugin(chooser, "chooser"):
        assert select_backend(info, LoadOptions(), registry=registry(cpu, mine)).backend is mine
        assert select_backend(info, LoadOptions(), "cpu", registry=registry(cpu, mine)).backend is cpu  # a named backend wins
        mine.free = 1  # the hook's choice is still checked
        with pytest.raises(BackendError, match="does not fit"):
            select_backend(info, LoadOptions(), registry=registry(cpu, mine))
        chooser.choice = "ghost"
        with pytest.raises(BackendError, match="select_backend hook chose 'ghost'"):
            select_backend(info, LoadOptions(), registry=registry(cpu, mine))
        chooser.choice = None  # no opinion: the built-in rule
        assert select_backend(info, LoadOptions(), registry=registry(cpu, mine)).backend is cpu


# --------------------------------------------------------------------------- safety


def remote_code_info(tmp_path: Path, *, pickle: bool = False) -> ModelInfo:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.M"}}))
    if pickle:
        (tmp_path / "pytorch_model.bin").write_bytes(b"\x80")
    return read_model_info(tmp_path)


def test_remote_code_needs_consent_and_a_pinned_commit(tmp_path: Path) -> None:
    info = remote_code_info(tmp_path)
    with pytest.raises(UnsafeModel, match=rf"org/name ships its own Python code .* pass --trust-remote-code and pin the commit you reviewed: org/name@{COMMIT}\.$"):
        check_load_safety(info, LoadOptions(), label="org/name", repo_id="org/name", commit=COMMIT)
    with pytest.raises(UnsafeModel, match=rf"branch or tag that can change\. Pin the commit: org/name@{COMMIT} --trust-remote-code\.$"):
        check_load_safety(info, LoadOptions(trust_remote_code=True), label="org/name@main", repo_id="org/name", commit=COMMIT)
    check_load_safety(info, LoadOptions(trust_remote_code=True, commit=COMMIT), label="x", repo_id="org/name", commit=COMMIT)
    # A local folder has no commit to pin: the code is already the user's own copy.
    check_load_safety(info, LoadOptions(trust_remote_code=True), label="./m", repo_id=None, commit=None)


def test_pickle_weights_need_consent(tmp_path: Path) -> None:
    info = remote_code_info(tmp_path, pickle=True)
    options = LoadOptions(trust_remote_code=True)
    with pytest.raises(UnsafeModel, match=r"only pickle weights \(pytorch_model.bin\); pickle weights can run code when loaded\. Pass --allow-pickle"):
        check_load_safety(info, options, label="./m", repo_id=None, commit=None)
    check_load_safety(info, LoadOptions(trust_remote_code=True, allow_pickle=True), label="./m", repo_id=None, commit=None)
