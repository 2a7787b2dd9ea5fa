"""The way out to the API: forward proxies and the certificate authorities trusted.

Read from the environment as the official SDK reads it (httpx with `trust_env`):
`HTTPS_PROXY` for https URLs and `HTTP_PROXY` for http ones (lower-case names win, as
in urllib; `ALL_PROXY` when neither is set), `NO_PROXY` for hosts reached directly,
`SSL_CERT_FILE` (else `SSL_CERT_DIR`) for the CAs that sign the servers' certificates.
Nothing else is taken from the environment: no `.netrc`, so no credential ever goes
anywhere the user did not put it. A proxy gets credentials only from its own URL
(`http://user:password@proxy:3128`); the API's go inside the tunnel to the API only.
"""

from __future__ import annotations

import base64
import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

import yarl

from batch.errors import UsageError

if TYPE_CHECKING:  # aiohttp is imported where a session is made (`validate` needs none)
    import aiohttp
    from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse

CA_HINT = (
    "if the server uses a private certificate authority (a company proxy or CA), "
    "give its certificate (PEM) in SSL_CERT_FILE (or a folder of them in SSL_CERT_DIR)"
)


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: its URL without credentials, and the credentials it was given."""

    url: yarl.URL
    source: str  # the variable it came from, for messages
    # Sent as Proxy-Authorization when a tunnel (CONNECT) is opened.
    authorization: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: str, source: str) -> Proxy:
        text = raw.strip() if "://" in raw else f"http://{raw.strip()}"
        try:
            url = yarl.URL(text)
        except ValueError:
            url = None
        if url is None or not url.host:
            raise UsageError(f"{source}: not a proxy URL (http://host:port)")
        shown = url.with_user(None)
        if url.scheme != "http":
            raise UsageError(
                f"{source}={shown}: only http:// proxies are supported "
                "(the tunnel through it to the API is TLS all the same)"
            )
        authorization = None
        if url.raw_user is not None:
            pair = f"{unquote(url.raw_user)}:{unquote(url.raw_password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        return cls(shown, source, authorization)

    def __str__(self) -> str:
        return f"{self.url} (from {self.source})"


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """Proxies by URL scheme, hosts that bypass them, and the CAs to trust (None: the
    system's). `ca_data`: PEM text to trust instead, for callers that hold it in memory."""

    proxies: Mapping[str, Proxy] = field(default_factory=dict)
    no_proxy: tuple[str, ...] = ()
    ca_file: str | None = None
    ca_dir: str | None = None
    ca_data: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NetworkSettings:
        """The settings the official SDK would take from `env`; UsageError if unusable."""
        proxies: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
                if env.get(name):
                    proxies[scheme] = Proxy.parse(env[name], name)
                    break
        no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
        settings = cls(
            proxies=proxies,
            no_proxy=tuple(h.strip().lower() for h in no_proxy.split(",") if h.strip()),
            ca_file=env.get("SSL_CERT_FILE") or None,
            ca_dir=env.get("SSL_CERT_DIR") or None,
        )
        settings.ssl_context()  # a CA file that cannot be read is found now, not mid-run
        return settings

    def proxy_for(self, url: yarl.URL) -> Proxy | None:
        """The proxy a request to `url` goes through, or None to go direct."""
        proxy = self.proxies.get(url.scheme)
        if proxy is None or url.host is None or self.bypasses(url.host):
            return None
        return proxy

    def bypasses(self, host: str) -> bool:
        """Whether NO_PROXY names `host`: `*`, the host itself, a domain it is in
        (`example.com` and `.example.com` both cover `api.example.com`), or an IP network."""
        host = host.strip("[]").lower()
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if address is not None:
                try:
                    if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                        return True
                except ValueError:
                    pass
                continue
            domain = entry.lstrip(".")
            if host == domain or host.endswith("." + domain):
                return True
        return False

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context: SSL_CERT_FILE's CAs, else SSL_CERT_DIR's, else the system's."""
        try:
            if self.ca_data is not None:
                return ssl.create_default_context(cadata=self.ca_data)
            if self.ca_file is not None:
                return ssl.create_default_context(cafile=self.ca_file)
            if self.ca_dir is not None:
                return ssl.create_default_context(capath=self.ca_dir)
            return ssl.create_default_context()
        except (OSError, ssl.SSLError, ValueError) as exc:
            where = (
                "the CA certificates given"
                if self.ca_data is not None
                else f"SSL_CERT_FILE={self.ca_file}"
                if self.ca_file is not None
                else f"SSL_CERT_DIR={self.ca_dir}"
            )
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(
                f"{where}: cannot load certificates ({reason}); give a PEM file"
            ) from None

    def middlewares(self) -> tuple[ClientMiddlewareType, ...]:
        """Client middlewares that send each request through its proxy (none without one)."""
        if not self.proxies:
            return ()
        chosen: dict[tuple[str, str | None], Proxy | None] = {}

        async def through_proxy(
            request: ClientRequest, handler: ClientHandlerType
        ) -> ClientResponse:
            if request.proxy is None:
                key = (request.url.scheme, request.url.host)
                if key not in chosen:
                    chosen[key] = self.proxy_for(request.url)
                proxy = chosen[key]
                if proxy is not None:
                    headers = None
                    if proxy.authorization is not None:  # a fresh dict: aiohttp adds to it
                        headers = {"Proxy-Authorization": proxy.authorization}
                    request.update_proxy(proxy.url, None, headers)
            return await handler(request)

        return (through_proxy,)


def setup_failure(
    exc: aiohttp.ClientError, url: str, network: NetworkSettings | None = None
) -> str | None:
    """One line saying why a connection to `url` could not be set up as configured (a
    certificate that fails verification, a proxy that cannot be reached or refuses the
    tunnel), or None when `exc` is not such a failure."""
    import aiohttp

    target = yarl.URL(url)
    where = f"{target.host}:{target.port}"
    proxy = network.proxy_for(target) if network is not None else None
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return f"the TLS certificate of {where} failed verification ({reason}): {CA_HINT}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError) and proxy is not None:
        return (
            f"cannot reach the proxy {proxy} ({exc.os_error.strerror or exc.os_error}): "
            f"check it, or name {target.host} in NO_PROXY to go direct"
        )
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        shown = proxy if proxy is not None else "the proxy"
        advice = (
            "give its credentials in the proxy URL (http://user:password@host:port)"
            if exc.status == 407
            else f"ask for {target.host} to be allowed, or name it in NO_PROXY to go direct"
        )
        return (
            f"{shown} refused to open a tunnel to {where} "
            f"(HTTP {exc.status} {exc.message}): {advice}"
        )
    return None
