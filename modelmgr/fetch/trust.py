"""Which certificates an HTTPS connection trusts, and a certificate failure said in one line.

Order, first found wins: ``[hub] ca_bundle``; SSL_CERT_FILE / SSL_CERT_DIR (what Python's ssl
and huggingface_hub's httpx read); REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE (requests- and curl-era
settings corporate machines still set for Python tools); else the system store. On macOS and
Windows Python's default context does not read the system store, where corporate CAs are
installed, so there the ``truststore`` package (what pip uses for this) is used when installed.
"""
from __future__ import annotations

import os
import ssl
import sys
from typing import Mapping

from modelmgr.errors import ConfigError

VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def trust_source(ca_bundle: str | None, environ: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """(where the trust comes from, the file or folder) for doctor and config show."""
    environ = os.environ if environ is None else environ
    if ca_bundle:
        return "[hub] ca_bundle", ca_bundle
    for variable in VARIABLES:
        if environ.get(variable):
            return variable, environ[variable]
    if _needs_truststore():
        try:
            import truststore  # noqa: F401
        except ImportError:
            return "Python's default store (install truststore to use the system's)", None
        return "the system store (truststore)", None
    return "the system store (OpenSSL default paths)", None


def ssl_context(ca_bundle: str | None, environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    source, location = trust_source(ca_bundle, environ)
    if location is None:
        if "truststore" in source:
            import truststore

            return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return ssl.create_default_context()
    path = os.path.expanduser(location)
    if not os.path.exists(path):
        raise ConfigError(f"{source} names {location}, which does not exist: point it at a PEM file of CA certificates, or unset it.")
    folder = os.path.isdir(path)
    try:
        return ssl.create_default_context(cafile=None if folder else path, capath=path if folder else None)
    except PermissionError:
        raise ConfigError(f"{source} names {location}, which cannot be read (permission denied): "
                          "make it readable, or unset it.") from None
    except (ssl.SSLError, OSError, ValueError):
        # OpenSSL's words ("[X509: NO_CERTIFICATE_OR_CRL_FOUND] ...") name neither the setting
        # nor the file: say both, and what the file must hold.
        raise ConfigError(f"{source} names {location}, which holds no PEM CA certificate: point it at a PEM file "
                          "of CA certificates (text with -----BEGIN CERTIFICATE----- blocks), or unset it.") from None


def _needs_truststore() -> bool:
    return sys.platform in ("darwin", "win32")


def describe_failure(exc: ssl.SSLError, host: str) -> str:
    """One line: whose certificate, why, and the setting that fixes it."""
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of {host} is not trusted ({reason}): if your network or this mirror uses its own CA, "
                "set SSL_CERT_FILE to that CA's PEM file (or [hub] ca_bundle in the config)")
    return f"TLS handshake with {host} failed ({reason}): check that the endpoint speaks https on that port"
