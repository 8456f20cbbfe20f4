"""Pulls through a real forward proxy on loopback, as behind a corporate proxy-only network."""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from modelmgr.testing import free_port
from modelmgr.testing.proxy import ForwardProxy
from modelmgr.testing.tls import TestCA
from tests.helpers import cli, hf_cache, small_repo

REPO = "org/proxied"
TOKEN = "hf_proxytesttoken0123456789"
INTERNAL = "hub.internal.test"  # a name only the proxy can resolve


@pytest.fixture
def proxy():
    with ForwardProxy(resolve={INTERNAL: "127.0.0.1"}) as running:
        yield running


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return small_repo(tmp_path / "repo", weights=300_000, seed=7)


def write_config(text: str) -> None:
    Path(os.environ["MODELMGR_CONFIG"]).write_text(text)


def assert_pulled(repo_dir: Path) -> None:
    snapshots = list((hf_cache() / "models--org--proxied" / "snapshots").iterdir())
    assert len(snapshots) == 1
    for name in ("config.json", "model.safetensors"):
        assert (snapshots[0] / name).read_bytes() == (repo_dir / name).read_bytes()


def no_credential_seen(proxy: ForwardProxy, hub) -> None:
    assert proxy.log, "nothing went through the proxy"
    for entry in proxy.log:
        assert "authorization" not in entry.headers and TOKEN not in entry.target
    assert hub.cdn.requests and all("authorization" not in r.headers for r in hub.cdn.requests)


def test_http_proxy_carries_every_request_as_an_absolute_uri(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir)
    targets = [e.target for e in proxy.log]
    assert f"{hub.url}/api/models/{REPO}/revision/main" in targets
    # The CDN leg of the weights' redirect went through the proxy too.
    assert any(t.startswith(hub.cdn.url + "/blobs/") for t in targets)
    assert {e.method for e in proxy.log} == {"GET"}


def test_all_proxy_is_the_fallback_for_both_schemes(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    monkeypatch.setenv("all_proxy", proxy.url)
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    assert_pulled(repo_dir)
    assert any(e.target.startswith(hub.url) for e in proxy.log)


def test_a_token_is_never_sent_over_plain_http_through_a_proxy(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    # A CONNECT tunnel to a plain-http server carries the request as it is: the proxy could read
    # the token there as well as in an absolute-URI request. The pull refuses before any byte leaves.
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    hub.require_token(TOKEN, [REPO])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    write_config(f'[[hub.endpoints]]\nurl = "{hub.url}"\nsend_token = true\n')
    outcome = cli(capsys, "pull", REPO)
    assert TOKEN.encode() not in proxy.received + proxy.tunnelled, "the proxy read the token"
    assert not proxy.tunnelled
    assert outcome.code == 1
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert f"{hub.url} is plain http behind proxy {proxy.url.split('//')[1]} (from HTTP_PROXY)" in lines[0]
    assert "your token in clear text, so it was not sent: use the endpoint's https:// URL" in lines[0]
    assert all("authorization" not in r.headers for r in hub.requests)
    assert TOKEN not in outcome.out + outcome.err

    # Reached directly (NO_PROXY), the token goes to the endpoint and never through the proxy.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = cli(capsys, "pull", REPO)
    assert direct.code == 0, direct.err
    assert_pulled(repo_dir)
    assert {r.headers.get("authorization") for r in hub.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN.encode() not in proxy.received


def test_a_password_in_a_plain_http_endpoint_url_is_never_sent_through_a_proxy(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with_password = hub.url.replace("http://", "http://mirror-user:mirror-pw@")
    outcome = cli(capsys, "pull", REPO, "--endpoint", with_password)
    basic = base64.b64encode(b"mirror-user:mirror-pw")
    assert basic not in proxy.received + proxy.tunnelled, "the proxy read the password"
    assert outcome.code == 1
    assert "is plain http behind proxy" in outcome.err and "the password in its URL" in outcome.err
    assert "mirror-pw" not in outcome.out + outcome.err


def test_without_a_credential_plain_http_still_goes_through_the_proxy(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # not for this endpoint: send_token is off
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir)
    assert {e.method for e in proxy.log} == {"GET"}
    assert TOKEN.encode() not in proxy.received
    no_credential_seen(proxy, hub)


def test_an_https_endpoint_reachable_only_through_a_connect_tunnel(capsys, monkeypatch, hub_factory, proxy, repo_dir, tmp_path):
    ca = TestCA(INTERNAL, "127.0.0.1")
    hub = hub_factory(tls=ca.server_context())
    hub.add_repo(REPO, repo_dir)
    hub.require_token(TOKEN, [REPO])
    url = f"https://{INTERNAL}:{hub.url.rsplit(':', 1)[1]}"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.write_pem(tmp_path / "ca.pem")))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    write_config(f'[[hub.endpoints]]\nurl = "{url}"\nsend_token = true\n')

    direct = cli(capsys, "pull", REPO)
    assert direct.code == 1 and f"cannot resolve host {INTERNAL}" in direct.err

    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    outcome = cli(capsys, "pull", REPO)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir)
    tunnels = {e.target for e in proxy.log if e.method == "CONNECT"}
    assert f"{INTERNAL}:{url.rsplit(':', 1)[1]}" in tunnels
    assert hub.cdn.url.split("//", 1)[1] in tunnels  # the CDN leg was tunnelled as well
    assert {e.method for e in proxy.log} == {"CONNECT"}
    no_credential_seen(proxy, hub)
    assert TOKEN not in outcome.out + outcome.err
    # The token crossed the proxy only inside TLS: its bytes never appear in what the proxy relayed.
    assert len(proxy.tunnelled) > 300_000 and TOKEN.encode() not in proxy.received


def test_no_proxy_exempts_a_host(capsys, monkeypatch, hub_factory, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    refused = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert refused.code == 1
    assert f"cannot reach proxy {dead.split('//')[1]} (from HTTP_PROXY)" in refused.err
    assert "NO_PROXY" in refused.err
    monkeypatch.setenv("NO_PROXY", "example.com, 127.0.0.1")
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert_pulled(repo_dir)


def test_proxy_credentials_are_sent_and_never_printed(capsys, monkeypatch, hub_factory, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    with ForwardProxy(auth=("alice", "s3cret-pw")) as guarded:
        monkeypatch.setenv("HTTP_PROXY", guarded.url)
        refused = cli(capsys, "--debug", "pull", REPO, "--endpoint", hub.url)
        assert refused.code == 1
        monkeypatch.setenv("HTTP_PROXY", guarded.url_with_auth())
        outcome = cli(capsys, "--debug", "pull", REPO, "--endpoint", hub.url)
        assert outcome.code == 0, outcome.err
        shown = cli(capsys, "config", "show")
        assert "alice:***@" in shown.out
        for text in (refused.out, refused.err, outcome.out, outcome.err, shown.out):
            assert "s3cret-pw" not in text
        assert [e.status for e in guarded.log][:1] == [407]
        assert all(e.status != 407 for e in guarded.log if "proxy-authorization" in e.headers)
        assert "demands a user and password (HTTP 407)" in refused.err


@pytest.mark.parametrize(("entries", "host", "port", "exempt"), [
    ("*", "huggingface.co", 443, True),
    ("example.com", "example.com", 443, True),
    ("example.com", "cdn.example.com", 443, True),
    (".example.com", "cdn.example.com", 443, True),
    ("example.com", "notexample.com", 443, False),
    ("example.com:8080", "example.com", 443, False),
    ("example.com:8080", "example.com", 8080, True),
    ("10.0.0.0/8", "10.1.2.3", 80, True),
    ("10.0.0.1", "10.0.0.2", 80, False),
    ("::1", "::1", 80, True),
    ("", "example.com", 80, False),
])
def test_no_proxy_reads_as_curl_does(entries, host, port, exempt):
    from modelmgr.fetch.proxy import bypass

    assert bypass(host, port, tuple(e.strip() for e in entries.split(",") if e.strip())) is exempt


def test_lower_case_wins_and_the_config_replaces_the_environment():
    from modelmgr.fetch.proxy import ProxySettings

    env = {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "NO_PROXY": "a.test"}
    assert ProxySettings(environ=env).for_url("https://x.test/").host == "lower"
    assert ProxySettings(environ=env).for_url("https://a.test/") is None
    assert ProxySettings(environ=env).for_url("http://x.test/") is None
    configured = ProxySettings(configured="corp:3128", no_proxy=("b.test",), environ=env)
    assert configured.for_url("http://x.test/").netloc == "corp:3128"
    assert configured.for_url("https://b.test/") is None and configured.for_url("https://a.test/") is None


def test_the_config_proxy_key_routes_a_pull_and_its_no_proxy_exempts(capsys, monkeypatch, hub_factory, proxy, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # dead: the config's proxy replaces it
    write_config(f'[hub]\nproxy = "{proxy.url}"\n')
    outcome = cli(capsys, "pull", REPO, "--endpoint", hub.url)
    assert outcome.code == 0, outcome.err
    assert any(e.target.startswith(hub.url) for e in proxy.log)
    seen = len(proxy.log)
    write_config(f'[hub]\nproxy = "{proxy.url}"\nno_proxy = ["127.0.0.1"]\n')
    assert cli(capsys, "rm", REPO, "-y", "-q").code == 0
    assert cli(capsys, "pull", REPO, "--endpoint", hub.url).code == 0
    assert len(proxy.log) == seen


@pytest.mark.parametrize("password", ["1234/5x", "p#ss", "se/cret", "pa?ss", "p@ss", "a:b"])
def test_a_proxy_password_that_is_not_percent_encoded_ends_at_the_last_at_sign(password):
    from modelmgr.fetch.proxy import ProxySettings

    proxy = ProxySettings(environ={"HTTPS_PROXY": f"http://bob:{password}@proxy.corp:3128"}).for_url("https://x.test/")
    assert (proxy.host, proxy.port, proxy.auth) == ("proxy.corp", 3128, ("bob", password))
    assert proxy.display == "http://bob:***@proxy.corp:3128"
    encoded = ProxySettings(environ={"HTTPS_PROXY": "http://bob:se%2Fcret@proxy.corp:3128"}).for_url("https://x.test/")
    assert encoded.auth == ("bob", "se/cret")


@pytest.mark.parametrize("password", ["1234/5x", "p#ss", "se/cret", "pa?ss"])
def test_a_bad_proxy_url_is_refused_without_its_password(capsys, monkeypatch, password):
    monkeypatch.setenv("HTTPS_PROXY", f"http://bob:{password}@proxy.corp:99999")  # the port is out of range
    for args in (("config", "show"), ("search", "x", "--endpoint", "https://hub.invalid")):
        outcome = cli(capsys, *args)
        assert outcome.code != 0
        assert password not in outcome.out + outcome.err
        assert "HTTPS_PROXY is not a proxy URL ('http://bob:***@proxy.corp:99999')" in outcome.err


def test_an_unencoded_proxy_password_authenticates_and_is_never_printed(capsys, monkeypatch, hub_factory, repo_dir):
    hub = hub_factory()
    hub.add_repo(REPO, repo_dir)
    password = "se/cr#t?1@x"
    with ForwardProxy(auth=("alice", password)) as guarded:
        monkeypatch.setenv("HTTP_PROXY", f"http://alice:{password}@{guarded.url.split('//', 1)[1]}")
        outcome = cli(capsys, "--debug", "pull", REPO, "--endpoint", hub.url)
        assert outcome.code == 0, outcome.err
        assert_pulled(repo_dir)
        shown = cli(capsys, "config", "show")
        assert f"alice:***@{guarded.url.split('//', 1)[1]}" in shown.out
        for text in (outcome.out, outcome.err, shown.out, shown.err):
            assert password not in text and "se/cr" not in text
        assert any(e.status == 200 and "proxy-authorization" in e.headers for e in guarded.log)


@pytest.mark.parametrize(("url", "clean", "auth", "shown"), [
    ("http://u:1234/5x@mirror.test/hf", "http://mirror.test/hf", ("u", "1234/5x"), "http://u:***@mirror.test/hf"),
    ("https://u:p#ss@mirror.test", "https://mirror.test", ("u", "p#ss"), "https://u:***@mirror.test"),
    ("https://u:pa?ss@mirror.test:8443/", "https://mirror.test:8443", ("u", "pa?ss"), "https://u:***@mirror.test:8443"),
    ("https://u:p%40ss@mirror.test", "https://mirror.test", ("u", "p@ss"), "https://u:***@mirror.test"),
    ("https://mirror.test/hf", "https://mirror.test/hf", None, "https://mirror.test/hf"),
])
def test_an_endpoint_url_reads_its_password_as_a_proxy_url_does(url, clean, auth, shown):
    from modelmgr.project.endpoints import redact_url, split_credentials

    assert split_credentials(url) == (clean, auth)
    assert redact_url(url.rstrip("/")) == shown


def test_an_endpoint_error_never_shows_an_unencoded_password(capsys):
    outcome = cli(capsys, "pull", REPO, "--endpoint", "http://u:pa?ss@mirror.test:99999")
    assert outcome.code != 0 and "pa?ss" not in outcome.out + outcome.err
    assert "'http://u:***@mirror.test:99999'" in outcome.err
