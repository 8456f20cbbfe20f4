"""`modelmgr pull` against a real Hub-protocol server on loopback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import TINY_MODEL_ID

from .helpers import cli, run_modelmgr

TINY_FILES = {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
              "tokenizer.json", "tokenizer_config.json"}


def cache_dir() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def file_gets(hub) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]


def test_pull_writes_huggingface_hub_layout(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    outcome = cli(capsys, "pull", TINY_MODEL_ID)
    assert outcome.code == 0, outcome.err
    commit = local_hub.commit(TINY_MODEL_ID)
    paths = RepoPaths(cache_dir(), TINY_MODEL_ID)
    assert paths.read_ref("main") == commit
    snapshot = paths.snapshot(commit)
    assert {p.name for p in snapshot.iterdir()} == TINY_FILES
    for link in snapshot.iterdir():
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve().parent == paths.blobs
    # LFS blobs are named by sha256, git files by their blob sha1: as huggingface_hub names them.
    assert len((snapshot / "model.safetensors").resolve().name) == 64
    assert len((snapshot / "config.json").resolve().name) == 40
    assert f"Pulled {TINY_MODEL_ID}@main ({commit[:8]})" in outcome.out
    assert not list(paths.blobs.glob("*.incomplete"))


def test_second_pull_downloads_nothing(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    assert cli(capsys, "pull", TINY_MODEL_ID).code == 0
    local_hub.clear_requests()
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--json")
    assert outcome.code == 0
    assert file_gets(local_hub) == []
    result = json.loads(outcome.out)
    assert result["downloaded_files"] == 0 and result["reused_files"] == len(TINY_FILES)
    assert all(f["cached"] for f in result["files"])


def test_dry_run_lists_files_and_writes_nothing(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--dry-run")
    assert outcome.code == 0
    assert "model.safetensors" in outcome.out and "Would fetch 6 of 6 files" in outcome.out
    assert not cache_dir().exists() or not any(cache_dir().iterdir())
    assert file_gets(local_hub) == []


def test_include_exclude_and_all_files(capsys, monkeypatch, local_hub, tmp_path, tiny_model_dir):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "pytorch_model.bin").write_bytes(b"pickle copy")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"onnx copy")
    local_hub.add_repo("org/many", repo)
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)

    def planned(*args):
        outcome = cli(capsys, "pull", "org/many", "--dry-run", "--json", *args)
        assert outcome.code == 0, outcome.err
        return {f["path"] for f in json.loads(outcome.out)["files"]}

    assert planned() == TINY_FILES
    assert planned("--include", "*.json") == {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}
    assert planned("--exclude", "chat_template.jinja") == TINY_FILES - {"chat_template.jinja"}
    assert planned("--all-files") == TINY_FILES | {"pytorch_model.bin", "onnx/model.onnx"}


def test_revisions_tags_and_commits(capsys, monkeypatch, local_hub, tmp_path, tiny_model_dir):
    import shutil

    v2 = tmp_path / "v2"
    shutil.copytree(tiny_model_dir, v2)
    (v2 / "config.json").write_text((v2 / "config.json").read_text().replace("}", ', "note": "v2"}', 1))
    old = local_hub.commit(TINY_MODEL_ID)
    local_hub.add_tag(TINY_MODEL_ID, "v1.0")
    new = local_hub.add_repo(TINY_MODEL_ID, v2)
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    assert cli(capsys, "pull", f"{TINY_MODEL_ID}@v1.0").code == 0
    assert cli(capsys, "pull", TINY_MODEL_ID).code == 0
    paths = RepoPaths(cache_dir(), TINY_MODEL_ID)
    assert (paths.read_ref("v1.0"), paths.read_ref("main")) == (old, new)
    # Unchanged files share their blobs between the two snapshots.
    assert (paths.snapshot(old) / "model.safetensors").resolve() == (paths.snapshot(new) / "model.safetensors").resolve()
    local_hub.clear_requests()
    assert cli(capsys, "pull", f"{TINY_MODEL_ID}@{old}").code == 0
    assert not any("/revision/" in r.path for r in local_hub.requests), "a commit needs no resolving"


def test_endpoint_flag_beats_hf_endpoint(capsys, monkeypatch, local_hub):
    from modelmgr.testing import free_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", local_hub.url)
    assert outcome.code == 0, outcome.err


@pytest.mark.parametrize(
    "args, expected",
    [
        (["pull", "../../etc"], "Error: invalid model id '../../etc'"),
        (["pull", "../x"], "Error: invalid model id '../x': '--' and '..' are not allowed"),
        (["pull", "org/name@bad..rev"], "Error: invalid revision 'bad..rev'"),
        (["pull", "nobody/nothing"], "Error: model 'nobody/nothing' not found"),
        (["pull", f"{TINY_MODEL_ID}@nope"], "Error: revision 'nope' not found"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(capsys, monkeypatch, local_hub, args, expected):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    monkeypatch.chdir(Path(os.environ["HF_HOME"]).parent)  # where ../../etc does not exist
    outcome = cli(capsys, *args)
    assert outcome.code == 1
    assert outcome.err.startswith(expected), outcome.err
    assert outcome.err.count("\n") == 1 and "Traceback" not in outcome.err


def test_unreachable_endpoint_and_broken_config_are_one_line(capsys, monkeypatch):
    from modelmgr.testing import free_port

    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    outcome = cli(capsys, "pull", "org/name")
    assert outcome.code == 1 and outcome.err.count("\n") == 1
    assert f"127.0.0.1:{port}" in outcome.err and "refused" in outcome.err

    Path(os.environ["MODELMGR_CONFIG"]).write_text("[hub\n")
    outcome = cli(capsys, "pull", "org/name")
    assert outcome.code == 1 and outcome.err.count("\n") == 1
    assert "invalid TOML" in outcome.err and "line 1" in outcome.err


def test_usage_errors_exit_2(capsys):
    assert cli(capsys, "pull").code == 2
    assert cli(capsys, "pull", "org/name", "--connections", "0").code == 2
    assert cli(capsys, "no-such-command").code == 2


def test_debug_adds_the_traceback(monkeypatch, local_hub):
    outcome = run_modelmgr("--debug", "pull", "nobody/nothing", env={"HF_ENDPOINT": local_hub.url})
    assert outcome.code == 1
    assert "Traceback" in outcome.err and outcome.err.rstrip().splitlines()[-1].startswith("Error: model 'nobody/nothing'")


def test_pulled_model_loads_with_plain_transformers_and_scan_cache_dir_agrees(capsys, monkeypatch, local_hub):
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    assert cli(capsys, "pull", TINY_MODEL_ID).code == 0
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache_dir())
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == TINY_MODEL_ID and repo.size_on_disk == sum(
        p.stat().st_size for p in RepoPaths(cache_dir(), TINY_MODEL_ID).blobs.iterdir())
    code = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({TINY_MODEL_ID!r}, local_files_only=True)\n"
        f"t = AutoTokenizer.from_pretrained({TINY_MODEL_ID!r}, local_files_only=True)\n"
        "ids = t('hello world', return_tensors='pt').input_ids\n"
        "out = m.generate(ids, max_new_tokens=4, do_sample=False)\n"
        "print('generated', out.shape[1] - ids.shape[1])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_ENDPOINT")
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "generated 4" in completed.stdout


def test_pull_does_not_import_torch(local_hub, tmp_path):
    code = (
        "import sys\n"
        "from modelmgr.cli import main\n"
        "try:\n"
        f"    main(['pull', {TINY_MODEL_ID!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'bitsandbytes', 'huggingface_hub') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], env={**os.environ, "HF_ENDPOINT": local_hub.url},
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "heavy: []" in completed.stdout


def test_a_paginated_tree_listing_is_followed(capsys, monkeypatch, local_hub):
    local_hub.tree_page_size = 2  # 6 files: three pages, linked with Link: <...>; rel="next"
    monkeypatch.setenv("HF_ENDPOINT", local_hub.url)
    outcome = cli(capsys, "pull", TINY_MODEL_ID, "--dry-run", "--json")
    assert outcome.code == 0, outcome.err
    assert {f["path"] for f in json.loads(outcome.out)["files"]} == TINY_FILES
    assert len([r for r in local_hub.requests if "/tree/" in r.path]) == 3
