import os
from pathlib import Path

import pytest

from modelmgr.project.config import HUGGINGFACE_CO, load_config
from modelmgr.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_follow_huggingface_hub(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    config = load_config()
    assert config.cache_dir == tmp_path / "home" / "hub"
    assert [e.url for e in config.endpoints] == [HUGGINGFACE_CO]
    assert config.endpoints[0].send_token is True
    assert config.offline is False


def test_hf_hub_cache_beats_hf_home_and_config(monkeypatch, tmp_path):
    write(Path(os.environ["MODELMGR_CONFIG"]), f'[cache]\ndir = "{tmp_path / "from-config"}"\n')
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "from-env"))
    config = load_config()
    assert config.cache_dir == tmp_path / "from-env"
    assert config.sources["cache.dir"] == "environment $HF_HUB_CACHE"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    config = load_config()
    assert config.cache_dir == tmp_path / "from-config"
    assert config.sources["cache.dir"].startswith("user file ")


def test_endpoints_flags_then_environment_then_config(monkeypatch):
    write(Path(os.environ["MODELMGR_CONFIG"]), """
[[hub.endpoints]]
url = "http://mirror-a.example"
name = "a"
send_token = true

[[hub.endpoints]]
url = "http://mirror-b.example/"
timeout = 5
""")
    monkeypatch.setenv("HF_ENDPOINT", "http://env.example")
    config = load_config(flag_endpoints=("http://flag.example",))
    assert [e.url for e in config.endpoints] == [
        "http://flag.example", "http://env.example", "http://mirror-a.example", "http://mirror-b.example"]
    assert [e.send_token for e in config.endpoints] == [False, False, True, False]
    assert config.endpoints[3].timeout == 5


def test_project_file_beats_user_file_and_flags_beat_both(tmp_path):
    write(Path(os.environ["MODELMGR_CONFIG"]), "[hub]\nconnections = 2\n[run]\nbackend = 'int8'\n")
    project = write(Path.cwd() / "modelmgr.toml", "[hub]\nconnections = 3\n")
    config = load_config()
    assert config.connections == 3 and config.backend == "int8"
    assert config.sources["hub.connections"] == f"project file {project}"
    assert load_config(flags={"hub.connections": 7}).connections == 7


def test_unknown_keys_warn_with_the_closest_valid_one():
    write(Path(os.environ["MODELMGR_CONFIG"]), "[hub]\nconections = 2\n")
    config = load_config()
    assert any("unknown key 'hub.conections'" in w and "Did you mean 'hub.connections'?" in w for w in config.warnings)


def test_invalid_toml_names_file_line_and_column():
    path = write(Path(os.environ["MODELMGR_CONFIG"]), "[hub]\nconnections = = 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert str(path) in str(caught.value) and "line 2" in str(caught.value) and "column" in str(caught.value)


def test_invalid_values_are_errors():
    write(Path(os.environ["MODELMGR_CONFIG"]), "[hub]\nconnections = 0\n")
    with pytest.raises(ConfigError, match="at least 1"):
        load_config()


def test_missing_explicit_config_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELMGR_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config()


def test_aliases(tmp_path):
    write(Path(os.environ["MODELMGR_CONFIG"]), """
[models.tiny]
id = "org/tiny"
revision = "v1"
backend = "cpu"
trust_remote_code = false
""")
    config = load_config()
    assert config.aliases() == {"tiny": ("org/tiny", "v1")}
    assert config.models["tiny"].backend == "cpu"


def test_token_from_environment_or_stored_file(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert load_config().token == "hf_secret"
    assert "hf_secret" not in repr(load_config())
    monkeypatch.delenv("HF_TOKEN")
    write(Path(os.environ["HF_HOME"]) / "token", "hf_stored\n")
    assert load_config().token == "hf_stored"


def test_offline_from_environment(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_config().offline is True
    monkeypatch.setenv("HF_HUB_OFFLINE", "maybe")
    with pytest.raises(ConfigError, match="true or false"):
        load_config()


def test_config_example_documents_every_key_and_parses():
    import tomllib

    from modelmgr.project.config import SCHEMA

    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    tomllib.loads(text)
    for key in SCHEMA:
        section, name = key.split(".")
        assert f"[{section}]" in text, key
        assert f"{name} =" in text or f"[[{key}]]" in text, f"{key} is not documented in config.example.toml"


def test_alias_ids_and_revisions_are_validated_like_typed_ones():
    write(Path(os.environ["MODELMGR_CONFIG"]), '[models.bad]\nid = "org/tiny"\nrevision = "../../../../escaped-ref"\n')
    with pytest.raises(ConfigError, match=r"\[models.bad\].*invalid revision"):
        load_config()
    write(Path(os.environ["MODELMGR_CONFIG"]), '[models.bad]\nid = "../x"\n')
    with pytest.raises(ConfigError, match="invalid model id"):
        load_config()


def test_a_ref_can_never_lead_out_of_refs(tmp_path):
    from modelmgr.errors import InvalidReference
    from modelmgr.cache.layout import RepoPaths

    paths = RepoPaths(tmp_path, "org/name")
    for name in ("../../x", "/abs", "a/../../b", "", "a\\b"):
        with pytest.raises(InvalidReference):
            paths.write_ref(name, "0" * 40)
    assert not any(tmp_path.rglob("*"))


def test_a_malformed_token_is_refused_without_being_shown(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRET1\nhf_SECRET2")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert "SECRET" not in str(caught.value) and "HF_TOKEN" in str(caught.value)


@pytest.mark.parametrize("value", ['"soon"', "0", "-5", "nan", "true"])
def test_timeouts_must_be_positive_numbers(value):
    write(Path(os.environ["MODELMGR_CONFIG"]), f"[hub]\ntimeout = {value}\n")
    with pytest.raises(ConfigError, match="number of seconds above 0"):
        load_config()


def test_an_empty_environment_variable_does_not_override_the_config(monkeypatch):
    write(Path(os.environ["MODELMGR_CONFIG"]), "[hub]\noffline = true\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    assert load_config().offline is True
