"""Messages a new user meets: each names the fix that applies to what they actually did."""
from __future__ import annotations

import os
from pathlib import Path

from modelmgr.testing import TINY_MODEL_ID
from tests.helpers import cli


def test_a_bare_name_that_is_a_folder_hints_at_dot_slash(capsys, tmp_path, monkeypatch):
    (Path.cwd() / "tinydir").mkdir()
    outcome = cli(capsys, "run", "tinydir", "hello")
    assert outcome.code == 1
    assert "invalid model id 'tinydir'" in outcome.err and "write './tinydir'" in outcome.err


def test_an_unknown_backend_is_a_usage_mistake(capsys, local_hub):
    outcome = cli(capsys, "run", TINY_MODEL_ID, "hi", "--backend", "rocm", "--endpoint", local_hub.url)
    assert outcome.code == 2
    assert "Unknown backend 'rocm'. Valid backends:" in outcome.err


def test_the_int8_dtype_error_names_the_config_key_when_the_config_set_it(capsys, local_hub):
    Path(os.environ["MODELMGR_CONFIG"]).write_text('[run]\ndtype = "bfloat16"\n')
    outcome = cli(capsys, "run", TINY_MODEL_ID, "hi", "--backend", "int8", "--endpoint", local_hub.url)
    assert outcome.code == 1
    assert "drop --dtype" not in outcome.err
    assert f"set run.dtype (user file {os.environ['MODELMGR_CONFIG']}) to auto or float16" in outcome.err
    explicit = cli(capsys, "run", TINY_MODEL_ID, "hi", "--backend", "int8", "--dtype", "float32", "--endpoint", local_hub.url)
    assert explicit.code == 1 and "drop --dtype" in explicit.err
