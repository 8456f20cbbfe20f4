"""The command line: a click group whose commands load lazily, and the one place where errors
become messages and exit codes.

Commands live in ``modelmgr/commands/`` and are imported only when invoked (or listed by
``--help``), so ``modelmgr list`` never pays for what ``modelmgr run`` needs.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from modelmgr.errors import ModelmgrError

# name -> "module:attribute" under modelmgr.commands
BUILTIN_COMMANDS = {
    "pull": "pull:pull",
    "list": "list:list_command",
    "rm": "rm:rm",
    "run": "run:run",
    "show": "show:show",
    "backends": "backends:backends",
    "du": "du:du",
    "prune": "prune:prune",
    "verify": "verify:verify",
    "config": "config:config",
    "lock": "lock:lock",
    "sync": "lock:sync",
    "serve": "serve:serve",
    "ps": "ps:ps",
    "stop": "stop:stop",
    "search": "search:search",
    "doctor": "doctor:doctor",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command is used; adds plugins' commands."""

    def _builtin(self, name: str) -> click.Command | None:
        target = BUILTIN_COMMANDS.get(name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        try:
            loaded = importlib.import_module(f"modelmgr.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"modelmgr.commands.{module}":
                return None  # a command not written yet is simply not offered
            raise
        return getattr(loaded, attribute)

    def _plugin_commands(self) -> dict[str, click.Command]:
        from modelmgr.run.plugins import plugin_commands

        return plugin_commands()

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = [name for name in BUILTIN_COMMANDS if self._builtin(name) is not None]
        return names + sorted(set(self._plugin_commands()) - set(names))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self._builtin(cmd_name)
        if command is None:
            command = self._plugin_commands().get(cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show tracebacks and request logs (tokens are never shown).")
@click.version_option(package_name="modelmgr", prog_name="modelmgr")
def cli(debug: bool) -> None:
    """Pull, cache and run open LLMs from the Hugging Face Hub or its mirrors.

    \b
    Examples:
      modelmgr pull Qwen/Qwen2.5-0.5B-Instruct
      modelmgr run Qwen/Qwen2.5-0.5B-Instruct "Why is the sky blue?"
      modelmgr list
      modelmgr rm Qwen/Qwen2.5-0.5B-Instruct
    """
    if debug:
        import logging

        # Requests are logged as method, URL without its query string, and status: never headers.
        handler = _debug_handler()
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        logger = logging.getLogger("modelmgr")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def _debug_handler():
    """A handler that writes to whatever sys.stderr is when a record comes, and that main()
    removes when it ends: main() may run many times in one process (tests, embedding), each with
    its own stderr. Defined here so that logging is imported only with --debug."""
    import logging

    class DebugHandler(logging.StreamHandler):
        @property
        def stream(self):  # type: ignore[override]
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:
            pass

    return DebugHandler()


def _end_debug() -> None:
    if "logging" not in sys.modules:
        return
    import logging

    logger = logging.getLogger("modelmgr")
    for handler in [h for h in logger.handlers if type(h).__name__ == "DebugHandler"]:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def _print_traceback() -> None:
    import traceback  # only with --debug

    traceback.print_exc()


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("MODELMGR_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    """The console script. Called with ``argv`` (tests, other programs) it ends by SystemExit;
    as the program itself (no ``argv``) it may end the process at once (``_leave``)."""
    as_program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = _wants_debug(argv)
    try:
        code = cli.main(args=argv, prog_name="modelmgr", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            # click turns Ctrl-C into Abort; the shell convention for it is 130.
            click.echo("Interrupted. A pull resumes where it stopped when run again.", err=True)
            code = 130
        else:
            click.echo("Aborted.", err=True)
            code = 1
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except ModelmgrError as exc:
        if debug:
            _print_traceback()
        click.echo(f"Error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except BrokenPipeError:
        # `modelmgr list | head`: the reader left; that is not an error.
        sys.stderr.close()
        code = 0
    except OSError as exc:
        if debug:
            _print_traceback()
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"Error: {exc.strerror or exc}{where}. Check the path, its permissions and the free space.", err=True)
        code = 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence for a user's terminal
        if debug:
            _print_traceback()
        click.echo(f"Error: unexpected {type(exc).__name__}: {exc}. Rerun with --debug for the traceback and report it.", err=True)
        code = 1
    _end_debug()
    if as_program:
        _leave(code or 0)
    sys.exit(code or 0)


def _leave(code: int) -> None:
    """End the process now when nothing but the interpreter's teardown is left to run.

    That teardown frees every object one by one: some 15 ms after any command, more after `list`
    on a large cache. Where no other thread runs, no profiler or tracer is set and no exit handler
    is registered (``atexit``: logging, weakref finalizers such as tempfile's, multiprocessing all
    register one), it would do nothing else, so once the output is flushed the process ends
    without it, as mypy's does.
    Files are never left half-written either way: commands put them in place by renaming them
    once complete. Returns (to a normal exit) when any of that cannot be told."""
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return  # under cProfile, a debugger or coverage: they report at the end of a normal exit
    registered = getattr(atexit, "_ncallbacks", None)  # CPython's
    if registered is None or registered() > 0:
        return
    try:
        for name in ("stdout", "stderr"):  # click's own wrapper too, where it made one (a bad encoding)
            click.get_text_stream(name).flush()
            getattr(sys, name).flush()
    except (OSError, ValueError):  # a closed or broken stream: let the normal exit deal with it
        return
    except KeyboardInterrupt:  # Ctrl-C while a slow reader held the output back
        os._exit(130)
    os._exit(code)
