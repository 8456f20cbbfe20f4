"""Each fault does what it says, seen from plain sockets and from huggingface_hub itself."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from pathlib import Path

import pytest

from modelmgr.testing import (
    BadEtag,
    BadSize,
    FlipByte,
    Hangup,
    HostileTree,
    HtmlPage,
    IgnoreRange,
    LocalHub,
    RedirectTo,
    ResetMidBody,
    ShortBody,
    Stall,
    Status,
    free_port,
)
from modelmgr.testing.faults import HOSTILE_PATHS

WEIGHTS = "/org/small/resolve/main/model.safetensors"
INFO = "/api/models/org/small/revision/main"


def raw_get(hub: LocalHub, path: str, timeout: float = 5) -> tuple[int, int, bytes]:
    """GET on a raw socket: (declared Content-Length, status, body bytes received before the end)."""
    port = int(hub.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(headers["Content-Length"]), int(lines[0].split()[1]), body


def test_reset_mid_body_sends_part_then_resets(hub):
    hub.add_fault(ResetMidBody(1000), path="*/model.safetensors")
    declared, status, body = raw_get(hub, WEIGHTS)
    assert (declared, status) == (100_000, 200)
    assert len(body) <= 1000
    # Consumed: the next request is served whole.
    assert len(raw_get(hub, WEIGHTS)[2]) == 100_000


def test_short_body_closes_before_the_declared_length(hub, fetch):
    hub.add_fault(ShortBody(10), path=WEIGHTS)
    with pytest.raises(http.client.IncompleteRead) as error:
        fetch(f"{hub.url}{WEIGHTS}")
    assert len(error.value.partial) == 100_000 - 10


def test_status_answers_instead_for_the_given_number_of_times(hub, fetch):
    rule = hub.add_fault(Status(429, {"Retry-After": "1"}), path="*/revision/*", times=2)
    for _ in range(2):
        reply = fetch(f"{hub.url}{INFO}")
        assert (reply.status, reply.headers["retry-after"]) == (429, "1")
    assert fetch(f"{hub.url}{INFO}").status == 200
    assert rule.hits == 2
    hub.add_fault(Status.hub_error(401, "GatedRepo", "Access to this model is restricted"))
    gated = fetch(f"{hub.url}{INFO}")
    assert (gated.status, gated.headers["x-error-code"]) == (401, "GatedRepo")
    assert gated.json() == {"error": "Access to this model is restricted"}


def test_faults_filter_by_method_and_path_and_apply_in_order(hub, fetch):
    hub.add_fault(Status(500), path="*/model.safetensors", method="GET", times=None)
    hub.add_fault(Status(503), times=None)
    assert fetch(f"{hub.url}{WEIGHTS}", method="HEAD").status == 503
    assert fetch(f"{hub.url}{WEIGHTS}").status == 500
    assert fetch(f"{hub.url}{WEIGHTS}").status == 500
    assert fetch(f"{hub.url}{INFO}").status == 503
    hub.clear_faults()
    assert fetch(f"{hub.url}{INFO}").status == 200
    with pytest.raises(ValueError):
        hub.add_fault(Status(500), times=0)


def test_stall_outlasts_a_client_timeout(hub, fetch):
    hub.add_fault(Stall(0.6), path=INFO)
    with pytest.raises(TimeoutError):
        fetch(f"{hub.url}{INFO}", timeout=0.2)
    hub.add_fault(Stall(0.3), path=INFO)
    began = time.monotonic()
    assert fetch(f"{hub.url}{INFO}").status == 200
    assert time.monotonic() - began >= 0.3


def test_flip_byte_corrupts_one_byte_at_a_file_offset(hub, fetch, small_repo_dir):
    weights = (small_repo_dir / "model.safetensors").read_bytes()
    hub.add_fault(FlipByte(50_000), path=WEIGHTS, times=2)
    whole = fetch(f"{hub.url}{WEIGHTS}").body
    assert [i for i in range(len(weights)) if whole[i] != weights[i]] == [50_000]
    assert whole[50_000] == weights[50_000] ^ 0xFF
    tail = fetch(f"{hub.url}{WEIGHTS}", headers={"Range": "bytes=49990-"}).body
    assert tail[10] == weights[50_000] ^ 0xFF and tail[:10] == weights[49_990:50_000]


def test_html_page_replaces_json_and_files(hub, fetch):
    hub.add_fault(HtmlPage(), times=2)
    page = fetch(f"{hub.url}{INFO}")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert page.body.startswith(b"<!DOCTYPE html>")
    head = fetch(f"{hub.url}{WEIGHTS}", method="HEAD")
    assert head.status == 200 and "x-repo-commit" not in head.headers


def test_redirect_keeps_the_file_metadata_on_the_3xx(hub, fetch, hub_factory, small_repo_dir):
    cdn = hub_factory(cdn=False)
    cdn.add_repos_from(hub)
    hub.add_fault(RedirectTo(cdn.url), path="*/resolve/*", times=None)
    redirect = fetch(f"{hub.url}{WEIGHTS}", method="HEAD")
    assert redirect.status == 302
    assert redirect.headers["location"] == f"{cdn.url}{WEIGHTS}"
    assert redirect.headers["x-repo-commit"] == hub.commit("org/small")
    weights = (small_repo_dir / "model.safetensors").read_bytes()
    assert redirect.headers["x-linked-etag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    assert redirect.headers["x-linked-size"] == "100000"
    assert fetch(redirect.headers["location"]).body == weights
    assert [r.path for r in cdn.requests] == [WEIGHTS]


def test_ignore_range_answers_200_with_everything(hub, fetch):
    hub.add_fault(IgnoreRange(), path=WEIGHTS)
    reply = fetch(f"{hub.url}{WEIGHTS}", headers={"Range": "bytes=10-"})
    assert reply.status == 200 and len(reply.body) == 100_000 and "content-range" not in reply.headers


def test_hostile_tree_lists_and_serves_hostile_names(hub, fetch):
    hub.add_fault(HostileTree(), times=None)
    listed = {e["path"] for e in fetch(f"{hub.url}/api/models/org/small/tree/main?recursive=true").json()}
    assert set(HOSTILE_PATHS) <= listed
    assert set(HOSTILE_PATHS) <= set(fetch(f"{hub.url}/api/models/org/small/tree/main").json() and listed)
    siblings = {s["rfilename"] for s in fetch(f"{hub.url}{INFO}").json()["siblings"]}
    assert set(HOSTILE_PATHS) <= siblings
    served = fetch(f"{hub.url}/org/small/resolve/main/a%5Cb")
    assert served.status == 200 and served.body == b"hostile\n" and served.headers["etag"]


def test_bad_etag_and_bad_size_change_what_the_hub_announces(hub, fetch):
    hub.add_fault(BadEtag("../../evil"), times=2)
    assert fetch(f"{hub.url}{WEIGHTS}", method="HEAD").headers["x-linked-etag"] == '"../../evil"'
    tree = {e["path"]: e for e in fetch(f"{hub.url}/api/models/org/small/tree/main").json()}
    assert tree["model.safetensors"]["lfs"]["oid"] == "../../evil" and tree["config.json"]["oid"] == "../../evil"
    hub.add_fault(BadSize(5), path=WEIGHTS)
    head = fetch(f"{hub.url}{WEIGHTS}", method="HEAD")
    assert head.headers["x-linked-size"] == "5" and head.headers["content-length"] == "100000"


def test_hangup_drops_the_connection_without_an_answer(hub, fetch):
    hub.add_fault(Hangup(), path=INFO)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        fetch(f"{hub.url}{INFO}")
    assert hub.requests[-1].status is None
    assert fetch(f"{hub.url}{INFO}").status == 200


def test_free_port_refuses_connections():
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", free_port()), timeout=2)


# --- the same faults through huggingface_hub, the client the Hub protocol is defined by ---


def test_huggingface_hub_resumes_a_short_body_with_a_range_request(hub, tmp_path):
    from huggingface_hub import hf_hub_download

    # It writes in 10 MiB chunks and resumes from the last whole chunk, so the file must be larger.
    folder = tmp_path / "big"
    folder.mkdir()
    data = os.urandom(11 * 1024 * 1024)
    (folder / "model.safetensors").write_bytes(data)
    hub.add_repo("org/big", folder)
    hub.add_fault(ShortBody(100_000), path="*/model.safetensors", method="GET")
    path = hf_hub_download("org/big", "model.safetensors", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert Path(path).read_bytes() == data
    gets = [r for r in hub.requests if r.method == "GET"]
    assert [g.status for g in gets] == [200, 206] and gets[1].headers["range"] == "bytes=10485760-"


def test_huggingface_hub_gives_up_on_a_connection_reset(hub, tmp_path):
    """A reset is an httpx ReadError, which huggingface_hub 2.4 does not retry (unlike a short body)."""
    import httpx2
    from huggingface_hub import hf_hub_download

    hub.add_fault(ResetMidBody(30_000), path="*/model.safetensors", method="GET")
    with pytest.raises(httpx2.ReadError):
        hf_hub_download("org/small", "model.safetensors", cache_dir=tmp_path, endpoint=hub.url)


def test_huggingface_hub_follows_a_cdn_redirect_without_the_token(hub, hub_factory, tmp_path, small_repo_dir):
    from huggingface_hub import hf_hub_download

    cdn = hub_factory()
    cdn.add_repos_from(hub)
    hub.require_token("secret")
    hub.add_fault(RedirectTo(cdn.url), path="*/model.safetensors", times=None)
    path = hf_hub_download("org/small", "model.safetensors", cache_dir=tmp_path, endpoint=hub.url, token="secret")
    assert Path(path).read_bytes() == (small_repo_dir / "model.safetensors").read_bytes()
    assert [r.method for r in cdn.requests] == ["GET"]
    assert "authorization" not in cdn.requests[0].headers
    assert all(r.headers["authorization"] == "Bearer secret" for r in hub.requests)


def test_huggingface_hub_keeps_a_flipped_byte(hub, tmp_path, small_repo_dir):
    """It checks sizes, not hashes: the corruption lands in the cache (why modelmgr verifies sha256)."""
    from huggingface_hub import hf_hub_download

    hub.add_fault(FlipByte(7), path="*/model.safetensors", method="GET")
    path = Path(hf_hub_download("org/small", "model.safetensors", cache_dir=tmp_path, endpoint=hub.url))
    expected = hashlib.sha256((small_repo_dir / "model.safetensors").read_bytes()).hexdigest()
    assert path.resolve().name == expected
    assert hashlib.sha256(path.read_bytes()).hexdigest() != expected


def test_huggingface_hub_names_blobs_by_an_unchecked_etag(hub, tmp_path):
    """A hostile etag walks out of the cache: the reason modelmgr must validate etags before use."""
    from huggingface_hub import hf_hub_download

    hub.add_fault(BadEtag("../../../escaped"), path="*/config.json", times=None)
    hf_hub_download("org/small", "config.json", cache_dir=tmp_path / "cache", endpoint=hub.url)
    assert (tmp_path / "escaped").read_text() == '{"model_type": "llama"}\n'
