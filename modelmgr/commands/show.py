"""`modelmgr show`: what a model is and what it would take to run it here, without loading it."""
from __future__ import annotations

import click

from modelmgr.run.api import DTYPES
from modelmgr.commands._common import echo_json, get_config, render_table
from modelmgr.commands._common import pull_options


def _count(number: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if number >= size:
            return f"{number / size:.2f}{unit}"
    return str(number)


def _native(backend, info) -> bool:
    try:
        return bool(backend.runs_natively(info))
    except Exception:  # noqa: BLE001 - a plugin's bug means "no", the safe answer
        return False


@click.command()
@click.argument("ref")
@click.option("--dtype", type=click.Choice(DTYPES), default=None, help="Estimate for this compute dtype (default: each backend's).")
@click.option("--max-memory", default=None, metavar="SIZE", help="Count at most this much memory as free, e.g. 8G.")
@click.option("--context-length", type=click.IntRange(min=1), default=None, metavar="TOKENS", help="Context to size the KV cache for (default: the model's, at most 4096).")
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
@pull_options
def show(ref, dtype, max_memory, context_length, as_json, endpoints, offline):
    """Show a model's architecture, size and context, and whether each backend can run it here.

    REF is org/name[@revision], an alias or a local folder; a model not in the cache is pulled
    first. Reads only config.json and the safetensors headers, or a GGUF file's header
    (org/name:QUANT picks the quantization): nothing is loaded.
    """
    from modelmgr.run.api import LoadOptions
    from modelmgr.run.choose import assess
    from modelmgr.run.plan import resolve_model
    from modelmgr.run.registry import get_registry
    from modelmgr.run.modelinfo import read_model_info
    from modelmgr.units import format_size
    from modelmgr.commands._progress import pull_progress

    config = get_config(
        flags={"hub.offline": True if offline else None, "run.dtype": dtype, "run.max_memory": max_memory}, endpoints=endpoints
    )
    with pull_progress(not as_json, bars=config.progress) as on_event:
        model = resolve_model(ref, config=config, on_event=on_event)
    info = read_model_info(model.path, quant=model.ref.quant)
    options = LoadOptions(dtype=config.dtype, max_memory=config.max_memory, context_length=context_length, quant=model.ref.quant)
    registry = get_registry()
    fits = [assess(backend, info, options) for backend in registry.backends.values()]
    context = info.default_context(context_length)

    if as_json:
        echo_json({
            "model": model.label,
            "repo_id": model.repo_id,
            "commit": model.commit,
            **info.to_dict(),
            "estimate_context_length": context,
            "backends": [fit.to_dict() for fit in fits],
        })
        return

    revision = f" @ {model.commit}" if model.commit else ""
    remote = "yes: config.json has auto_map; running it needs --trust-remote-code at a pinned commit" if info.has_remote_code else "no"
    if info.has_remote_code and any(_native(backend, info) for backend in registry.backends.values()):
        remote = (f"yes: config.json has auto_map, but the built-in {info.model_type} implementation loads it without "
                  "running that code (--trust-remote-code at a pinned commit runs the repo's instead)")
    weights = f"{len(info.weight_files)} {info.weight_format or 'none'} file{'s' if len(info.weight_files) != 1 else ''}, {format_size(info.weights_size)}"
    if info.weight_format == "pickle":
        weights += " (pickle: needs --allow-pickle)"
    fields = [
        ("Model", f"{model.label}{revision}"),
        ("Path", str(model.path)),
        ("Architecture", f"{info.architecture or 'unknown'} ({info.model_type or '?'})"),
        ("Parameters", f"{_count(info.parameter_count)} ({info.parameter_source})"),
        ("Context", f"{info.context_length} tokens" if info.context_length else "unknown"),
        ("Stored dtype", info.stored_dtype or "unknown"),
        ("Weights", weights),
        ("Files", f"{len(info.files)}, {format_size(info.total_size)} in all"),
        ("Remote code", remote),
    ]
    if info.quantization:
        fields.append(("Quantization", info.quantization))
    if info.weight_format == "gguf":
        fields.append(("Format", "GGUF"))
        fields.append(("Tokenizer", info.tokenizer_model or "unknown"))
        fields.append(("Chat template", "yes (from the GGUF header)" if info.chat_template else "none: prompts go in as plain text"))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {value}")

    click.echo(f"\nMemory needed with a {context}-token context (weights, KV cache, runtime):")
    rows = []
    for fit in fits:
        needed = format_size(fit.needed) if fit.needed is not None else "-"
        free = format_size(fit.free) if fit.free is not None else "-"
        verdict = ("yes" if fit.fits else "no") if fit.available else f"unavailable: {fit.reason}"
        rows.append((fit.backend, fit.dtype or "-", needed, free, verdict))
    if rows:
        click.echo(render_table(["BACKEND", "DTYPE", "NEEDS", "FREE", "FITS"], rows, right=(2, 3)))
    else:
        click.echo("No backends are installed (see `modelmgr backends`).")
