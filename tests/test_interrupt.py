"""Ctrl-C during a pull: it stops promptly, says so with exit code 130, and keeps what resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from modelmgr.cache.layout import RepoPaths

from .helpers import cli, hf_cache, small_repo

REPO = "org/interrupted"
SIZE = 24 * 1024 * 1024


def test_ctrl_c_stops_the_pull_promptly_and_the_next_one_resumes(capsys, monkeypatch, hub_factory, tmp_path):
    hub = hub_factory()
    hub.add_repo(REPO, small_repo(tmp_path / "repo", weights=SIZE, seed=21))
    hub.set_rate_limit(2_000_000)  # 12 s for the whole file on one connection
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    process = subprocess.Popen([sys.executable, "-m", "modelmgr", "pull", REPO, "--connections", "1"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    paths = RepoPaths(hf_cache(), REPO)
    deadline = time.monotonic() + 20
    while not list(paths.blobs.glob("*.incomplete")) or list(paths.blobs.glob("*.incomplete"))[0].stat().st_size < 2_000_000:
        assert time.monotonic() < deadline and process.poll() is None, "the pull never got going"
        time.sleep(0.05)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert time.monotonic() - interrupted < 8, "Ctrl-C waited for the download to finish"
    assert err.strip().splitlines()[-1].startswith("Interrupted.")
    (state,) = (paths.root / ".modelmgr" / "partial").glob("*.json")
    kept = sum(done for _, _, done in json.loads(state.read_text())["parts"])
    assert kept > 0

    hub.set_rate_limit(None)
    hub.clear_requests()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    ranges = [r.headers.get("range", "") for r in hub.requests if r.path.endswith("/model.safetensors") and r.method == "GET"]
    assert ranges and all(r.startswith("bytes=") and int(r[6:].split("-")[0]) >= kept for r in ranges), ranges
