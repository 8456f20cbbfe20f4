"""Pulling GGUF repos from a loopback Hub: one quantization per pull, by tag or by the default rule."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from modelmgr.cache.layout import RepoPaths
from modelmgr.testing import TINY_GGUF_ID, TINY_MODEL_ID

from .helpers import cli, hf_cache

pytest.importorskip("gguf", reason="the tiny GGUF builder needs the gguf package: pip install 'modelmgr[test]'")


def file_gets(hub) -> list[str]:
    return sorted(r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path)


def snapshot_files(hub, repo_id: str = TINY_GGUF_ID) -> set[str]:
    return {p.name for p in RepoPaths(hf_cache(), repo_id).snapshot(hub.commit(repo_id)).iterdir()}


@pytest.mark.parametrize("tag", ["Q4_0", "q4_0"])
def test_a_tag_pulls_exactly_that_file(capsys, gguf_hub, tag) -> None:
    outcome = cli(capsys, "pull", f"{TINY_GGUF_ID}:{tag}", "--endpoint", gguf_hub.url)
    assert outcome.code == 0, outcome.err
    assert snapshot_files(gguf_hub) == {"tiny-llama-Q4_0.gguf"}
    assert file_gets(gguf_hub) == ["tiny-llama-Q4_0.gguf"]


def test_a_tag_with_a_revision(capsys, gguf_hub) -> None:
    commit = gguf_hub.commit(TINY_GGUF_ID)
    outcome = cli(capsys, "pull", f"{TINY_GGUF_ID}:Q8_0@{commit}", "--endpoint", gguf_hub.url, "--json")
    assert outcome.code == 0, outcome.err
    assert [f["path"] for f in json.loads(outcome.out)["files"]] == ["tiny-llama-Q8_0.gguf"]


def test_untagged_pull_takes_one_quantization_and_dry_run_says_why(capsys, gguf_hub) -> None:
    dry = cli(capsys, "pull", TINY_GGUF_ID, "--endpoint", gguf_hub.url, "--dry-run")
    assert dry.code == 0, dry.err
    # No Q4_K_M here: Q4_0 (4.5 bits per weight) is the nearest to its 4.85, and fits.
    assert "GGUF quantization Q4_0: no Q4_K_M in the repo; the nearest to it that fits in" in dry.out
    assert "also in the repo: F16, Q8_0; pick one with :QUANT" in dry.out
    assert "tiny-llama-Q4_0.gguf" in dry.out and "Q8_0.gguf" not in dry.out.split("also in")[1].split("\n", 1)[1]
    assert file_gets(gguf_hub) == []

    outcome = cli(capsys, "pull", TINY_GGUF_ID, "--endpoint", gguf_hub.url)
    assert outcome.code == 0, outcome.err
    assert snapshot_files(gguf_hub) == {"tiny-llama-Q4_0.gguf"}
    assert "GGUF quantization Q4_0" in outcome.err + outcome.out


def test_q4_k_m_is_the_default_when_present(capsys, hub_factory, tiny_gguf_dir, tmp_path) -> None:
    # Only the names matter to the choice; the bytes are the Q4_0 file's.
    repo = tmp_path / "repo"
    repo.mkdir()
    for quant in ("Q8_0", "Q4_K_M", "Q4_0"):
        shutil.copy(tiny_gguf_dir / "tiny-llama-Q4_0.gguf", repo / f"Tiny-{quant}.gguf")
    hub = hub_factory()
    hub.add_repo("org/tiny-GGUF", repo)
    dry = cli(capsys, "pull", "org/tiny-GGUF", "--endpoint", hub.url, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    result = json.loads(dry.out)
    assert [f["path"] for f in result["files"]] == ["Tiny-Q4_K_M.gguf"]
    assert result["note"].startswith("GGUF quantization Q4_K_M: the default quantization")


def test_an_unsloth_tag_pulls_its_file_and_is_found_cached(capsys, hub_factory, tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("gpt-oss-20b-UD-Q4_K_XL.gguf", "gpt-oss-20b-Q4_K.gguf", "gpt-oss-20b-F16.gguf"):
        (repo / name).write_bytes(b"GGUF" + name.encode())  # names decide the choice; nothing is loaded
    hub = hub_factory()
    hub.add_repo("org/oss-GGUF", repo)
    outcome = cli(capsys, "pull", "org/oss-GGUF:ud-q4_k_xl", "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert snapshot_files(hub, "org/oss-GGUF") == {"gpt-oss-20b-UD-Q4_K_XL.gguf"}
    again = cli(capsys, "pull", "org/oss-GGUF:UD-Q4_K_XL", "--offline", "--json")
    assert again.code == 0, again.err
    found = json.loads(again.out)  # found in the cache by the tag, with the network off
    assert found["downloaded_files"] == 0 and (Path(found["path"]) / "gpt-oss-20b-UD-Q4_K_XL.gguf").is_file()
    missing = cli(capsys, "pull", "org/oss-GGUF:Q4_K_XL", "--endpoint", hub.url)
    assert missing.code != 0 and "has no Q4_K_XL GGUF file" in missing.err and "Did you mean org/oss-GGUF:UD-Q4_K_XL?" in missing.err


def test_split_files_come_together(capsys, hub_factory, tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q2_K.gguf", "mmproj-m-f16.gguf"):
        (repo / name).write_bytes(b"GGUF" + name.encode())  # names decide the choice; nothing is loaded
    hub = hub_factory()
    hub.add_repo("org/split-GGUF", repo)
    outcome = cli(capsys, "pull", "org/split-GGUF:Q8_0", "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert snapshot_files(hub, "org/split-GGUF") == {"m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"}


def test_include_still_overrides(capsys, gguf_hub) -> None:
    outcome = cli(capsys, "pull", TINY_GGUF_ID, "--endpoint", gguf_hub.url, "--include", "*.gguf")
    assert outcome.code == 0, outcome.err
    assert snapshot_files(gguf_hub) == {"tiny-llama-F16.gguf", "tiny-llama-Q8_0.gguf", "tiny-llama-Q4_0.gguf"}


def test_an_unknown_tag_lists_the_quantizations(capsys, gguf_hub) -> None:
    outcome = cli(capsys, "pull", f"{TINY_GGUF_ID}:Q5_K_M", "--endpoint", gguf_hub.url)
    assert outcome.code == 1
    assert outcome.err.strip().splitlines() == [
        f"Error: {TINY_GGUF_ID} has no Q5_K_M GGUF file. Quantizations it has: F16, Q8_0, Q4_0. Write {TINY_GGUF_ID}:QUANT with one of them."
    ]


def test_a_repo_with_both_pulls_safetensors_unless_tagged(capsys, hub_factory, tiny_model_dir, tiny_gguf_dir, tmp_path) -> None:
    repo = tmp_path / "both"
    shutil.copytree(tiny_model_dir, repo)
    shutil.copy(tiny_gguf_dir / "tiny-llama-Q8_0.gguf", repo)
    hub = hub_factory()
    hub.add_repo(TINY_MODEL_ID, repo)
    assert cli(capsys, "pull", TINY_MODEL_ID, "--endpoint", hub.url).code == 0
    files = snapshot_files(hub, TINY_MODEL_ID)
    assert "model.safetensors" in files and not any(name.endswith(".gguf") for name in files)
    hub.clear_requests()
    assert cli(capsys, "pull", f"{TINY_MODEL_ID}:Q8_0", "--endpoint", hub.url).code == 0
    assert file_gets(hub) == ["tiny-llama-Q8_0.gguf"]


def test_list_and_show_name_format_and_quantization(capsys, gguf_hub) -> None:
    assert cli(capsys, "pull", f"{TINY_GGUF_ID}:Q8_0", "--endpoint", gguf_hub.url).code == 0
    assert cli(capsys, "pull", f"{TINY_GGUF_ID}:Q4_0", "--endpoint", gguf_hub.url).code == 0
    listing = cli(capsys, "list")
    assert listing.out.splitlines()[0].split()[-1] == "FORMAT"
    assert "gguf Q4_0,Q8_0" in listing.out
    rows = json.loads(cli(capsys, "list", "--json").out)
    assert [(row["format"], row["quantizations"]) for row in rows] == [("gguf", ["Q4_0", "Q8_0"])]

    shown = cli(capsys, "show", f"{TINY_GGUF_ID}:Q8_0", "--offline", "--json")
    assert shown.code == 0, shown.err
    info = json.loads(shown.out)
    assert (info["format"], info["quantization"], info["architecture"], info["context_length"]) == ("gguf", "Q8_0", "llama", 512)
    assert (info["tokenizer_model"], info["has_chat_template"], info["weight_files"]) == ("gpt2", True, ["tiny-llama-Q8_0.gguf"])
    assert info["parameters"] == 147776 and info["parameter_source"] == "GGUF header"
    text = cli(capsys, "show", f"{TINY_GGUF_ID}:Q4_0", "--offline").out
    assert "Quantization  Q4_0" in text.replace("   ", "  ") or "Q4_0" in text
    assert "Chat template" in text and "Format" in text


def test_a_cached_quantization_is_not_another(capsys, gguf_hub) -> None:
    assert cli(capsys, "pull", f"{TINY_GGUF_ID}:Q8_0", "--endpoint", gguf_hub.url).code == 0
    gguf_hub.clear_requests()
    # show pulls what is missing: Q4_0 of the same commit, not the cached Q8_0.
    shown = cli(capsys, "show", f"{TINY_GGUF_ID}:Q4_0", "--endpoint", gguf_hub.url, "--json")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["quantization"] == "Q4_0"
    assert file_gets(gguf_hub) == ["tiny-llama-Q4_0.gguf"]
