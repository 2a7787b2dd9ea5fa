"""Connection settings for the Scenario API: where it is, who we are, how patient to be."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from batch.api.network import NetworkSettings
from batch.errors import CredentialsError, UsageError

DEFAULT_BASE_URL: Final = "https://api.cloud.scenario.com/v1"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How single API calls are retried (polling is not retrying: it has its own loop)."""

    attempts: int = 8
    initial_wait_s: float = 0.5
    max_wait_s: float = 30.0  # also caps a server's Retry-After
    total_s: float = 300.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_wait_s < 0 or self.max_wait_s < 0 or self.total_s <= 0:
            raise UsageError(f"invalid retry policy: {self!r}")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    base_url: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    project_id: str | None = None
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_rps: float | None = None
    outage_trip_after: int = 20  # transient failures in a row before the API counts as down
    outage_grace_s: float = 600.0  # how long a down API is probed before the run stops
    # Proxies and trusted CAs (from_env reads them as the official SDK does).
    network: NetworkSettings = field(default_factory=NetworkSettings)

    def __post_init__(self) -> None:
        check_base_url(self.base_url)
        if not self.api_key or not self.api_secret:
            raise CredentialsError(
                "SCENARIO_SDK_API_KEY and SCENARIO_SDK_API_SECRET must both be set "
                "(your Scenario API key and secret)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, project_id: str | None = None) -> ApiSettings:
        """Read the same variables as the official SDK; a manifest's projectId wins."""
        return cls(
            base_url=env.get("SCENARIO_BASE_URL") or DEFAULT_BASE_URL,
            api_key=env.get("SCENARIO_SDK_API_KEY", ""),
            api_secret=env.get("SCENARIO_SDK_API_SECRET", ""),
            project_id=project_id or env.get("SCENARIO_PROJECT_ID") or None,
            network=NetworkSettings.from_env(env),
        )

    @property
    def origin(self) -> tuple[str, str, int]:
        return origin_of(self.base_url)

    def authorization(self) -> str:
        token = base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        return f"Basic {token}"

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never be written anywhere (for redaction)."""
        return (self.api_key, self.api_secret, self.authorization().removeprefix("Basic "))


def origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> None:
    """Credentials travel over https only, except to this machine (the simulator).

    Messages never echo the URL's user-info part: it may hold a password.
    """
    shown = _without_userinfo(url)
    try:
        parts = urlsplit(url)
        scheme, host, _ = origin_of(url)
    except ValueError:  # a bad port or IPv6 literal
        scheme, host = "", ""
    if scheme not in ("http", "https") or not host:
        raise UsageError(f"SCENARIO_BASE_URL must be an http(s) URL ending in /v1, got {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise UsageError(
            f"SCENARIO_BASE_URL {shown!r} carries user info (user:password@): give the "
            "credentials in SCENARIO_SDK_API_KEY and SCENARIO_SDK_API_SECRET instead"
        )
    if scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"SCENARIO_BASE_URL {shown!r} is plain http: credentials are only sent over https "
            "(plain http is allowed to a loopback address such as the simulator)"
        )


def _without_userinfo(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()
