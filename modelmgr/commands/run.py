"""`modelmgr run`: load a model on the best backend that fits and answer a prompt, or chat."""
from __future__ import annotations

import sys

import click

from modelmgr.run.api import DTYPES
from modelmgr.commands._common import echo_json, get_config, is_terminal, pull_options
from modelmgr.commands._progress import pull_progress



def stdin_is_terminal() -> bool:
    """Whether to chat (stdin is a person) or read the prompt from stdin (it is a pipe)."""
    return sys.stdin is not None and is_terminal(sys.stdin)


def status(message: str) -> None:
    """Progress for the person watching: stderr, so stdout carries only the reply."""
    click.echo(message, err=True)


def model_options(function):
    """The options that decide how the model is loaded (the rest decide what it says)."""
    for decorator in reversed([
        click.option("--backend", default=None, metavar="NAME", help="cpu, cuda, int8, a plugin's backend, or auto (default: config run.backend, else auto)."),
        click.option("--dtype", type=click.Choice(DTYPES), default=None, help="Compute dtype (default: the backend's: float32 on cpu, 16-bit on cuda)."),
        click.option("--max-memory", default=None, metavar="SIZE", help="Use at most this much memory, e.g. 8G (config run.max_memory)."),
        click.option("--context-length", type=click.IntRange(min=1), default=None, metavar="TOKENS", help="Context to size the KV cache for (default: the model's, at most 4096)."),
        click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code (config auto_map); needs ID@COMMIT."),
        click.option("--allow-pickle", is_flag=True, help="Allow .bin/.pt weights, which can run code when unpickled."),
    ]):
        function = decorator(function)
    return function


@click.command()
@click.argument("ref")
@click.argument("prompt", required=False)
@model_options
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True, help="Longest reply, in tokens.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True, help="Sampling temperature; 0 is greedy (deterministic).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Nucleus sampling: keep the most likely tokens up to this total probability.")
@click.option("--seed", type=int, default=None, help="Seed for sampling, to repeat a reply.")
@click.option("--system", default=None, metavar="TEXT", help="System prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply and timings as JSON instead of streaming.")
@click.option("--no-server", is_flag=True, help="Load the model in this process even when a server runs at MODELMGR_HOST.")
@pull_options
def run(ref, prompt, backend, dtype, max_memory, context_length, trust_remote_code, allow_pickle, max_new_tokens,
        temperature, top_p, seed, system, as_json, no_server, endpoints, offline):
    """Run a model: answer PROMPT, read the prompt from stdin, or chat.

    \b
    REF is org/name, org/name@revision, org/name:QUANT (a GGUF quantization, e.g.
    org/name:Q4_K_M, run on llama.cpp), an alias from the config, or a local folder.
    The model is pulled first when it is not cached. With no PROMPT and a terminal,
    an interactive chat starts (/clear forgets, /bye or Ctrl-D exits).
    \b
    Examples:
      modelmgr run Qwen/Qwen2.5-0.5B-Instruct "Why is the sky blue?"
      echo "Summarise: ..." | modelmgr run Qwen/Qwen2.5-0.5B-Instruct --temperature 0
      modelmgr run Qwen/Qwen2.5-0.5B-Instruct --backend int8
    """
    from modelmgr.run.api import GenerationSettings
    from modelmgr.run.plan import plan_load
    from modelmgr.units import format_size

    config = get_config(
        flags={"hub.offline": True if offline else None, "run.backend": backend, "run.dtype": dtype, "run.max_memory": max_memory},
        endpoints=endpoints,
    )
    interactive = prompt is None and stdin_is_terminal()
    if prompt is None and not interactive:
        prompt = sys.stdin.read() if sys.stdin is not None else ""
        if not prompt.strip():
            raise click.UsageError("no prompt: stdin was empty. Give PROMPT, pipe text in, or run in a terminal to chat.")
    if interactive and as_json:
        raise click.UsageError("--json needs a PROMPT (or text on stdin); it does not apply to an interactive chat.")

    # A running server has the model warm; flags that choose how to load it are for this process.
    load_flags = (backend, dtype, max_memory, context_length, trust_remote_code or None, allow_pickle or None)
    if not no_server and all(flag is None for flag in load_flags):
        from modelmgr.commands._remote import server_backend

        remote = server_backend(config, ref)
        if remote is not None:
            status(f"Using the server at {remote.client.address.client_url} (--no-server to load here).")
            _reply(remote, remote.loaded(), ref, None, prompt, interactive, as_json,
                   GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed), system,
                   info=None)
            return

    with pull_progress(not as_json, bars=config.progress) as on_event:
        plan = plan_load(
            ref, config=config, backend=backend, dtype=dtype, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle, context_length=context_length, on_event=on_event,
        )
    fit = plan.selection.fit
    needs = f", needs ~{format_size(fit.needed)}" if fit.needed is not None else ""
    free = f" of {format_size(fit.free)} {'allowed' if fit.capped else 'free'}" if fit.needed is not None and fit.free is not None else ""
    for notice in plan.notices:
        status(notice)
    status(f"Loading {plan.label} on {plan.backend.name} ({plan.selection.dtype}){needs}{free} ...")
    loaded = plan.load()
    status(f"Loaded in {loaded.load_seconds:.1f} s on {loaded.device} ({loaded.dtype}).")

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    _reply(plan.backend, loaded, plan.label, plan.commit, prompt, interactive, as_json, settings, system, info=plan.info)


def _reply(backend, loaded, label, commit, prompt, interactive, as_json, settings, system, *, info) -> None:
    """Answer or chat with a loaded model; ``info`` is what was read of its files (None on a server)."""
    from modelmgr.run.chat import ChatSession, chat_loop, complete

    session = ChatSession(backend, loaded, settings, system=system)
    if interactive:
        _enable_line_editing()
        chat_loop(session, read_line=lambda: input(">>> "), write=lambda text: click.echo(text, nl=False), notify=status)
        return

    messages = session.messages(prompt.strip())
    if as_json:
        reply = complete(backend, loaded, messages, settings)
        if hasattr(backend, "served"):  # on a server: what it loaded the model with
            loaded = backend.served()
        echo_json({
            "model": label,
            "commit": commit,
            "reply": reply.text,
            "backend": loaded.backend_name,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "format": info.weight_format if info is not None else None,
            "quantization": info.quantization if info is not None else None,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "load_seconds": round(loaded.load_seconds, 3),
            "time_to_first_token": None if reply.time_to_first_token is None else round(reply.time_to_first_token, 4),
            "tokens_per_second": None if reply.tokens_per_second is None else round(reply.tokens_per_second, 2),
        })
        return
    reply = complete(backend, loaded, messages, settings, on_text=lambda text: click.echo(text, nl=False))
    if not reply.text.endswith("\n"):
        click.echo()
    if reply.tokens_per_second is not None:
        status(f"{reply.completion_tokens} tokens, {reply.tokens_per_second:.1f} tokens/s on {loaded.backend_name} ({loaded.device}, {loaded.dtype}).")


def _enable_line_editing() -> None:
    """Arrow keys and history at the chat prompt; input() uses readline once it is imported."""
    try:
        import readline  # noqa: F401
    except ImportError:  # Windows
        pass
