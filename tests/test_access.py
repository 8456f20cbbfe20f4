"""Gated, private and token answers: five situations, five one-line messages with the server's
reason; one endpoint per URL; credentials in an endpoint URL; a mirror's absolute next links."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import cli, hf_cache, small_repo

GATED, PRIVATE = "org/gated", "org/private"
GRANTED, NOT_GRANTED, UNKNOWN = "hf_granted000000000001", "hf_notgranted00000002", "hf_unknown00000000003"


@pytest.fixture
def hub(hub_factory, tmp_path):
    hub = hub_factory()
    for repo in (GATED, PRIVATE):
        hub.add_repo(repo, small_repo(tmp_path / repo, weights=50_000, seed=len(repo)))
    hub.gate(GATED, granted=(GRANTED,))
    hub.add_token(NOT_GRANTED)
    hub.require_token(GRANTED, [PRIVATE])
    return hub


def config(text: str) -> None:
    Path(os.environ["MODELMGR_CONFIG"]).write_text(text)


def trusted(hub) -> None:
    config(f'[[hub.endpoints]]\nurl = "{hub.url}"\nsend_token = true\n')


def one_line_error(outcome) -> str:
    assert outcome.code == 1, outcome.err
    # Progress lines may come first (a gated repo's metadata is public); the error is one line.
    lines = [line for line in outcome.err.strip().splitlines() if not line.startswith("fetching ")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), outcome.err
    assert "resume" not in lines[0]
    for token in (GRANTED, NOT_GRANTED, UNKNOWN):
        assert token not in outcome.err + outcome.out
    return lines[0]


def test_five_access_situations_give_five_messages(capsys, monkeypatch, hub):
    messages = {}
    trusted(hub)
    messages["gated, not logged in"] = one_line_error(cli(capsys, "pull", GATED))
    monkeypatch.setenv("HF_TOKEN", NOT_GRANTED)
    messages["gated, not granted"] = one_line_error(cli(capsys, "pull", GATED))
    monkeypatch.setenv("HF_TOKEN", UNKNOWN)
    messages["token rejected"] = one_line_error(cli(capsys, "pull", GATED))
    monkeypatch.delenv("HF_TOKEN")
    messages["private or missing"] = one_line_error(cli(capsys, "pull", PRIVATE))
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    config("")
    messages["token not sent"] = one_line_error(cli(capsys, "pull", PRIVATE, "--endpoint", hub.url))

    assert len(set(messages.values())) == 5
    assert f"accept its terms at {hub.url}/{GATED}, then set HF_TOKEN or run `hf auth login`" in messages["gated, not logged in"]
    assert '"Access to model org/gated is restricted. You must have access' in messages["gated, not logged in"]
    assert f"ask for access at {hub.url}/{GATED}" in messages["gated, not granted"]
    assert "you are not in the authorized list" in messages["gated, not granted"]
    assert "rejected your token" in messages["token rejected"] and "invalid or expired" in messages["token rejected"]
    assert '"Invalid credentials in Authorization header"' in messages["token rejected"]
    assert "not found" in messages["private or missing"] and '"Repository not found"' in messages["private or missing"]
    assert "if it is private, set HF_TOKEN" in messages["private or missing"]
    assert "your token was not sent to it" in messages["token not sent"]
    assert f'[[hub.endpoints]] url = "{hub.url}" with send_token = true' in messages["token not sent"]


def test_the_granted_token_pulls_the_gated_repo(capsys, monkeypatch, hub):
    trusted(hub)
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    outcome = cli(capsys, "pull", GATED)
    assert outcome.code == 0, outcome.err


def test_a_fallback_caused_by_a_401_says_so(capsys, monkeypatch, hub, hub_factory, tmp_path):
    mirror = hub_factory()
    mirror.add_repo(PRIVATE, small_repo(tmp_path / "m", weights=50_000, seed=len(PRIVATE)))
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    outcome = cli(capsys, "pull", PRIVATE, "--endpoint", hub.url, "--endpoint", mirror.url)
    assert outcome.code == 0, outcome.err
    assert f"{hub.url} refused access (HTTP 401); trying the next endpoint" in outcome.err


def test_hf_endpoint_listed_in_the_config_takes_the_config_settings(capsys, monkeypatch, hub):
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    config(f'[[hub.endpoints]]\nurl = "{hub.url}"\nname = "team"\nsend_token = true\ntimeout = 7\n')
    outcome = cli(capsys, "pull", PRIVATE)
    assert outcome.code == 0, outcome.err
    assert {r.headers.get("authorization") for r in hub.requests} == {f"Bearer {GRANTED}"}
    shown = cli(capsys, "config", "show", "--json")
    import json

    endpoints = json.loads(shown.out)["hub.endpoints"]["value"]
    assert len(endpoints) == 1
    assert endpoints[0]["name"] == "team" and endpoints[0]["send_token"] is True and endpoints[0]["timeout"] == 7
    assert endpoints[0]["from"].startswith("$HF_ENDPOINT; settings from [[hub.endpoints]] in ")
    text = cli(capsys, "config", "show").out
    assert "team (token) <$HF_ENDPOINT; settings from [[hub.endpoints]]" in text


def test_credentials_in_an_endpoint_url_go_as_basic_auth_to_that_origin_only(capsys, hub_factory, tmp_path):
    hub = hub_factory()
    hub.add_repo("org/basic", small_repo(tmp_path / "b", weights=60_000, seed=9))
    host = hub.url.split("//", 1)[1]
    url = f"http://mirror-user:pa55word-xyz@{host}"
    for args in (("--debug", "pull", "org/basic", "--endpoint", url), ("config", "show", "--endpoint", url),
                 ("--debug", "pull", "org/missing", "--endpoint", url)):
        outcome = cli(capsys, *args)
        assert "pa55word-xyz" not in outcome.out + outcome.err
    assert (hf_cache() / "models--org--basic" / "snapshots").is_dir()
    sent = {r.headers.get("authorization") for r in hub.requests}
    import base64

    assert sent == {"Basic " + base64.b64encode(b"mirror-user:pa55word-xyz").decode()}
    assert hub.cdn.requests and all("authorization" not in r.headers for r in hub.cdn.requests)


def test_credentials_and_send_token_together_are_refused_in_one_line(capsys, hub):
    config(f'[[hub.endpoints]]\nurl = "http://u:secretpw@127.0.0.1:9"\nsend_token = true\n')
    outcome = cli(capsys, "config", "show")
    assert outcome.code == 1 and "secretpw" not in outcome.err
    assert "http://u:***@127.0.0.1:9" in outcome.err and "use one or the other" in outcome.err


def test_a_mirror_passing_the_hubs_absolute_next_link_through_is_paged_on_the_mirror(capsys, hub_factory, tmp_path):
    from modelmgr.testing import faults

    mirror = hub_factory()
    folder = small_repo(tmp_path / "paged", weights=10_000, seed=4)
    for i in range(5):
        (folder / f"extra-{i}.json").write_text("{}\n")
    mirror.add_repo("org/paged", folder)
    mirror.tree_page_size = 2
    # What hf-mirror.com does: the Hub's own host in the Link, the mirror's path and cursor.
    mirror.add_fault(faults.RewriteLink("https://huggingface.co"), path="*/tree/*", times=None)
    outcome = cli(capsys, "pull", "org/paged", "--all-files", "--endpoint", mirror.url)
    assert outcome.code == 0, outcome.err
    snapshot = next((hf_cache() / "models--org--paged" / "snapshots").iterdir())
    assert len(list(snapshot.iterdir())) == 8
    assert len([r for r in mirror.requests if "/tree/" in r.path]) == 4


def test_a_next_link_to_another_path_is_refused(capsys, hub_factory, tmp_path):
    from modelmgr.testing import faults

    mirror = hub_factory()
    folder = small_repo(tmp_path / "paged", weights=10_000, seed=4)
    (folder / "extra.json").write_text("{}\n")
    mirror.add_repo("org/paged", folder)
    mirror.tree_page_size = 2
    mirror.add_fault(faults.RewriteLink("https://evil.example", path="/api/models/other/repo/tree/main"), path="*/tree/*", times=None)
    outcome = cli(capsys, "pull", "org/paged", "--endpoint", mirror.url)
    assert outcome.code == 1
    assert "tree pagination points to another host (evil.example)" in outcome.err
