"""Running the real command line from tests: in-process (fast) or as a subprocess (exact)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from modelmgr.cli import main


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture, *args: str) -> Outcome:
    """``modelmgr ARGS`` through the same entry point the console script uses."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return Outcome(int(exited.value.code or 0), captured.out, captured.err)


def run_modelmgr(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 120) -> Outcome:
    """``python -m modelmgr ARGS`` in a fresh process with the test's environment."""
    completed = subprocess.run(
        [sys.executable, "-m", "modelmgr", *args],
        env={**os.environ, **(env or {})}, input=input, capture_output=True, text=True, timeout=timeout,
    )
    return Outcome(completed.returncode, completed.stdout, completed.stderr)
