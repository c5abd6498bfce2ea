"""Which output URLs the provider fetches: the rule for the first URL and for every redirect hop.

Output URLs come from WaveSpeed's answers and point at a CDN. The rule: https to a public or
private host, or plain http to loopback when explicitly allowed (the bundled local server). Never
link-local addresses or cloud metadata services, whatever the scheme and with no opt-in: nothing
legitimate serves a video there, and they hand out cloud credentials. The host is the one the
connection will really use: a URL that two parsers read differently (``http://a\\@b/``), or
that carries credentials, whitespace or a backslash, is refused outright.

Known limit: a host name is resolved for the check and again by the connection, so a DNS server
that answers differently the second time (rebinding) is not caught here; private addresses are
allowed over https (corporate mirrors and proxies), so the damage is bounded to those.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import urllib3.util
from requests.utils import get_environ_proxies

from airflow_provider_magi.exceptions import MagiDownloadError

# Cloud metadata endpoints outside 169.254.0.0/16: AWS over IPv6, Alibaba Cloud.
_METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
# Name resolution, looked up at call time so tests can keep it on this machine.
resolve = socket.getaddrinfo

_METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com", "instance-data"}
)


def check_output_url(url: str, *, allow_insecure_loopback: bool, resolve: bool = True) -> None:
    """Refuse ``url`` unless the output rule allows it (see the module docstring).

    :param resolve: also look the host name up and refuse link-local/metadata addresses (skipped
        when a proxy fetches the URL: then the proxy resolves it, not this machine).
    """
    host = _single_host(url)
    scheme = urlsplit(url).scheme.lower()
    _refuse_forbidden(url, host)
    if scheme == "https":
        pass
    elif scheme == "http" and _is_loopback(host):
        if not allow_insecure_loopback:
            raise MagiDownloadError(
                f"output URL {url!r} is plain http: allowed only for a loopback server with "
                "allow_insecure_loopback=True (the local WaveSpeed server)"
            )
    else:
        raise MagiDownloadError(f"output URL {url!r} is not an https URL; refusing to download it")
    if resolve and not get_environ_proxies(url):
        for address in _addresses(host):
            if _is_forbidden_address(address):
                raise MagiDownloadError(
                    f"output URL {url!r}: {host} resolves to {address}, a link-local or cloud "
                    "metadata address; refusing to download it"
                )


def is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and bool(parts.hostname) and _is_loopback(parts.hostname or "")


def _single_host(url: str) -> str:
    """The host both urllib and urllib3 (what requests connects with) read from ``url``."""
    if not isinstance(url, str) or any(ch.isspace() or not ch.isprintable() or ch == "\\" for ch in url):
        raise MagiDownloadError(f"output URL {url!r:.200} has whitespace, control characters or a backslash")
    try:
        parts = urlsplit(url)
        theirs = urllib3.util.parse_url(url)
        port, their_port = parts.port, theirs.port
    except ValueError as error:
        raise MagiDownloadError(f"output URL {url!r:.200} does not parse: {error}") from None
    if parts.username is not None or parts.password is not None or theirs.auth:
        raise MagiDownloadError(f"output URL {url!r:.200} carries credentials; refusing it")
    host = (parts.hostname or "").lower()
    their_host = (theirs.host or "").strip("[]").lower()
    if not host or host != their_host or port != their_port:
        raise MagiDownloadError(
            f"output URL {url!r:.200} names its host ambiguously ({host!r} or {their_host!r}); refusing it"
        )
    return host


def _refuse_forbidden(url: str, host: str) -> None:
    if host.rstrip(".") in _METADATA_NAMES:
        raise MagiDownloadError(f"output URL {url!r}: {host} is a cloud metadata service; refusing it")
    address = _literal_address(host)
    if address is not None and _is_forbidden_address(address):
        raise MagiDownloadError(
            f"output URL {url!r}: {host} is a link-local, metadata or unroutable address; refusing it"
        )


def _literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host written as a number means, in every form the C library accepts
    (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376`` are all 169.254.169.254)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(ch in "0123456789abcdefx." for ch in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return (
        address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address in _METADATA_ADDRESSES
    )


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` resolves to (numeric shorthands such as 2852039166 included)."""
    try:
        infos = resolve(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []  # the request itself will fail to connect and say so
    found = []
    for info in infos:
        try:
            found.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    return found


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
