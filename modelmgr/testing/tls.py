"""A certificate authority made in the test (trustme), for HTTPS LocalHubs and CA settings.

    ca = TestCA("127.0.0.1", "hub.internal.test")
    hub = LocalHub(tls=ca.server_context())
    os.environ["SSL_CERT_FILE"] = str(ca.write_pem(tmp_path / "ca.pem"))
"""
from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path


class TestCA:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, *hosts: str) -> None:
        import trustme  # a test dependency only

        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert(*(hosts or ("127.0.0.1", "localhost")))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._cert.configure_cert(context)
        return context

    def write_pem(self, path: Path) -> Path:
        """The CA's certificate as a PEM file (what SSL_CERT_FILE and REQUESTS_CA_BUNDLE name)."""
        path.write_bytes(self._ca.cert_pem.bytes())
        return path

    def write_hashed_dir(self, folder: Path) -> Path:
        """A folder OpenSSL can search (SSL_CERT_DIR): the certificate under its subject-hash name."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("openssl is needed to name a certificate folder's files")
        folder.mkdir(parents=True, exist_ok=True)
        pem = self.write_pem(folder / "ca.pem")
        digest = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(pem)], check=True,
                                capture_output=True, text=True, timeout=30).stdout.strip()
        (folder / f"{digest}.0").write_bytes(pem.read_bytes())
        return folder
