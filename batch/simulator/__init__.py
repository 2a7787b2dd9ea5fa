"""A faithful, seeded simulator of the Scenario API (see README.md in this folder)."""

from .config import MODEL_ID, SimulatorConfig
from .log import RequestRecord
from .server import running_simulator, serve
from .simulator import Simulator
from .tls import TlsIdentity, make_identity

__all__ = [
    "MODEL_ID",
    "RequestRecord",
    "Simulator",
    "SimulatorConfig",
    "TlsIdentity",
    "make_identity",
    "running_simulator",
    "serve",
]
