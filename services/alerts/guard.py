"""SSRF guard for webhook URLs: https only, and the host must resolve to public addresses only
(no loopback, private, link-local, CGNAT, multicast, reserved, metadata, or IPv4 embedded in
IPv6 through NAT64 / 6to4 / Teredo / mapped / compatible / translated forms). Hosts in
CTDNA_WEBHOOK_ALLOWED_HOSTS are exempt (and may use http), which is how an on-premises
receiver or a test receiver is reached. The check runs at creation and again at send time, and
the request is then sent to the address that was checked, so a DNS answer that changes in
between (rebinding) cannot slip through."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from services.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_BLOCKED_V4 = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
]
_NAT64 = [ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48")]
# IPv4 in the low 32 bits: IPv4-compatible (::/96, deprecated but still routed to the IPv4
# address by some stacks: [::127.0.0.1]) and IPv4-translated (::ffff:0:0:0/96, SIIT).
_LOW_32 = [ipaddress.ip_network("::/96"), ipaddress.ip_network("::ffff:0:0:0/96")]


class UnsafeWebhookUrl(InvalidInput):
    """The URL points (or resolves) somewhere a webhook must not go."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str  # the checked IP to connect to
    allowed_host: bool


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in (*_NAT64, *_LOW_32)):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return is_public(embedded)
        return address.is_global and not address.is_multicast
    if any(address in net for net in _BLOCKED_V4):
        return False
    return address.is_global and not address.is_multicast


# The setting that exempts a host, named in every refusal so that the refusal says how to go on.
ALLOWED_HOSTS_SETTING = "CTDNA_WEBHOOK_ALLOWED_HOSTS"


def check_url(url: str, allowed_hosts: frozenset[str], *, resolve: bool = True) -> Target:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeWebhookUrl(f"webhook URL {url!r} has no host")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl(
            "webhook URLs must not carry credentials: the receiver checks the signature "
            "(webhook-signature) with the endpoint's secret instead"
        )
    allowed = host in allowed_hosts
    if parts.scheme != "https" and not (allowed and parts.scheme == "http"):
        raise UnsafeWebhookUrl(
            f"webhook URLs must use https; plain http is accepted only for a host listed in "
            f"{ALLOWED_HOSTS_SETTING} (a receiver you run yourself, e.g. on this machine)"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if not resolve:
            return Target(parts.scheme, host, port, host, allowed)
        raise UnsafeWebhookUrl(
            f"webhook host {host!r} does not resolve: check the name, or use the receiver's address"
        ) from exc
    # an AF_INET/AF_INET6 sockaddr starts with the address as a string (typeshed: str | int)
    addresses = [ipaddress.ip_address(cast(str, info[4][0]).split("%", 1)[0]) for info in infos]
    if not allowed:
        bad = [str(a) for a in addresses if not is_public(a)]
        if bad:
            raise UnsafeWebhookUrl(
                f"webhook host {host!r} resolves to a non-public address ({', '.join(bad)}); "
                f"to deliver to a receiver of your own there, add {host!r} to "
                f"{ALLOWED_HOSTS_SETTING} (comma-separated hosts; they may also use http) and "
                "restart the service"
            )
    return Target(parts.scheme, host, port, str(addresses[0]), allowed)
