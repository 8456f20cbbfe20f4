"""`modelmgr run` end to end: real model, real pulls from a LocalHub, real terminal for the chat."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelmgr.cli import cli, main
from modelmgr.testing import TINY_MODEL_ID, build_tiny_model

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

QUESTION = "Where is the river?"
GREEDY = ["--temperature", "0", "--max-new-tokens", "24"]


def invoke(*args: str, input: str | None = None):
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fail(capsys: pytest.CaptureFixture, *args: str, code: int = 1) -> str:
    """Run through cli.main, where errors become one line on stderr and exit ``code``. Returns that
    line (a pull before it may have printed progress lines)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == code
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("Error: ") and not any(line.startswith(("Error", "Traceback")) for line in lines[:-1]), lines
    return lines[-1]


@pytest.fixture(scope="module")
def greedy_reply(tiny_model_dir: Path) -> str:
    return json.loads(invoke("run", str(tiny_model_dir), QUESTION, "--json", *GREEDY).stdout)["reply"]


def test_reply_streams_to_stdout_and_status_to_stderr(tiny_model_dir: Path, greedy_reply: str) -> None:
    result = invoke("run", str(tiny_model_dir), QUESTION, *GREEDY)
    assert result.stdout == greedy_reply + "\n"
    assert f"Loading {tiny_model_dir} on cpu (float32), needs ~" in result.stderr
    assert "Loaded in " in result.stderr and "on cpu (float32)." in result.stderr


def test_json_has_the_reply_and_the_timings(tiny_model_dir: Path) -> None:
    data = json.loads(invoke("run", str(tiny_model_dir), QUESTION, "--json", "--backend", "cpu", "--max-new-tokens", "8").stdout)
    assert {"reply", "backend", "device", "dtype", "prompt_tokens", "completion_tokens", "load_seconds",
            "time_to_first_token", "tokens_per_second"} <= set(data)
    assert (data["backend"], data["device"], data["dtype"], data["completion_tokens"]) == ("cpu", "cpu", "float32", 8)
    assert data["prompt_tokens"] > 5 and data["load_seconds"] > 0 and 0 < data["time_to_first_token"] < 30
    assert data["tokens_per_second"] > 0
    with_system = json.loads(invoke("run", str(tiny_model_dir), QUESTION, "--json", "--max-new-tokens", "1", "--system", "Answer in French.").stdout)
    assert with_system["prompt_tokens"] > data["prompt_tokens"]  # the system turn went through the template


def test_prompt_from_piped_stdin(tiny_model_dir: Path, greedy_reply: str) -> None:
    assert invoke("run", str(tiny_model_dir), *GREEDY, input=QUESTION + "\n").stdout == greedy_reply + "\n"
    result = CliRunner().invoke(cli, ["run", str(tiny_model_dir)], input="  \n")
    assert result.exit_code == 2 and "stdin was empty" in result.stderr


def test_interactive_chat_keeps_history_until_clear(tiny_model_dir: Path, greedy_reply: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmgr.commands import run as run_command

    monkeypatch.setattr(run_command, "stdin_is_terminal", lambda: True)
    script = f"{QUESTION}\n{QUESTION}\n/clear\n{QUESTION}\n/bye\nnever read\n"
    result = invoke("run", str(tiny_model_dir), *GREEDY, input=script)
    replies = [part.strip() for part in result.stdout.split(">>> ") if part.strip()]
    # The same question twice in one conversation: the second reply sees the first exchange.
    assert replies[0] == greedy_reply and replies[1] != greedy_reply
    assert replies[2] == greedy_reply and len(replies) == 3  # after /clear it is a new conversation
    assert "Conversation cleared." in result.stderr and "/bye" in result.stderr


def test_max_memory_stops_before_loading(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["run", str(tiny_model_dir), "hi", "--max-memory", "1KB"])
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and err.count("\n") == 1  # nothing else: it stopped before loading
    assert "does not fit: " in err and "on cpu (float32), 1.0 kB allowed by --max-memory" in err
    assert "Loading" not in err


def test_unknown_and_unavailable_backends(tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    # A backend that is not there is a usage mistake: exit code 2, as click gives for a bad option.
    assert "Unknown backend 'nope'. Valid backends: cpu, cuda" in fail(capsys, "run", str(tiny_model_dir), "hi", "--backend", "nope", code=2)
    from modelmgr.run.registry import get_registry

    if not get_registry().get("cuda").available():
        assert "the cuda backend cannot load" in fail(capsys, "run", str(tiny_model_dir), "hi", "--backend", "cuda")


def test_pulls_then_runs_then_runs_offline(local_hub, tiny_model_dir: Path, greedy_reply: str) -> None:
    from modelmgr.cache.recency import last_used

    cache = Path(os.environ["HF_HUB_CACHE"])
    before = time.time()
    result = invoke("run", TINY_MODEL_ID, QUESTION, *GREEDY, "--endpoint", local_hub.url)
    assert result.stdout == greedy_reply + "\n"
    used = last_used(cache, TINY_MODEL_ID)
    assert used is not None and used >= before - 1, "a run records the model's last use, for prune"
    local_hub.stop()
    assert invoke("run", TINY_MODEL_ID, QUESTION, *GREEDY, "--offline").stdout == greedy_reply + "\n"


@pytest.fixture
def remote_code_hub(hub_factory, tmp_path: Path):
    hub = hub_factory()
    commit = hub.add_repo("org/remote", build_tiny_model(tmp_path / "remote", auto_map=True))
    return hub, commit


def test_remote_code_is_refused_then_needs_a_pinned_commit(remote_code_hub, capsys: pytest.CaptureFixture) -> None:
    hub, commit = remote_code_hub
    err = fail(capsys, "run", "org/remote", "hi", "--endpoint", hub.url)
    assert "ships its own Python code" in err and f"pin the commit you reviewed: org/remote@{commit}." in err
    err = fail(capsys, "run", "org/remote", "hi", "--trust-remote-code", "--endpoint", hub.url)
    assert f"names a branch or tag that can change. Pin the commit: org/remote@{commit} --trust-remote-code." in err
    # Pinned and trusted, the model's own code runs (the test model's code says so by failing).
    err = fail(capsys, "run", f"org/remote@{commit}", "hi", "--trust-remote-code", "--endpoint", hub.url)
    assert "remote code was executed" in err


def test_alias_supplies_trust_backend_and_dtype(remote_code_hub, capsys: pytest.CaptureFixture) -> None:
    hub, commit = remote_code_hub
    Path(os.environ["MODELMGR_CONFIG"]).write_text(
        f'[models.remote]\nid = "org/remote"\nrevision = "{commit}"\ntrust_remote_code = true\nbackend = "cpu"\ndtype = "bfloat16"\n'
    )
    err = fail(capsys, "run", "remote", "hi", "--endpoint", hub.url)
    assert "remote code was executed" in err


def test_alias_backend_and_dtype_apply(tiny_model_dir: Path, local_hub) -> None:
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[models.tiny]\nid = "{TINY_MODEL_ID}"\nbackend = "cpu"\ndtype = "bfloat16"\n')
    result = invoke("run", "tiny", "hi", "--max-new-tokens", "2", "--endpoint", local_hub.url)
    assert "on cpu (bfloat16)" in result.stderr
    result = invoke("run", "tiny", "hi", "--max-new-tokens", "2", "--dtype", "float32", "--endpoint", local_hub.url)
    assert "on cpu (float32)" in result.stderr  # the flag beats the alias


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"timed out waiting for {marker!r}; got {data!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_chat_in_a_real_terminal(tiny_model_dir: Path, greedy_reply: str) -> None:
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmgr", "run", str(tiny_model_dir), *GREEDY],
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )
    os.close(follower)
    try:
        assert b"/bye" in _read_until(leader, b">>> ", 60)  # the help line, then the prompt
        os.write(leader, (QUESTION + "\r").encode())
        answer = _read_until(leader, b">>> ", 60).decode("utf-8", "replace").replace("\r\n", "\n")
        assert greedy_reply.strip().splitlines()[0] in answer
        os.write(leader, b"\x04")  # Ctrl-D
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
