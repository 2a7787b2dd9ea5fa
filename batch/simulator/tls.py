"""The simulator over https: a throwaway certificate authority and a server certificate.

`trustme` (a test and `simulate --tls` dependency, not a runtime one of the tool) makes a
fresh CA per identity; clients trust it through its PEM (SSL_CERT_FILE for
scenario-batch and the official SDK), exactly as they would trust a company's own CA.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """What the simulator serves with, and the CA certificate a client must trust."""

    ca_pem: bytes = b""
    cert_chain_pem: bytes = b""
    key_pem: bytes = b""

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting this identity's certificate."""
        import tempfile
        from pathlib import Path

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # ssl loads a certificate chain from files only.
        with tempfile.TemporaryDirectory() as folder:
            chain, key = Path(folder) / "chain.pem", Path(folder) / "key.pem"
            chain.write_bytes(self.cert_chain_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(chain, key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this identity's CA (and nothing else)."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def make_identity(hosts: tuple[str, ...] = DEFAULT_HOSTS) -> TlsIdentity:
    """A new CA and a certificate it signed for `hosts` (names or IP addresses)."""
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - trustme ships with the dev extra
        raise RuntimeError(
            "the simulator's TLS mode needs the trustme package: "
            "pip install 'scenario-batch[simulator-tls]' (or pip install trustme)"
        ) from exc
    ca = trustme.CA()
    issued = ca.issue_cert(*hosts)
    chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
    return TlsIdentity(ca.cert_pem.bytes(), chain, issued.private_key_pem.bytes())
