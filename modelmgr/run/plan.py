"""From a reference to a loaded model: resolve it to a snapshot (pulling when needed), read it,
check it is safe to load, choose the backend, load, and record the use."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from modelmgr.errors import BackendError, ModelmgrError, UnsafeModel
from modelmgr.project.refs import ModelRef, is_commit, parse_ref
from modelmgr.run.api import AUTO, Backend, LoadedModel, LoadOptions
from modelmgr.run.choose import Selection, select_backend
from modelmgr.run.modelinfo import ModelInfo, read_model_info

if TYPE_CHECKING:  # pragma: no cover
    from modelmgr.fetch.events import EventSink
    from modelmgr.project.config import Config, ModelAlias


def check_load_safety(
    info: ModelInfo, options: LoadOptions, *, label: str, repo_id: str | None, commit: str | None, native: bool = False,
) -> str | None:
    """Refuse what would run code from the model's files without the user's informed consent.

    ``native``: the chosen backend implements the model's type itself (transformers knows
    Phi-3's ``model_type``), so a repo that also ships code (``auto_map``) loads without running
    any of it; the returned line says so and how to run the repo's code instead. Lives in the
    core, not in each backend, so a third-party backend cannot forget it.
    """
    notice = None
    if info.has_remote_code:
        pin = f"{repo_id}@{commit}" if repo_id and commit else None
        if not options.trust_remote_code and native:
            how = f"--trust-remote-code with {pin}" if pin else "--trust-remote-code"
            notice = (f"{label} also ships its own Python code (config.json auto_map); loading it with the built-in "
                      f"{info.model_type} implementation, which runs none of it. To run the repo's code instead: {how}.")
        elif not options.trust_remote_code:
            how = f"pass --trust-remote-code and pin the commit you reviewed: {pin}" if pin else "pass --trust-remote-code"
            raise UnsafeModel(
                f"{label} ships its own Python code (config.json has auto_map) and loading it would run that code. "
                f"If you trust it, {how}."
            )
        elif repo_id and options.commit is None:
            # A branch or tag can move to new code after it was reviewed: only a commit is what you read.
            raise UnsafeModel(
                f"refusing to run remote code from {label}, which names a branch or tag that can change. "
                f"Pin the commit: {pin} --trust-remote-code."
            )
    if info.weight_format == "pickle" and not options.allow_pickle:
        shown = ", ".join(info.weight_files[:3]) + (", ..." if len(info.weight_files) > 3 else "")
        raise UnsafeModel(
            f"{label} has only pickle weights ({shown}); pickle weights can run code when loaded. "
            f"Pass --allow-pickle if you trust {label}, or use a model with safetensors weights."
        )
    return notice


@dataclass(frozen=True)
class LoadPlan:
    """Everything decided before the first byte of weights is read."""

    model: "ResolvedModel"
    info: ModelInfo
    options: LoadOptions
    selection: Selection
    notices: tuple[str, ...] = ()  # one line each for the person watching (a native load of a repo with code)

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def path(self) -> Path:
        return self.model.path

    @property
    def commit(self) -> str | None:
        return self.model.commit

    @property
    def backend(self) -> Backend:
        return self.selection.backend

    def load(self) -> LoadedModel:
        backend = self.backend
        started = time.perf_counter()
        try:
            loaded = backend.load(self.path, self.options)
        except ModelmgrError:
            raise
        except MemoryError as exc:
            raise BackendError(f"ran out of memory loading {self.label} on {backend.name}: try --backend int8, a 16-bit --dtype or a smaller model.") from exc
        except Exception as exc:
            raise BackendError(f"the {backend.name} backend failed to load {self.label}: {type(exc).__name__}: {exc}") from exc
        if self.model.repo_id is not None:
            from modelmgr.cache.recency import record_use

            # snapshots/{commit} -> the repo folder -> the cache it lives in: prune evicts by this.
            record_use(self.path.parents[2], self.model.repo_id)
        return replace(loaded, load_seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class ResolvedModel:
    """A reference turned into a folder on disk."""

    label: str  # how messages name it: org/name[@revision] or the folder
    ref: ModelRef
    path: Path
    repo_id: str | None  # None for a local folder
    commit: str | None
    alias: "ModelAlias | None" = None


def resolve_model(text: str | ModelRef, *, config: "Config", on_event: "EventSink | None" = None) -> ResolvedModel:
    """The snapshot folder for a reference: a local folder as is, a Hub model from the cache,
    pulled first when it is not there (offline: only the cache)."""
    if isinstance(text, ModelRef):
        ref, alias = text, None
    else:
        ref = parse_ref(text, aliases=config.aliases())
        name = text.strip().partition("@")[0].partition(":")[0]
        alias = config.models.get(name) if not ref.is_local and "/" not in name else None
    if ref.is_local:
        return ResolvedModel(str(ref.local_path), ref, ref.local_path, None, None)
    from modelmgr.fetch.pull import ensure_snapshot
    from modelmgr.run.memory import free_ram

    snapshot = ensure_snapshot(ref, config, free_memory=free_ram(), **({"on_event": on_event} if on_event else {}))
    return ResolvedModel(str(ref), ref, snapshot.path, snapshot.repo_id, snapshot.commit, alias)


def _pick(explicit: str | None, alias_value: str | None, configured: str | None) -> str:
    for value in (explicit, alias_value, configured):
        if value and value != AUTO:
            return value
    return AUTO


def _dtype_source(explicit: str | None, alias, config: "Config") -> str:
    if explicit and explicit != AUTO:
        return "--dtype"
    if alias is not None and alias.dtype and alias.dtype != AUTO:
        return f"dtype in [models.{alias.name}] ({config.sources.get(f'models.{alias.name}', 'the config')})"
    source = config.sources.get("run.dtype", "default")
    return "--dtype" if source == "command line" else f"run.dtype ({source})"


def plan_load(
    text: str | ModelRef,
    *,
    config: "Config",
    backend: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    context_length: int | None = None,
    max_memory: int | None = None,
    max_batch: int = 1,
    on_event: "EventSink | None" = None,
    alias_may_trust: bool = True,
) -> LoadPlan:
    """Resolve a reference (pulling it when needed), read the model, check it is safe to load,
    and choose the backend. ``backend``/``dtype``: explicit choices; None or "auto" defers to the
    alias's setting, then the config's, then automatic choice. ``alias_may_trust``: whether an
    alias's ``trust_remote_code = true`` counts; a server passes False, so that only its own
    --trust-remote-code lets it run a repo's code."""
    model = resolve_model(text, config=config, on_event=on_event)
    alias = model.alias
    options = LoadOptions(
        dtype=_pick(dtype, alias.dtype if alias else None, config.dtype),
        dtype_source=_dtype_source(dtype, alias, config),
        max_memory=max_memory if max_memory is not None else config.max_memory,
        context_length=context_length,
        trust_remote_code=bool(trust_remote_code or (alias_may_trust and alias and alias.trust_remote_code)),
        allow_pickle=allow_pickle,
        commit=model.ref.revision if model.ref.revision and is_commit(model.ref.revision) else None,
        quant=model.ref.quant,
        max_batch=max_batch,
    )
    info = read_model_info(model.path, quant=model.ref.quant)
    requested = _pick(backend, alias.backend if alias else None, config.backend)
    # Chosen before the safety check (choosing reads no weights and runs nothing), because
    # whether a repo's code would run depends on the backend: transformers knows many types.
    selection = select_backend(info, options, requested, label=model.label)
    notice = check_load_safety(
        info, options, label=model.label, repo_id=model.repo_id, commit=model.commit,
        native=info.has_remote_code and not options.trust_remote_code and _runs_natively(selection.backend, info),
    )
    return LoadPlan(model, info, options, selection, (notice,) if notice else ())


def _runs_natively(backend: Backend, info: ModelInfo) -> bool:
    try:
        return bool(backend.runs_natively(info))
    except Exception:  # noqa: BLE001 - a plugin's bug means "no", which is the safe answer
        return False


def load(
    model: str,
    backend: str = AUTO,
    *,
    dtype: str | None = None,
    max_memory: int | str | None = None,
    context_length: int | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    offline: bool | None = None,
    endpoints: Sequence[str] = (),
    config: "Config | None" = None,
    on_event: "EventSink | None" = None,
) -> tuple[Any, Any]:
    """Load a model by ID, ``ID@revision``, ``ID:QUANT``, alias or local folder; return ``(model, tokenizer)``.

    Pulls it into the cache first when needed. ``backend="auto"`` picks by what is available and
    fits (or the alias's or config's backend when they name one). What the pair is depends on
    the backend: transformers' model and tokenizer for cpu, cuda and int8; for llamacpp (GGUF),
    the ``llama_cpp.Llama`` twice, since it tokenizes too.
    """
    from modelmgr.project.config import load_config
    from modelmgr.units import parse_size

    if config is None:
        config = load_config(flags={"hub.offline": True if offline else None}, flag_endpoints=tuple(endpoints))
    plan = plan_load(
        model, config=config, backend=backend, dtype=dtype, trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle, context_length=context_length,
        max_memory=parse_size(max_memory) if max_memory is not None else None, on_event=on_event,
    )
    for notice in plan.notices:
        import logging

        logging.getLogger("modelmgr").warning(notice)
    loaded = plan.load()
    return loaded.model, loaded.tokenizer
