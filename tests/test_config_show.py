"""``modelmgr config show``: every effective value and the layer it came from, across the system
file, the user file, the project file, the environment and the command line; and the warnings a
config with unknown keys gives on every command."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from modelmgr.project.config import SCHEMA

from .helpers import cli, run_modelmgr


@pytest.fixture
def layers(monkeypatch) -> dict[str, Path]:
    """The three config files where the isolated environment looks for them, all empty."""
    system = Path(os.environ["XDG_CONFIG_DIRS"].split(os.pathsep)[0]) / "modelmgr" / "config.toml"
    system.parent.mkdir(parents=True, exist_ok=True)
    files = {"system": system, "user": Path(os.environ["MODELMGR_CONFIG"]), "project": Path.cwd() / "modelmgr.toml"}
    for path in files.values():
        path.write_text("")
    return files


def show(capsys, *flags: str) -> dict:
    outcome = cli(capsys, "config", "show", "--json", *flags)
    assert outcome.code == 0, outcome.err
    return json.loads(outcome.out)


def test_the_system_file_is_where_platformdirs_puts_it(capsys, layers):
    outcome = cli(capsys, "config", "path")
    assert outcome.code == 0
    lines = outcome.out.splitlines()
    assert lines[0].split()[:2] == ["system", str(layers["system"])]
    assert lines[1].split()[:2] == ["user", str(layers["user"])]
    assert lines[2].split()[:2] == ["project", str(layers["project"])]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere platformdirs itself answers")
@pytest.mark.parametrize("variables", [
    {},
    {"XDG_CONFIG_HOME": "/somewhere/config", "XDG_CONFIG_DIRS": "/first:/second"},
    {"XDG_CONFIG_HOME": "relative/config", "XDG_CONFIG_DIRS": "relative:/second"},
    {"XDG_CONFIG_HOME": "", "XDG_CONFIG_DIRS": ""},
    {"XDG_CONFIG_HOME": "/trailing/slash/", "XDG_CONFIG_DIRS": "/etc/site/:"},
    {"HOME": "/home/someone/"},
    {"HOME": "not/absolute"},
])
def test_the_config_folders_are_where_platformdirs_puts_them(monkeypatch, variables):
    """modelmgr works the two folders out itself on Linux (importing platformdirs costs every
    command some 7 ms): the answers must be platformdirs' own, whatever the variables hold."""
    import platformdirs

    from modelmgr.project.dirs import system_config_dir, user_config_dir

    relative = any(value and not value.startswith("/") for value in variables.values())
    if relative and tuple(int(part) for part in platformdirs.__version__.split(".")[:2]) < (4, 14):
        pytest.skip("platformdirs before 4.14 took relative XDG values and HOME as they were; the XDG rule ignores them")
    for name in ("XDG_CONFIG_HOME", "XDG_CONFIG_DIRS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert system_config_dir() == Path(platformdirs.site_config_dir("modelmgr"))
    assert user_config_dir() == Path(platformdirs.user_config_dir("modelmgr"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere platformdirs itself answers")
def test_no_home_folder_is_one_clear_line_unless_the_config_file_is_named(monkeypatch, tmp_path):
    """A user id without an account and no HOME (some containers): say what to set, and need
    nothing of it where MODELMGR_CONFIG names the file."""
    import pwd

    from modelmgr.errors import ConfigError
    from modelmgr.project.config import config_files

    def no_account(uid):
        raise KeyError(uid)

    monkeypatch.setattr(pwd, "getpwuid", no_account)
    environ = {"XDG_CONFIG_DIRS": str(tmp_path)}
    with pytest.raises(ConfigError, match="cannot tell your home folder.*set HOME"):
        config_files(cwd=tmp_path, environ=environ)
    named = config_files(cwd=tmp_path, environ={**environ, "MODELMGR_CONFIG": str(tmp_path / "c.toml")})
    assert ("user", tmp_path / "c.toml") in named


def test_every_value_names_its_source_across_all_layers(capsys, monkeypatch, layers, tmp_path):
    shared = tmp_path / "team-cache"
    layers["system"].write_text(
        '[hub]\nconnections = 3\n[run]\nbackend = "cpu"\ndtype = "float16"\n[plugins]\ndisabled = ["noisy"]\n'
    )
    layers["user"].write_text(
        '[run]\nbackend = "int8"\n[cache]\nmax_size = "10G"\n[models.tiny]\nid = "org/tiny"\nrevision = "v1"\n'
    )
    layers["project"].write_text(f'[run]\ndtype = "bfloat16"\n[cache]\ndirs = ["{shared}"]\n')
    monkeypatch.setenv("MODELMGR_MAX_MEMORY", "2G")
    monkeypatch.setenv("HF_ENDPOINT", "http://env-mirror.invalid")

    values = show(capsys, "--connections", "5", "--backend", "cuda", "--offline", "--endpoint", "http://flag-mirror.invalid")
    system, user, project = (f"{layer} file {layers[layer]}" for layer in ("system", "user", "project"))
    expected = {
        "cache.dir": (os.environ["HF_HUB_CACHE"], "environment $HF_HUB_CACHE"),
        "cache.dirs": ([str(shared)], project),
        "cache.max_size": (10 * 1024**3, user),
        "hub.offline": (True, "command line"),
        "hub.connections": (5, "command line"),  # over the system file's 3
        "run.backend": ("cuda", "command line"),  # over the user's int8, over the system's cpu
        "run.dtype": ("bfloat16", project),  # over the system's float16
        "run.max_memory": (2 * 1024**3, "environment $MODELMGR_MAX_MEMORY"),
        "plugins.disabled": (["noisy"], system),
        "hub.token": ("not set", "-"),
    }
    for key, (value, source) in expected.items():
        assert (values[key]["value"], values[key]["source"]) == (value, source), key
    assert [e["url"] for e in values["hub.endpoints"]["value"]] == ["http://flag-mirror.invalid", "http://env-mirror.invalid"]
    assert values["hub.endpoints"]["source"] == "command line, environment $HF_ENDPOINT"
    assert values["models.tiny"] == {"value": {"id": "org/tiny", "revision": "v1", "trust_remote_code": False}, "source": user}

    # The table says the same, one [source] per line.
    outcome = cli(capsys, "config", "show", "--dtype", "float32", "--max-memory", "1G")
    lines = {line.split()[0]: line for line in outcome.out.splitlines()}
    assert lines["run.dtype"].endswith("float32  [command line]")
    assert lines["run.max_memory"].endswith(f"{1024**3}  [command line]")
    assert lines["run.backend"].endswith(f"int8  [{user}]")
    assert lines["hub.connections"].endswith(f"3  [{system}]")
    assert lines["cache.max_size"].endswith(f"{10 * 1024**3}  [{user}]")
    assert lines["hub.endpoints"].endswith("http://env-mirror.invalid  [environment $HF_ENDPOINT]")


def test_each_layer_beats_the_one_below(capsys, monkeypatch, layers):
    for number, layer in enumerate(("system", "user", "project"), start=1):
        layers[layer].write_text(f"[hub]\nconnections = {number}\n")
    monkeypatch.setenv("MODELMGR_CONNECTIONS", "4")
    ladder = [("command line", 5, ("--connections", "5")), ("environment $MODELMGR_CONNECTIONS", 4, ())]
    for source, value, flags in ladder:
        got = show(capsys, *flags)["hub.connections"]
        assert (got["value"], got["source"]) == (value, source)
    monkeypatch.delenv("MODELMGR_CONNECTIONS")
    for layer, value in (("project", 3), ("user", 2), ("system", 1)):
        got = show(capsys)["hub.connections"]
        assert (got["value"], got["source"]) == (value, f"{layer} file {layers[layer]}")
        layers[layer].write_text("")
    assert show(capsys)["hub.connections"] == {"value": SCHEMA["hub.connections"][1], "source": "default"}


def test_unknown_keys_warn_on_stderr_from_any_command(capsys, layers):
    layers["user"].write_text('[hub]\nconections = 3\n[cahce]\ndir = "/x"\n')
    layers["project"].write_text('[models.tiny]\nid = "org/tiny"\nrevison = "v1"\n')
    for command in (("list",), ("du",), ("config", "show")):
        outcome = cli(capsys, *command)
        assert outcome.code == 0, (command, outcome.err)
        warnings = [line for line in outcome.err.splitlines() if line.startswith("Warning: ")]
        assert f"Warning: {layers['user']}: unknown key 'hub.conections' ignored. Did you mean 'hub.connections'?" in warnings
        assert any("unknown key 'cahce.dir' ignored. Did you mean 'cache.dir'?" in w for w in warnings)
        assert f"Warning: {layers['project']}: unknown key 'models.tiny.revison' ignored. Did you mean 'models.tiny.revision'?" in warnings
        assert "Warning" not in outcome.out  # warnings never pollute what scripts read
    # The same from a real process, and the valid keys still apply.
    outcome = run_modelmgr("config", "show")
    assert outcome.code == 0 and "unknown key 'hub.conections'" in outcome.err
    assert re.search(rf"^hub\.connections +{SCHEMA['hub.connections'][1]}  \[default\]$", outcome.out, re.M)
