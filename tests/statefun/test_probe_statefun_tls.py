"""A function endpoint served over https with a certificate the workers do not trust (a
self-signed or private CA's): the call fails at once, saying the certificate is not trusted
and how to trust it, instead of being retried as a connection error until the call timeout
(2 min by default for a module.yaml endpoint) and then reported as 'gave up after N
attempt(s)'."""

from __future__ import annotations

import ssl
import subprocess

from tests.statefun.test_http_client import Calls, ScriptedServer, echo


def test_an_untrusted_certificate_fails_at_once_with_the_remedy(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    c = Calls()
    try:
        with ScriptedServer(echo, tls=server_tls) as server:
            refused = c.call(server.url, b"x", max_retries=5)
            assert refused.body is None and refused.attempts == 1
            assert f"the TLS certificate of localhost:{server.port} is not trusted (not retried)" in refused.error
            assert "CERTIFICATE_VERIFY_FAILED" in refused.error and "SSL_CERT_FILE" in refused.error
            assert server.requests == []
    finally:
        c.close()
