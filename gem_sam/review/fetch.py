"""Fetching task images for the ML backend: only from where the user said, with bounded downloads.

A Label Studio task names its image by URL, and whoever can send the backend a task chooses that URL, so
the backend fetches only:

- from the origin (scheme, host and port) of ``LABEL_STUDIO_URL``, with ``LABEL_STUDIO_API_KEY``
  (uploaded files need it); the key goes to that exact origin and nowhere else, not to the same host
  over plain http, nor to another port;
- from the hosts ``--allow-host`` names (``images.example.com``, ``10.0.0.5:8000``, or ``*.example.com``
  for its subdomains), without the key.

Every name is resolved before connecting, and the connection goes to the address that was checked. A
host matched only by a ``*.`` pattern must resolve to public addresses: loopback, private, link-local
(cloud metadata services live at 169.254.169.254), multicast and reserved addresses are refused. A host
named exactly (or ``LABEL_STUDIO_URL``'s) is the user's explicit choice and may be private. Redirects
are followed, a few, and each target is checked the same way. A download stops at ``max_bytes`` and at
a total deadline, whatever the server sends. Errors say what was refused; they never echo what a server
answered beyond its status code.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK_BYTES = 64 * 1024

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP addresses


class FetchRefused(Exception):
    """A URL the backend will not fetch, or a download that did not complete; the message says why."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise FetchRefused(f"{url!r} is not an http or https URL")
        if not parts.hostname:
            raise FetchRefused(f"{url!r} has no host")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as error:
            raise FetchRefused(f"{url!r} has an invalid port") from error
        return cls(scheme, parts.hostname.lower(), port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def system_resolver(host: str, port: int) -> list[str]:
    """The IP addresses ``host`` resolves to (IP literals resolve to themselves)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except OSError as error:
        raise FetchRefused(f"the host {host!r} cannot be resolved") from error


def is_public(address: str) -> bool:
    """Whether an IP address is a public, unicast one (not loopback, private, link-local, ...)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class FetchPolicy:
    """Where the backend may fetch from, with which credential, and how much."""

    label_studio_url: str | None = None  # LABEL_STUDIO_URL: its origin is allowed and gets the API key
    api_key: str | None = None  # LABEL_STUDIO_API_KEY
    allowed_hosts: tuple[str, ...] = ()  # --allow-host: "host", "host:port" or "*.domain"
    max_bytes: int = 200 * 2**20  # largest image download
    deadline_seconds: float = 60.0  # whole download, redirects included
    max_redirects: int = 3

    def __post_init__(self) -> None:
        if self.label_studio_url:
            try:
                Origin.of(self.label_studio_url)
            except FetchRefused as error:
                raise ValueError(f"LABEL_STUDIO_URL: {error}") from error
        for pattern in self.allowed_hosts:
            if not pattern.strip() or "/" in pattern or pattern.count("*") > (1 if pattern.startswith("*.") else 0):
                raise ValueError(f"--allow-host {pattern!r}: give a host, host:port or *.domain (no scheme, no path)")

    @property
    def label_studio_origin(self) -> Origin | None:
        return Origin.of(self.label_studio_url) if self.label_studio_url else None

    def explicitly_allowed(self, origin: Origin) -> bool | None:
        """True: the origin is named exactly (LABEL_STUDIO_URL's, or an --allow-host host); False: matched
        only by a ``*.`` pattern; None: not allowed at all."""
        if origin == self.label_studio_origin:
            return True
        wildcard = False
        for pattern in self.allowed_hosts:
            pattern = pattern.strip().lower()
            host, _, port = pattern.rpartition(":") if pattern.count(":") == 1 else (pattern, "", "")
            if port and int(port) != origin.port:
                continue
            host = host.strip("[]")
            if host == origin.host:
                return True
            if host.startswith("*.") and origin.host.endswith(host[1:]):
                wildcard = True
        return False if wildcard else None

    def check(self, url: str, resolve: Resolver) -> tuple[Origin, str]:
        """The origin of ``url`` and the checked address to connect to; raises ``FetchRefused``."""
        origin = Origin.of(url)
        allowed = self.explicitly_allowed(origin)
        if allowed is None:
            where = f"LABEL_STUDIO_URL's origin ({self.label_studio_origin})" if self.label_studio_url else "no origin"
            raise FetchRefused(f"refused to fetch {url!r}: {origin} is not {where} nor a host that --allow-host names")
        addresses = resolve(origin.host, origin.port)
        if not addresses:
            raise FetchRefused(f"refused to fetch {url!r}: {origin.host!r} resolves to no address")
        if not allowed:
            private = [address for address in addresses if not is_public(address)]
            if private:
                raise FetchRefused(
                    f"refused to fetch {url!r}: {origin.host!r} resolves to {private[0]}, which is not a public "
                    "address; name the host exactly with --allow-host to allow it"
                )
        return origin, addresses[0]

    def headers_for(self, origin: Origin) -> dict[str, str]:
        """The API key, for LABEL_STUDIO_URL's exact origin only."""
        if self.api_key and origin == self.label_studio_origin:
            return {"Authorization": f"Token {self.api_key}"}
        return {}


def fetch(url: str, policy: FetchPolicy, *, resolve: Resolver = system_resolver) -> bytes:
    """The body of ``url``, following checked redirects, within ``policy``'s size and time bounds."""
    import urllib3

    deadline = time.monotonic() + policy.deadline_seconds
    for _ in range(policy.max_redirects + 1):
        origin, address = policy.check(url, resolve)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchRefused(f"fetching {url!r} took longer than {policy.deadline_seconds:g} s")
        timeout = urllib3.Timeout(connect=min(remaining, 10.0), read=remaining)
        if origin.scheme == "https":
            import certifi

            pool = urllib3.HTTPSConnectionPool(
                address, origin.port, timeout=timeout, retries=False, server_hostname=origin.host,
                assert_hostname=origin.host, cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
            )  # fmt: skip
        else:
            pool = urllib3.HTTPConnectionPool(address, origin.port, timeout=timeout, retries=False)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = origin.host if ":" not in origin.host else f"[{origin.host}]"
        if origin.port != DEFAULT_PORTS[origin.scheme]:
            host_header += f":{origin.port}"
        try:
            response = pool.urlopen(
                "GET", target, headers={"Host": host_header, **policy.headers_for(origin)},
                redirect=False, preload_content=False,
            )  # fmt: skip
        except urllib3.exceptions.HTTPError as error:
            raise FetchRefused(f"{url!r} could not be fetched ({type(error).__name__})") from error
        try:
            if response.status in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if not 200 <= response.status < 300:
                raise FetchRefused(f"{url!r} could not be fetched: HTTP status {response.status}")
            return _read_bounded(response, url=url, policy=policy, deadline=deadline)
        finally:
            response.release_conn()
            pool.close()
    raise FetchRefused(f"refused to follow more than {policy.max_redirects} redirects from {url!r}")


def _read_bounded(response, *, url: str, policy: FetchPolicy, deadline: float) -> bytes:  # noqa: ANN001
    """The body of ``response`` (decoded), refused past ``max_bytes`` or the deadline. ``read1`` returns
    what one receive gives, so a server that trickles bytes is stopped at the deadline too; a stalled one
    by the socket's read timeout, which ends at the deadline."""
    import urllib3

    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchRefused(f"{url!r} is larger than the {policy.max_bytes}-byte limit")
    body = bytearray()
    try:
        while chunk := response.read1(CHUNK_BYTES):
            body += chunk
            if len(body) > policy.max_bytes:
                raise FetchRefused(f"{url!r} is larger than the {policy.max_bytes}-byte limit")
            if time.monotonic() > deadline:
                raise FetchRefused(f"fetching {url!r} took longer than {policy.deadline_seconds:g} s")
    except (OSError, urllib3.exceptions.HTTPError) as error:  # read timeouts, broken connections
        if time.monotonic() > deadline:
            raise FetchRefused(f"fetching {url!r} took longer than {policy.deadline_seconds:g} s") from error
        raise FetchRefused(f"{url!r} could not be fetched ({type(error).__name__})") from error
    return bytes(body)
