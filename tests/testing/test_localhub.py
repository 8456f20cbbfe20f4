"""The local Hub answers the way huggingface.co does, checked with plain HTTP."""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import time

import pytest

from modelmgr.testing import LocalHub, git_blob_sha1

API = "/api/models/org/small"
RESOLVE = "/org/small/resolve"


def test_revision_info_lists_the_commit_and_files(hub, fetch, small_repo_dir):
    reply = fetch(f"{hub.url}{API}/revision/main")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    info = reply.json()
    assert info["id"] == "org/small"
    assert info["sha"] == hub.commit("org/small")
    assert info["private"] is False
    files = sorted(p.relative_to(small_repo_dir).as_posix() for p in small_repo_dir.rglob("*") if p.is_file())
    assert sorted(s["rfilename"] for s in info["siblings"]) == files


def test_info_without_revision_is_the_default_branch(hub, fetch):
    assert fetch(f"{hub.url}{API}").json()["sha"] == hub.commit("org/small")
    head = fetch(f"{hub.url}{API}", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 0


def test_revision_may_be_a_tag_a_commit_or_an_encoded_branch(hub, fetch, small_repo_dir, tmp_path):
    other = shutil.copytree(small_repo_dir, tmp_path / "pr")
    (other / "config.json").write_text('{"model_type": "mistral"}\n')
    pr_commit = hub.add_repo("org/small", other, revision="refs/pr/1")
    main = hub.commit("org/small")
    assert pr_commit != main
    assert hub.add_tag("org/small", "v1.0") == main

    assert fetch(f"{hub.url}{API}/revision/refs%2Fpr%2F1").json()["sha"] == pr_commit
    assert fetch(f"{hub.url}{API}/revision/v1.0").json()["sha"] == main
    assert fetch(f"{hub.url}{API}/revision/{pr_commit}").json()["sha"] == pr_commit
    assert fetch(f"{hub.url}{RESOLVE}/refs%2Fpr%2F1/config.json").body == b'{"model_type": "mistral"}\n'
    refs = fetch(f"{hub.url}{API}/refs?include_prs=1").json()
    assert [b["name"] for b in refs["branches"]] == ["main"]
    assert [(t["name"], t["targetCommit"]) for t in refs["tags"]] == [("v1.0", main)]
    assert [p["name"] for p in refs["pullRequests"]] == ["refs/pr/1"]


def test_commit_depends_only_on_repo_revision_and_content(small_repo_dir, tmp_path):
    first, second = LocalHub(), LocalHub()
    commit = first.add_repo("org/small", small_repo_dir)
    assert second.add_repo("org/small", shutil.copytree(small_repo_dir, tmp_path / "copy")) == commit
    assert first.add_repo("org/small", small_repo_dir) == commit
    assert first.add_repo("org/other", small_repo_dir) != commit
    (small_repo_dir / "README.md").write_text("# changed\n")
    assert first.add_repo("org/small", small_repo_dir) != commit


def test_errors_carry_the_hub_error_codes(hub, fetch):
    missing_repo = fetch(f"{hub.url}/api/models/org/nope/revision/main")
    assert missing_repo.status == 404 and missing_repo.headers["x-error-code"] == "RepoNotFound"
    assert "error" in missing_repo.json()
    assert fetch(f"{hub.url}/org/nope/resolve/main/config.json").headers["x-error-code"] == "RepoNotFound"

    missing_revision = fetch(f"{hub.url}{API}/revision/nope")
    assert missing_revision.status == 404 and missing_revision.headers["x-error-code"] == "RevisionNotFound"
    assert fetch(f"{hub.url}{RESOLVE}/nope/config.json").headers["x-error-code"] == "RevisionNotFound"

    for method in ("GET", "HEAD"):
        missing_file = fetch(f"{hub.url}{RESOLVE}/main/tokenizer.model", method=method)
        assert missing_file.status == 404
        assert missing_file.headers["x-error-code"] == "EntryNotFound"
        assert missing_file.headers["x-repo-commit"] == hub.commit("org/small")


@pytest.mark.parametrize("path", ["/api/agent-harnesses", "/api/whatever/else", "/", "/org/small", "/api/datasets"])
def test_unknown_paths_answer_json_404(hub, fetch, path):
    reply = fetch(f"{hub.url}{path}")
    assert reply.status == 404
    assert "error" in reply.json()


def test_tree_lists_one_folder_or_everything(hub, fetch, small_repo_dir):
    top = fetch(f"{hub.url}{API}/tree/main").json()
    assert [(e["type"], e["path"]) for e in top] == [
        ("file", "README.md"), ("file", "config.json"), ("file", "model.safetensors"), ("directory", "sub"),
    ]
    everything = fetch(f"{hub.url}{API}/tree/main?recursive=true&expand=false").json()
    assert [e["path"] for e in everything] == [
        "README.md", "config.json", "model.safetensors", "sub", "sub/deeper", "sub/deeper/data.txt", "sub/notes.txt",
    ]
    # huggingface_hub sends the folder percent-encoded as one segment.
    for folder in ("sub%2Fdeeper", "sub/deeper"):
        assert [e["path"] for e in fetch(f"{hub.url}{API}/tree/main/{folder}").json()] == ["sub/deeper/data.txt"]
    assert fetch(f"{hub.url}{API}/tree/main/sub?recursive=1").json()[0]["path"] == "sub/deeper"

    missing = fetch(f"{hub.url}{API}/tree/main/additional_chat_templates")
    assert missing.status == 404 and missing.headers["x-error-code"] == "EntryNotFound"


def test_tree_entries_have_git_and_lfs_ids(hub, fetch, small_repo_dir):
    entries = {e["path"]: e for e in fetch(f"{hub.url}{API}/tree/main?recursive=true").json()}
    config = (small_repo_dir / "config.json").read_bytes()
    assert entries["config.json"] == {"type": "file", "path": "config.json", "size": len(config),
                                      "oid": git_blob_sha1(config)}
    weights = (small_repo_dir / "model.safetensors").read_bytes()
    sha256 = hashlib.sha256(weights).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(weights)}\n".encode()
    assert entries["model.safetensors"]["oid"] == git_blob_sha1(pointer)
    assert entries["model.safetensors"]["lfs"] == {"oid": sha256, "size": len(weights), "pointerSize": len(pointer)}
    # Over the threshold (2 KB in this fixture) a text file goes to LFS too.
    assert "lfs" in entries["sub/deeper/data.txt"]
    assert entries["sub"]["type"] == "directory" and len(entries["sub"]["oid"]) == 40
    expanded = fetch(f"{hub.url}{API}/tree/main?expand=true").json()
    assert all(e["lastCommit"]["id"] == hub.commit("org/small") for e in expanded)


def test_tree_pages_follow_the_link_header(hub, fetch):
    hub.tree_page_size = 2
    url, paths, pages = f"{hub.url}{API}/tree/main?recursive=true&expand=false", [], 0
    while url:
        reply = fetch(url)
        pages += 1
        paths += [e["path"] for e in reply.json()]
        link = reply.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
        if link:
            assert link.endswith('rel="next"') and "cursor=" in link and "recursive=true" in link
    assert pages == 4
    assert paths == sorted(paths) and len(paths) == len(set(paths)) == 7


def test_resolve_headers_for_git_and_lfs_files(hub, fetch, small_repo_dir):
    config = (small_repo_dir / "config.json").read_bytes()
    head = fetch(f"{hub.url}{RESOLVE}/main/config.json", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["etag"] == f'"{git_blob_sha1(config)}"'
    assert head.headers["x-repo-commit"] == hub.commit("org/small")
    assert head.headers["content-length"] == str(len(config))
    assert head.headers["accept-ranges"] == "bytes"
    assert "x-linked-etag" not in head.headers
    assert fetch(f"{hub.url}{RESOLVE}/main/config.json").body == config

    weights = (small_repo_dir / "model.safetensors").read_bytes()
    lfs = fetch(f"{hub.url}{RESOLVE}/main/model.safetensors", method="HEAD")
    sha256 = hashlib.sha256(weights).hexdigest()
    assert lfs.headers["x-linked-etag"] == lfs.headers["etag"] == f'"{sha256}"'
    assert lfs.headers["x-linked-size"] == lfs.headers["content-length"] == str(len(weights))
    assert fetch(f"{hub.url}{RESOLVE}/main/model.safetensors").body == weights
    commit = hub.commit("org/small")
    assert fetch(f"{hub.url}{RESOLVE}/{commit}/sub/deeper/data.txt").body == b"x" * 3000


@pytest.mark.parametrize(
    ("range_header", "first", "last"),
    [
        ("bytes=10-", 10, 99_999),
        ("bytes=10-19", 10, 19),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=99990-200000", 99_990, 99_999),
    ],
)
def test_range_requests_answer_206(hub, fetch, small_repo_dir, range_header, first, last):
    weights = (small_repo_dir / "model.safetensors").read_bytes()
    reply = fetch(f"{hub.url}{RESOLVE}/main/model.safetensors", headers={"Range": range_header})
    assert reply.status == 206
    assert reply.headers["content-range"] == f"bytes {first}-{last}/100000"
    assert reply.body == weights[first : last + 1]
    assert reply.headers["x-repo-commit"] == hub.commit("org/small")


def test_unsatisfiable_range_answers_416(hub, fetch):
    reply = fetch(f"{hub.url}{RESOLVE}/main/model.safetensors", headers={"Range": "bytes=100000-"})
    assert reply.status == 416
    assert reply.headers["content-range"] == "bytes */100000"


def test_malformed_or_multiple_ranges_get_the_whole_file(hub, fetch):
    for header in ("bytes=a-b", "bytes=0-1,5-6", "items=0-1", "bytes=9-3"):
        reply = fetch(f"{hub.url}{RESOLVE}/main/config.json", headers={"Range": header})
        assert reply.status == 200, header


def test_connections_are_kept_alive(hub):
    connection = http.client.HTTPConnection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]), timeout=5)
    try:
        for path in (f"{RESOLVE}/main/config.json", f"{API}/revision/main", f"{RESOLVE}/main/nope.txt"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert not response.will_close
    finally:
        connection.close()
    ports = {r.headers.get("host") for r in hub.requests}
    assert len(ports) == 1


def test_datasets_have_their_own_urls(hub, fetch, small_repo_dir):
    commit = hub.add_repo("org/data", small_repo_dir, repo_type="dataset")
    assert fetch(f"{hub.url}/api/datasets/org/data/revision/main").json()["sha"] == commit
    assert "modelId" not in fetch(f"{hub.url}/api/datasets/org/data").json()
    assert fetch(f"{hub.url}/datasets/org/data/resolve/main/README.md").body == b"# small\n"
    assert fetch(f"{hub.url}/api/datasets/org/data/tree/main").status == 200
    assert fetch(f"{hub.url}/api/models/org/data/revision/main").status == 404
    assert fetch(f"{hub.url}/org/data/resolve/main/README.md").status == 404


def test_private_repos_need_the_token(hub, fetch, small_repo_dir):
    hub.add_repo("org/public", small_repo_dir)
    hub.require_token("secret", repos=["org/small"])
    anonymous = fetch(f"{hub.url}{RESOLVE}/main/config.json", method="HEAD")
    assert anonymous.status == 401 and anonymous.headers["x-error-code"] == "RepoNotFound"
    wrong = fetch(f"{hub.url}{API}/revision/main", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and "x-error-code" not in wrong.headers
    allowed = fetch(f"{hub.url}{API}/revision/main", headers={"Authorization": "Bearer secret"})
    assert allowed.status == 200 and allowed.json()["private"] is True
    assert fetch(f"{hub.url}/api/models/org/public/revision/main").status == 200
    assert fetch(f"{hub.url}/api/whoami-v2", headers={"Authorization": "Bearer secret"}).json()["name"]
    assert fetch(f"{hub.url}/api/whoami-v2").status == 401


def test_requests_are_recorded_with_status(hub, fetch):
    fetch(f"{hub.url}{API}/tree/main?recursive=true", headers={"X-Custom": "1"})
    fetch(f"{hub.url}{RESOLVE}/main/missing.bin", method="HEAD")
    first, second = hub.requests
    assert (first.method, first.path, first.query, first.status) == ("GET", f"{API}/tree/main", "recursive=true", 200)
    assert first.headers["x-custom"] == "1" and first.params == {"recursive": ["true"]}
    assert (second.method, second.status) == ("HEAD", 404)
    hub.clear_requests()
    assert hub.requests == []


def test_stop_closes_open_connections_and_restart_keeps_the_port(hub, fetch):
    url = hub.url
    connection = http_connection(hub)
    connection.request("GET", f"{API}/revision/main")
    connection.getresponse().read()
    hub.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        connection.request("GET", f"{API}/revision/main")
        connection.getresponse().read()
    with pytest.raises(ConnectionRefusedError):
        fetch(f"{url}{API}/revision/main")
    hub.start()
    assert hub.url == url
    assert fetch(f"{url}{API}/revision/main").status == 200


def http_connection(hub: LocalHub) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", int(hub.url.rsplit(":", 1)[1]), timeout=5)


def test_large_files_stream_from_disk(hub, fetch, tmp_path):
    folder = tmp_path / "large"
    folder.mkdir()
    data = os.urandom(6 * 1024 * 1024)
    (folder / "weights.bin").write_bytes(data)
    hub.add_repo("org/large", folder)
    assert fetch(f"{hub.url}/org/large/resolve/main/weights.bin").body == data
    tail = fetch(f"{hub.url}/org/large/resolve/main/weights.bin", headers={"Range": "bytes=5000000-"})
    assert tail.body == data[5_000_000:]


def test_rate_limit_caps_body_throughput(hub, fetch):
    hub.set_rate_limit(500_000)
    began = time.monotonic()
    assert len(fetch(f"{hub.url}{RESOLVE}/main/model.safetensors").body) == 100_000
    assert time.monotonic() - began >= 0.18
    hub.set_rate_limit(None)


def test_add_repo_rejects_bad_arguments(tmp_path):
    hub = LocalHub()
    with pytest.raises(ValueError, match="not a folder"):
        hub.add_repo("org/x", tmp_path / "missing")
    with pytest.raises(ValueError, match="repo id"):
        hub.add_repo("a/b/c", tmp_path)
    with pytest.raises(ValueError, match="Valid types"):
        hub.add_repo("org/x", tmp_path, repo_type="bucket")
    with pytest.raises(RuntimeError, match="not started"):
        hub.url


def test_huggingface_hub_client_reads_every_answer(hub, small_repo_dir):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=False)
    info = api.model_info("org/small", files_metadata=True)
    assert info.sha == hub.commit("org/small")
    sizes = {s.rfilename: s.size for s in info.siblings}
    assert sizes["model.safetensors"] == 100_000
    assert {s.rfilename: s.lfs is not None for s in info.siblings}["sub/deeper/data.txt"]
    tree = list(api.list_repo_tree("org/small", path_in_repo="sub", recursive=True))
    assert [f.path for f in tree] == ["sub/deeper", "sub/deeper/data.txt", "sub/notes.txt"]
    assert sorted(api.list_repo_files("org/small")) == sorted(
        p.relative_to(small_repo_dir).as_posix() for p in small_repo_dir.rglob("*") if p.is_file()
    )
    paths = api.get_paths_info("org/small", ["config.json", "sub", "missing"])
    assert [(type(p).__name__, p.path) for p in paths] == [("RepoFile", "config.json"), ("RepoFolder", "sub")]
    hub.add_tag("org/small", "v1")
    refs = api.list_repo_refs("org/small")
    assert [t.name for t in refs.tags] == ["v1"]
    assert api.file_exists("org/small", "config.json") and not api.file_exists("org/small", "nope.json")
    assert api.revision_exists("org/small", "v1") and not api.revision_exists("org/small", "v2")
    assert not api.repo_exists("org/nope")


def test_client_disconnects_do_not_break_the_server(hub, fetch, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    hub.add_repo("org/big", folder)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", int(hub.url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"GET /org/big/resolve/main/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.recv(1000)
    garbage = socket.create_connection(("127.0.0.1", int(hub.url.rsplit(":", 1)[1])))
    garbage.sendall(b"NONSENSE\r\n\r\n")
    garbage.recv(1000)
    garbage.close()
    assert fetch(f"{hub.url}{API}/revision/main").status == 200
    assert not hub.errors
