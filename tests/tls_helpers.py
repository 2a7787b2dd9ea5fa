"""The tests' one throwaway CA (imported as tests.tls_helpers only, so cached once)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from batch.simulator import TlsIdentity, make_identity


@functools.cache
def shared_tls_identity() -> TlsIdentity:
    """One throwaway CA and certificate (127.0.0.1, localhost) for the whole session."""
    return make_identity()


@functools.cache
def shared_ca_file() -> Path:
    """shared_tls_identity()'s CA certificate in a file, as SSL_CERT_FILE takes it."""
    folder = Path(tempfile.mkdtemp(prefix="scenario-test-ca-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "ca.pem"
    path.write_bytes(shared_tls_identity().ca_pem)
    return path
