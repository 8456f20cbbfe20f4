"""HTTPS endpoints signed by a CA made in the test: each CA setting makes it trusted; without one,
one line that names the host and SSL_CERT_FILE."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelmgr.testing.tls import TestCA
from tests.helpers import cli, hf_cache, small_repo

REPO = "org/secure"


@pytest.fixture
def ca() -> TestCA:
    return TestCA("127.0.0.1")


@pytest.fixture
def https_hub(hub_factory, ca, tmp_path):
    hub = hub_factory(tls=ca.server_context())
    hub.add_repo(REPO, small_repo(tmp_path / "repo", weights=200_000, seed=3))
    assert hub.url.startswith("https://") and hub.cdn.url.startswith("https://")
    return hub


def pulled() -> bool:
    return any((hf_cache() / "models--org--secure" / "snapshots").glob("*/model.safetensors"))


def test_an_untrusted_certificate_is_one_line_naming_the_host_and_ssl_cert_file(capsys, https_hub):
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 1
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    assert "the TLS certificate of 127.0.0.1 is not trusted" in lines[0]
    assert "SSL_CERT_FILE" in lines[0]
    assert "CERTIFICATE_VERIFY_FAILED" not in lines[0]


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_a_ca_file_setting_makes_the_endpoint_trusted(capsys, monkeypatch, https_hub, ca, tmp_path, variable):
    monkeypatch.setenv(variable, str(ca.write_pem(tmp_path / "ca.pem")))
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 0, outcome.err
    assert pulled()
    # The CDN leg, on another port, was verified with the same trust.
    assert https_hub.cdn.requests


def test_ssl_cert_dir_makes_the_endpoint_trusted(capsys, monkeypatch, https_hub, ca, tmp_path):
    monkeypatch.setenv("SSL_CERT_DIR", str(ca.write_hashed_dir(tmp_path / "certs")))
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 0, outcome.err
    assert pulled()


def test_the_config_ca_bundle_makes_the_endpoint_trusted(capsys, https_hub, ca, tmp_path):
    pem = ca.write_pem(tmp_path / "ca.pem")
    Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[hub]\nca_bundle = "{pem}"\n')
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 0, outcome.err
    shown = cli(capsys, "config", "show")
    assert f"{pem} (from [hub] ca_bundle)" in shown.out


def test_a_ca_setting_naming_a_missing_file_says_so(capsys, monkeypatch, https_hub, tmp_path):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "nope.pem"))
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 1
    assert outcome.err.strip() == f"Error: REQUESTS_CA_BUNDLE names {tmp_path / 'nope.pem'}, which does not exist: " \
                                  "point it at a PEM file of CA certificates, or unset it."


@pytest.mark.parametrize("setting", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE", "[hub] ca_bundle"])
@pytest.mark.parametrize("content", [b"not a certificate\n", b"", b"0\x82\x01\x0a\x02\x01"])
def test_a_ca_setting_naming_a_file_that_is_not_pem_is_one_line_naming_both(capsys, monkeypatch, https_hub, tmp_path, setting, content):
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    if setting.startswith("["):
        Path(os.environ["MODELMGR_CONFIG"]).write_text(f'[hub]\nca_bundle = "{bad}"\n')
    else:
        monkeypatch.setenv(setting, str(bad))
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 1
    assert outcome.err.strip() == (f"Error: {setting} names {bad}, which holds no PEM CA certificate: point it at a PEM "
                                   "file of CA certificates (text with -----BEGIN CERTIFICATE----- blocks), or unset it.")
    assert not pulled()


def test_a_ca_file_that_cannot_be_read_says_so(capsys, monkeypatch, https_hub, ca, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    pem = ca.write_pem(tmp_path / "ca.pem")
    pem.chmod(0)
    monkeypatch.setenv("SSL_CERT_FILE", str(pem))
    outcome = cli(capsys, "pull", REPO, "--endpoint", https_hub.url)
    assert outcome.code == 1
    assert outcome.err.strip() == f"Error: SSL_CERT_FILE names {pem}, which cannot be read (permission denied): make it readable, or unset it."
