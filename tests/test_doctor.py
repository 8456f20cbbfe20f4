"""`modelmgr doctor`: a report of this machine, and exit 1 with the fix when something needed is broken."""
from __future__ import annotations

import json
import os

import pytest

from modelmgr.testing import free_port
from tests.helpers import cli

TOKEN = "hf_doctortoken000000000001"


def test_doctor_json_reports_devices_caches_and_a_live_and_a_dead_endpoint(capsys, monkeypatch, local_hub):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HTTPS_PROXY", "http://someone:pw-hidden@proxy.invalid:3128")
    outcome = cli(capsys, "doctor", "--json", "--endpoint", local_hub.url, "--endpoint", dead)
    assert outcome.code == 0, outcome.err
    report = json.loads(outcome.out)
    assert report["ok"] is True
    assert report["versions"]["modelmgr"] and report["versions"]["python"] and report["versions"]["torch"]
    assert report["devices"]["cuda"] is False and "CPU-only build" in report["devices"]["reason"]
    cache = report["caches"][0]
    assert cache["path"] == os.environ["HF_HUB_CACHE"] and cache["writable"] is True and cache["free_bytes"] > 0
    live, gone = report["endpoints"]
    assert live["url"] == local_hub.url and live["reachable"] is True and live["latency_ms"] >= 0
    assert gone["url"] == dead and gone["reachable"] is False and "refused" in gone["error"]
    # The proxy is listed without its password; the token's presence and its hosts, never its value.
    assert "someone:***@proxy.invalid:3128" in report["network"]["proxy"]["https"]
    assert report["token"]["present"] is True and report["token"]["sent_to"] == []
    assert TOKEN not in outcome.out + outcome.err and "pw-hidden" not in outcome.out + outcome.err
    assert any(r.method == "HEAD" for r in local_hub.requests)


def test_doctor_exits_1_with_the_fix_when_nothing_is_reachable(capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    outcome = cli(capsys, "doctor", "--endpoint", dead)
    assert outcome.code == 1
    assert "cuda: no (" in outcome.out
    assert "Problem: no endpoint is reachable" in outcome.err and "HF_HUB_OFFLINE=1" in outcome.err


def test_doctor_offline_opens_no_socket_and_flags_a_missing_ca_file(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    outcome = cli(capsys, "doctor", "--offline", "--json")
    assert outcome.code == 1
    report = json.loads(outcome.out)
    assert report["endpoints"][0]["skipped"] == "offline"
    assert any("SSL_CERT_FILE names" in p for p in report["problems"])


def test_doctor_reports_a_ca_file_that_is_not_pem_as_a_problem_with_its_fix(capsys, monkeypatch, tmp_path, hub_factory, test_ca):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bad))
    fix = f"REQUESTS_CA_BUNDLE names {bad}, which holds no PEM CA certificate: point it at a PEM file of CA certificates"
    offline = cli(capsys, "doctor", "--offline")
    assert offline.code == 1
    assert f"trust: {bad} (from REQUESTS_CA_BUNDLE)" in offline.out
    assert f"Problem: {fix}" in offline.err and "unset it.\n" in offline.err
    assert "Error:" not in offline.err and "X509" not in offline.err
    # Online, the https endpoint's check says the same, and the report is still whole.
    hub = hub_factory(tls=test_ca.server_context())
    online = cli(capsys, "doctor", "--json", "--endpoint", hub.url)
    assert online.code == 1
    report = json.loads(online.out)
    assert fix in report["endpoints"][0]["error"] and any(p.startswith(fix) for p in report["problems"])


@pytest.mark.parametrize("password", ["1234/5x", "p#ss", "se/cret", "pa?ss"])
def test_doctor_shows_a_proxy_whose_password_is_not_percent_encoded_without_it(capsys, monkeypatch, password):
    monkeypatch.setenv("HTTPS_PROXY", f"http://bob:{password}@proxy.corp:3128")
    outcome = cli(capsys, "doctor", "--offline")
    assert "proxy: https http://bob:***@proxy.corp:3128 (from HTTPS_PROXY)" in outcome.out
    assert password not in outcome.out + outcome.err and "Error:" not in outcome.err


def test_doctor_reports_a_proxy_url_that_cannot_work_instead_of_stopping(capsys, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://bob:pa?ss@proxy.corp:99999")
    outcome = cli(capsys, "doctor")
    assert outcome.code == 1
    assert "Problem: HTTPS_PROXY is not a proxy URL ('http://bob:***@proxy.corp:99999')" in outcome.err
    assert "cuda: " in outcome.out and "Error:" not in outcome.err and "pa?ss" not in outcome.out + outcome.err


def test_config_show_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from modelmgr.cli import main\n"
            "try:\n    main(['config', 'show'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "False", result.stderr
