"""THE FIDELITY TEST: huggingface_hub and transformers, unmodified, download and run from the local Hub.

They run in a fresh interpreter because both read HF_ENDPOINT and HF_HUB_CACHE once, at import.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from modelmgr.testing import TINY_MODEL_ID

CLIENT = r"""
import json, os, sys
from huggingface_hub import hf_hub_download, snapshot_download
from transformers import AutoModelForCausalLM, AutoTokenizer

repo, report = sys.argv[1], {}
report["snapshot"] = snapshot_download(repo, cache_dir=os.environ["HF_HUB_CACHE"])
report["tagged"] = hf_hub_download(repo, "README.md", revision="v1.0", cache_dir=os.environ["HF_HUB_CACHE"])

def chat(**kwargs):
    tokenizer = AutoTokenizer.from_pretrained(repo, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(repo, **kwargs)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the water is"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**prompt, max_new_tokens=10, do_sample=False)
    return output[0][prompt["input_ids"].shape[1]:].tolist()

report["offline_tokens"] = chat(local_files_only=True)  # from what snapshot_download cached
report["online_tokens"] = chat(cache_dir=os.environ["SECOND_CACHE"])  # probes the Hub for optional files
print(json.dumps(report))
"""

OPTIONAL_FILES = {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"}


def test_huggingface_hub_and_transformers_run_against_the_local_hub(local_hub, tiny_model_dir, tmp_path):
    tagged = shutil.copytree(tiny_model_dir, tmp_path / "tagged")
    (tagged / "README.md").write_text("# tagged\n")
    tag_commit = local_hub.add_repo(TINY_MODEL_ID, tagged, revision="v1.0", tag=True)
    main_commit = local_hub.commit(TINY_MODEL_ID)
    cache, second_cache = tmp_path / "cache", tmp_path / "second-cache"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_ENDPOINT": local_hub.url,
        "HF_HUB_CACHE": str(cache),
        "SECOND_CACHE": str(second_cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    run = subprocess.run([sys.executable, "-c", CLIENT, TINY_MODEL_ID], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])

    repo_dir = cache / "models--modelmgr-test--tiny-llama"
    assert Path(report["snapshot"]) == repo_dir / "snapshots" / main_commit
    for source in tiny_model_dir.iterdir():
        assert (Path(report["snapshot"]) / source.name).read_bytes() == source.read_bytes()
    assert Path(report["tagged"]).read_text() == "# tagged\n"
    assert (repo_dir / "refs" / "main").read_text() == main_commit
    assert (repo_dir / "refs" / "v1.0").read_text() == tag_commit
    # Blobs are named by the etags the Hub announced: sha256 for LFS files, git blob ids for the rest.
    tagged_readme = local_hub.files(TINY_MODEL_ID, "v1.0")["README.md"].etag
    etags = {f.etag for f in local_hub.files(TINY_MODEL_ID).values()} | {tagged_readme}
    assert {p.name for p in (repo_dir / "blobs").iterdir()} == etags

    assert len(report["offline_tokens"]) >= 1
    assert report["online_tokens"] == report["offline_tokens"]

    # Every miss transformers probed for was a clean EntryNotFound, which huggingface_hub remembers.
    misses = [r for r in local_hub.requests if r.status not in (200, 302)]
    # The weights came the way huggingface.co serves them: a 302 from the Hub, bytes from the CDN.
    assert {r.status for r in local_hub.requests if r.path.endswith("/model.safetensors")} == {302}
    assert local_hub.cdn is not None and any(r.path.endswith("/model.safetensors") for r in local_hub.cdn.requests)
    assert {r.path.rsplit("/", 1)[-1] for r in misses} <= OPTIONAL_FILES | {"additional_chat_templates"}
    assert {r.status for r in misses} == {404}
    no_exist = second_cache / "models--modelmgr-test--tiny-llama" / ".no_exist" / main_commit
    assert {p.name for p in no_exist.iterdir()} == OPTIONAL_FILES
    assert all(r.path != "/api/agent-harnesses" for r in local_hub.requests)

