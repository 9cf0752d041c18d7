"""Which URLs a request may make the plugin fetch: parsing, address classification, the policy.

A URL in a chat message or a tool parameter is chosen by whoever writes the prompt
or the workflow, and the plugin fetches it from inside the Dify deployment: without
a guard, ``http://169.254.169.254/latest/meta-data/`` (cloud credentials),
``http://redis:6379/`` or ``http://127.0.0.1:5002/`` (the plugin daemon) are one
image URL away (server-side request forgery). This module decides, before any
connection, which addresses a URL may be fetched from; ``tritonmm.fetch_guard``
then connects to exactly those. Here:

* the URL is parsed once, with httpx's parser, the one that also builds the request,
  so the checked host and the fetched host cannot differ. Only http and https,
  no user info, no whitespace, control characters or backslashes;
* the host is resolved once and refused when **any** address is loopback,
  private (RFC 1918, fc00::/7), link-local (169.254.0.0/16, fe80::/10), shared
  (100.64.0.0/10), unspecified, multicast, reserved or otherwise not public,
  IPv4 embedded in IPv6 (``::ffff:127.0.0.1``, 6to4, NAT64) included. Numeric
  host spellings that ``inet_aton`` accepts (``127.1``, ``0x7f000001``,
  ``2130706433``, ``017700000001``) are decoded here, never handed to a resolver
  that might read them differently; ``localhost`` and ``*.localhost`` are
  loopback by name (RFC 6761).

Some private addresses are legitimate: Dify hands tools their files as signed URLs
on ``FILES_URL`` / ``INTERNAL_FILES_URL``, typically ``http://api:5001`` inside the
Docker network. :class:`UrlPolicy` allows such base URLs by name, and
``allow_private`` opens private networks wholesale for intranet deployments. Cloud
metadata endpoints stay refused even then; only an explicit base URL reaches them.

A refused URL is ``InvalidInput``; a host that does not resolve is
``ConnectionFailed``. Messages name the URL's host and path but never its query
string, where Dify's signatures live.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import httpx

from tritonmm.errors import ConnectionFailed, InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple]]  # socket.getaddrinfo's signature and result

MAX_URL_LENGTH = 8192
SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
# Where Dify tells plugins its file URLs live (the plugin daemon shares the API's
# environment in Dify's docker-compose); INTERNAL_FILES_URL wins in Dify when set.
DIFY_FILES_ENV = ("INTERNAL_FILES_URL", "FILES_URL")
DIFY_FILES_PATH = "/files/"  # every signed file URL: /files/<id>/file-preview, /files/tools/<id>.<ext>
PRIVATE_HINT = "only public addresses are fetched unless private URLs are allowed in the credentials"

_NETWORKS = {
    # Not caught by ipaddress's flags on every Python version, or worth their own name.
    "shared (carrier-grade NAT)": ipaddress.ip_network("100.64.0.0/10"),
    "this-network": ipaddress.ip_network("0.0.0.0/8"),  # connect() to 0.x may reach the host itself
}
# Instance metadata services: cloud credentials. Refused even where private
# networks are allowed; reachable only through an explicitly allowed base URL.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.123", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_HOST_NAME = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


@dataclass(frozen=True)
class _Base:
    scheme: str
    host: str
    port: int
    path: str  # "/" or a prefix ending in "/"


@dataclass(frozen=True)
class UrlPolicy:
    """Which URLs may be fetched beyond public internet addresses.

    ``allowed_base_urls``: scheme, host, port and path prefix that are always
    allowed, whatever their host resolves to (Dify's files URL inside a Docker
    network). A base without a path allows the whole origin; a path prefix matches
    whole segments (``/files/`` does not allow ``/filesystem``).
    ``allow_private``: also allow loopback, private, link-local and shared
    addresses (an intranet deployment); unspecified, multicast, reserved and cloud
    metadata addresses stay refused.
    """

    allowed_base_urls: tuple[str, ...] = ()
    allow_private: bool = False
    _bases: tuple[_Base, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bases = (self.allowed_base_urls,) if isinstance(self.allowed_base_urls, str) else self.allowed_base_urls
        object.__setattr__(self, "allowed_base_urls", tuple(bases))
        object.__setattr__(self, "_bases", tuple(_parse_base(url) for url in self.allowed_base_urls))

    def allows_base(self, url: httpx.URL) -> bool:
        """True when ``url`` lies under one of the allowed base URLs."""
        if not self._bases:
            return False
        scheme, host, port = url.scheme, normal_host(url), _port(url)
        path = url.path or "/"
        # A dot segment ("..", or "%2e%2e" that a server may decode) could climb out of the prefix.
        if any(unquote(segment) in (".", "..") for segment in path.split("/")):
            return False
        return any(
            (base.scheme, base.host, base.port) == (scheme, host, port)
            and (base.path == "/" or path.startswith(base.path) or path == base.path.rstrip("/"))
            for base in self._bases
        )


def dify_files_policy(
    *, allow_private: bool = False, extra_base_urls: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> UrlPolicy:
    """The policy for files Dify hands the plugin: ``<FILES_URL>/files/`` allowed by name.

    Reads ``INTERNAL_FILES_URL`` and ``FILES_URL`` from the environment (the plugin
    inherits the plugin daemon's, which Dify's docker-compose fills with the API's
    shared variables). A variable that is empty or not an http(s) URL is skipped:
    a deployment detail must not stop the plugin from starting.
    """
    env = os.environ if environ is None else environ
    bases: list[str] = []
    for name in DIFY_FILES_ENV:
        value = (env.get(name) or "").strip().rstrip("/")
        if not value:
            continue
        candidate = value + DIFY_FILES_PATH
        try:
            _parse_base(candidate)
        except InvalidInput:
            continue
        if candidate not in bases:
            bases.append(candidate)
    return UrlPolicy(allowed_base_urls=(*bases, *extra_base_urls), allow_private=allow_private)


def check_url(
    url: str, policy: UrlPolicy, resolve: Resolver = socket.getaddrinfo, *, what: str = "URL"
) -> list[IPAddress]:
    """The addresses ``url`` may be fetched from, in resolver order; InvalidInput if refused.

    Every address is checked, not only the first: a client picks among them, and
    an attacker controls the order. ``ConnectionFailed`` when the host does not
    resolve.
    """
    return check_parsed(parse_url(url, what), policy, resolve, what)


def url_display(url: str | httpx.URL) -> str:
    """``url`` fit for a message or a log: scheme, host and path, no user info or query."""
    if isinstance(url, str):
        try:
            url = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            return repr(url.split("?", 1)[0][:80])
    path = url.path if len(url.path) <= 80 else url.path[:77] + "..."
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


# --- parsing ---------------------------------------------------------------------------------------


def parse_url(url: str, what: str) -> httpx.URL:
    if not isinstance(url, str) or not url:
        raise InvalidInput(f"{what}: the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"{what}: the URL is {len(url)} characters long, above {MAX_URL_LENGTH}")
    # Parsers disagree about these (a backslash is a slash to browsers, not to httpx).
    if _FORBIDDEN_CHARS.search(url):
        raise InvalidInput(f"{what}: the URL contains whitespace, control characters or a backslash")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise InvalidInput(f"{what}: {url_display(url)} is not a valid URL") from None
    if parsed.scheme not in SCHEMES:
        raise InvalidInput(f"{what}: only http(s) URLs can be fetched, got {url.split('?', 1)[0][:80]!r}")
    if parsed.userinfo:
        raise InvalidInput(f"{what}: URLs with user info (user@host) are not fetched")
    if not parsed.raw_host:
        raise InvalidInput(f"{what}: {url_display(url)} has no host")
    if parsed.port == 0:
        raise InvalidInput(f"{what}: {url_display(parsed)} has port 0")
    return parsed


def _parse_base(url: str) -> _Base:
    parsed = parse_url(url, "allowed base URL")
    path = parsed.path or "/"
    return _Base(parsed.scheme, normal_host(parsed), _port(parsed), path if path.endswith("/") else path + "/")


def normal_host(url: httpx.URL) -> str:
    """The host as compared and resolved: IDNA ASCII, lower case, without one trailing dot."""
    host = url.raw_host.decode("ascii").lower()
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def _port(url: httpx.URL) -> int:
    return url.port or DEFAULT_PORTS[url.scheme]


def literal_address(host: str, what: str) -> IPAddress | None:
    """The address a numeric host spells (every form inet_aton accepts), else None for a name."""
    if ":" in host:  # only an IPv6 literal has colons (httpx has removed the brackets)
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%"))
        except ValueError:
            raise InvalidInput(f"{what}: {host!r} is not a valid IPv6 address") from None
    labels = host.split(".")
    # A top-level domain is never all digits, so a numeric last label means an IPv4 spelling.
    if not _NUMERIC_LABEL.match(labels[-1]):
        return None
    value = _inet_aton(labels)
    if value is None:
        raise InvalidInput(f"{what}: {host!r} is neither a host name nor a valid IPv4 address")
    return ipaddress.IPv4Address(value)


def _inet_aton(labels: list[str]) -> int | None:
    """inet_aton(3): 1 to 4 parts, each decimal, octal (leading 0) or hex (0x); the last fills the rest."""
    if not 1 <= len(labels) <= 4:
        return None
    numbers = []
    for label in labels:
        try:
            if label.startswith("0x"):
                numbers.append(int(label[2:], 16))
            elif label.startswith("0") and len(label) > 1:
                numbers.append(int(label[1:], 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:  # "0x", "09", "", a letter
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in head:
        value = value * 256 + n
    return value * 256 ** (5 - len(numbers)) + last


# --- checking --------------------------------------------------------------------------------------


def check_parsed(url: httpx.URL, policy: UrlPolicy, resolve: Resolver, what: str) -> list[IPAddress]:
    """:func:`check_url` for a URL already parsed by :func:`parse_url` (a redirect's target)."""
    host = normal_host(url)
    port = _port(url)
    literal = literal_address(host, what)
    if literal is None and not _HOST_NAME.match(host):
        raise InvalidInput(f"{what}: {host!r} is not a valid host name")
    allowed_base = policy.allows_base(url)
    if literal is None and not allowed_base and not policy.allow_private and _is_localhost(host):
        raise InvalidInput(f"{what}: refused to fetch {url_display(url)}: {host} is a loopback name; {PRIVATE_HINT}")
    addresses = [literal] if literal is not None else _resolve(host, port, resolve, url, what)
    if allowed_base:
        return addresses
    for address in addresses:
        reason = _forbidden(address, policy.allow_private)
        if reason:
            if literal is None:
                shown = f"{host} resolves to {address}, which"
            else:
                shown = host if host == str(address) else f"{host} ({address})"
            raise InvalidInput(
                f"{what}: refused to fetch {url_display(url)}: {shown} is {_article(reason)} {reason} address; {PRIVATE_HINT}"
            )
    return addresses


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _is_localhost(host: str) -> bool:
    return host == "localhost" or host.endswith(".localhost")


def _resolve(host: str, port: int, resolve: Resolver, url: httpx.URL, what: str) -> list[IPAddress]:
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise ConnectionFailed(f"{what}: cannot fetch {url_display(url)}: cannot resolve {host} ({exc})") from None
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            address = ipaddress.ip_address(str(info[4][0]))
        except (IndexError, TypeError, ValueError):
            continue  # not an IP socket address (AF_UNIX from an odd resolver): never connected to
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ConnectionFailed(f"{what}: cannot fetch {url_display(url)}: {host} has no IP address")
    return addresses


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and routes to (mapped, 6to4, NAT64), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _forbidden(address: IPAddress, allow_private: bool) -> str | None:
    """Why ``address`` may not be fetched from under this policy, or None."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        inner = _forbidden(embedded, allow_private)
        return f"{inner} (IPv4 {embedded})" if inner else None
    if address.is_unspecified or address in _NETWORKS["this-network"]:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        reason = "loopback"
    elif address.is_link_local:
        reason = "link-local"
    elif address in _NETWORKS["shared (carrier-grade NAT)"]:
        reason = "shared (carrier-grade NAT)"
    elif address.is_reserved:
        return "reserved"
    elif address.is_private:
        reason = "private"
    elif not address.is_global:
        reason = "non-public"
    else:
        return None
    return None if allow_private else reason
