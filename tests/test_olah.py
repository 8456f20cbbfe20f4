"""modelmgr against olah, a real self-hosted Hub mirror (PyPI ``olah``), as a team would run it.

olah is a server under test, not a dependency: it lives in its own virtual environment,
``.venv-olah`` (``make olah-venv``; ``make test`` builds it). Without it the tests skip on a
developer's machine and fail in CI (``CI=true``), so CI cannot skip them silently.

olah serves local git repositories offline from ``{mirrors-path}/models/{org}/{name}``. The tiny
model is committed there the way git-lfs would commit it: ``model.safetensors`` as an LFS pointer
in git with its content in ``.git/lfs/objects/{oid[:2]}/{oid[2:4]}/{oid}``, which is all olah
reads, so the git-lfs program itself is not needed.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelmgr.testing import TINY_MODEL_ID, free_port, git_blob_sha1

from .helpers import run_modelmgr

ROOT = Path(__file__).resolve().parents[1]
OLAH_VENV = Path(os.environ.get("MODELMGR_OLAH_VENV") or ROOT / ".venv-olah")
OLAH_CLI = OLAH_VENV / "bin" / "olah-cli"
OLAH_VERSION = "0.5.4"
STARTUP_SECONDS = 40
# Files olah 0.5.4 recognises as LFS pointers (it parses git blobs of 120-150 bytes).
LFS_SUFFIXES = (".safetensors", ".bin")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _require(condition: bool, why: str) -> None:
    if condition:
        return
    if _in_ci():
        pytest.fail(f"{why} CI must run the olah tests: `make test` builds .venv-olah (`make olah-venv`).")
    pytest.skip(f"{why} Run `make olah-venv` to run the olah tests.")


@dataclass
class Olah:
    url: str
    commit: str
    files: dict[str, bytes]  # path -> content of the tiny model as committed
    log: Path


def _git(repo: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo.parent),
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "modelmgr tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
        "GIT_COMMITTER_NAME": "modelmgr tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid",
        "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
    }
    done = subprocess.run(["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def mirror_repo(mirrors: Path, repo_id: str, source: Path) -> tuple[str, dict[str, bytes]]:
    """Commit ``source`` as a Hub-style git repo under ``mirrors``; weights as LFS objects."""
    repo = mirrors / "models" / repo_id
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "checkout", "-q", "-b", "main")
    files = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source).as_posix()
        data = path.read_bytes()
        files[relative] = data
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(LFS_SUFFIXES):
            oid = hashlib.sha256(data).hexdigest()
            stored = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_bytes(data)
            target.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (oid.encode(), len(data)))
        else:
            target.write_bytes(data)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "tiny model")
    return _git(repo, "rev-parse", "HEAD"), files


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def olah(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """olah serving the tiny model offline on a free loopback port; stopped at teardown."""
    _require(OLAH_CLI.is_file(), f"no olah at {OLAH_CLI}.")
    _require(shutil.which("git") is not None, "git is not installed (olah serves git repositories).")
    tiny_model_dir: Path = request.getfixturevalue("tiny_model_dir")  # built only when olah can run
    work = tmp_path_factory.mktemp("olah")
    commit, files = mirror_repo(work / "mirrors", TINY_MODEL_ID, tiny_model_dir)
    port = free_port()
    unreachable = f"127.0.0.1:{free_port()}"  # offline: olah must never need the real Hub
    config = work / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'repos-path = "{work / "repos"}"\n'
        f'mirrors-path = ["{work / "mirrors"}"]\n'
        'hf-scheme = "http"\n'
        f'hf-netloc = "{unreachable}"\nhf-lfs-netloc = "{unreachable}"\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "\n[accessibility]\noffline = true\n"
    )
    log = work / "olah.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "*"}
    with open(log, "wb") as output:
        process = subprocess.Popen([str(OLAH_CLI), "-c", str(config)], cwd=work, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"olah exited with {process.returncode} at startup:\n{log.read_text()[-3000:]}")
            try:
                status, _, _ = fetch(f"{url}/api/models/{TINY_MODEL_ID}/revision/main", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"olah did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Olah(url, commit, files, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def refused_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused


def etag_of(path: str, data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if path.endswith(LFS_SUFFIXES) else git_blob_sha1(data)


def test_the_olah_venv_is_the_pinned_version_and_has_no_torch():
    _require(OLAH_CLI.is_file(), f"no olah at {OLAH_CLI}.")
    python = OLAH_VENV / "bin" / "python"
    script = ("import importlib.metadata as m, importlib.util as u; "
              "print(m.version('olah'), u.find_spec('torch') is not None)")
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [OLAH_VERSION, "False"]


def test_olah_answers_in_the_ways_modelmgr_must_live_with(olah):
    """What olah 0.5.4 sends for a local mirror, pinned down so a change in olah shows here."""
    base = f"{olah.url}/{TINY_MODEL_ID}/resolve/{olah.commit}"
    weights, config = olah.files["model.safetensors"], olah.files["config.json"]
    # HEAD carries the Hub's metadata: the commit, and an etag that is the sha256 of an LFS
    # file's content or a git file's blob sha1 (unquoted, unlike huggingface.co).
    status, headers, _ = fetch(f"{base}/model.safetensors", "HEAD")
    assert status == 200 and headers["x-repo-commit"] == olah.commit
    assert headers["etag"] == hashlib.sha256(weights).hexdigest() and headers["content-length"] == str(len(weights))
    status, headers, _ = fetch(f"{base}/config.json", "HEAD")
    assert status == 200 and headers["etag"] == git_blob_sha1(config)
    # GET streams the content with none of that: no X-Repo-Commit, no ETag, no Content-Length,
    # and a Range header is ignored (200 with the whole file).
    status, headers, body = fetch(f"{base}/config.json", headers={"Range": "bytes=10-"})
    assert status == 200 and body == config
    assert "x-repo-commit" not in headers and "etag" not in headers and "content-length" not in headers
    # A file the repo does not have: HEAD at a commit says 404 EntryNotFound as the Hub does, but
    # at a branch 401 RepoNotFound, and GET fails with a 500 (olah's KeyError).
    status, headers, _ = fetch(f"{base}/tokenizer.model", "HEAD")
    assert (status, headers.get("x-error-code")) == (404, "EntryNotFound")
    status, headers, _ = fetch(f"{olah.url}/{TINY_MODEL_ID}/resolve/main/tokenizer.model", "HEAD")
    assert (status, headers.get("x-error-code")) == (401, "RepoNotFound")
    assert fetch(f"{base}/tokenizer.model")[0] == 500
    # Repo info without a revision, and an unknown revision: 401 RepoNotFound (the Hub: 200, and
    # 404 RevisionNotFound).
    assert fetch(f"{olah.url}/api/models/{TINY_MODEL_ID}")[0] == 401
    status, headers, _ = fetch(f"{olah.url}/api/models/{TINY_MODEL_ID}/revision/no-such-branch")
    assert (status, headers.get("x-error-code")) == (401, "RepoNotFound")
    # The tree answers under a trailing slash; without one, a same-host 307 redirect.
    status, headers, _ = fetch(f"{olah.url}/api/models/{TINY_MODEL_ID}/tree/{olah.commit}?recursive=true&expand=false")
    assert status == 307 and headers["location"].startswith(f"{olah.url}/api/models/{TINY_MODEL_ID}/tree/{olah.commit}/")
    status, _, body = fetch(f"{olah.url}/api/models/{TINY_MODEL_ID}/tree/{olah.commit}/?recursive=true&expand=false")
    listed = {entry["path"]: entry for entry in json.loads(body)}
    assert status == 200 and set(listed) == set(olah.files)
    assert listed["model.safetensors"]["lfs"]["oid"] == hashlib.sha256(weights).hexdigest()
    assert listed["config.json"]["oid"] == git_blob_sha1(config)


def test_modelmgr_resolves_and_plans_through_olah_after_the_first_endpoint_refuses(olah, tmp_path):
    refused = refused_endpoint()
    outcome = run_modelmgr("pull", TINY_MODEL_ID, "--dry-run", "--endpoint", refused, "--endpoint", olah.url, timeout=60)
    assert outcome.code == 0, outcome.err
    assert f"{refused}: connection to 127.0.0.1:{refused.rsplit(':', 1)[1]} refused; trying the next endpoint" in outcome.err
    assert f"Would fetch {len(olah.files)} of {len(olah.files)} files" in outcome.out
    outcome = run_modelmgr("pull", TINY_MODEL_ID, "--dry-run", "--json", "--endpoint", refused, "--endpoint", olah.url, timeout=60)
    assert outcome.code == 0, outcome.err
    plan = json.loads(outcome.out)
    assert plan["commit"] == olah.commit
    planned = {f["path"]: f for f in plan["files"]}
    assert set(planned) == set(olah.files)
    for path, entry in planned.items():
        assert (entry["size"], entry["etag"]) == (len(olah.files[path]), etag_of(path, olah.files[path])), path


def test_modelmgr_pulls_the_tiny_model_through_olah_after_the_first_endpoint_refuses(olah, tmp_path):
    cache = tmp_path / "hub"
    outcome = run_modelmgr("pull", TINY_MODEL_ID, "--endpoint", refused_endpoint(), "--endpoint", olah.url,
                           env={"HF_HUB_CACHE": str(cache)}, timeout=60)
    assert outcome.code == 0, outcome.err
    snapshot = cache / f"models--{TINY_MODEL_ID.replace('/', '--')}" / "snapshots" / olah.commit
    assert {p.name for p in snapshot.iterdir()} == set(olah.files)
    for path, data in olah.files.items():
        blob = (snapshot / path).resolve()
        assert blob.read_bytes() == data and blob.name == etag_of(path, data), path
    outcome = run_modelmgr("verify", TINY_MODEL_ID, env={"HF_HUB_CACHE": str(cache)}, timeout=60)
    assert outcome.code == 0, outcome.out + outcome.err
    # The snapshot is what transformers loads: its safetensors header parses.
    safetensors = pytest.importorskip("safetensors")
    with safetensors.safe_open(str(snapshot / "model.safetensors"), framework="numpy") as weights:
        assert list(weights.keys())
