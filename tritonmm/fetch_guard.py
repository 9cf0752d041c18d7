"""Download a URL that a request names, from exactly the addresses the URL policy checked.

``tritonmm.url_policy`` decides which addresses a URL may be fetched from. This
module then:

* connects to exactly the address it checked: the request goes to the IP,
  with the original ``Host`` header and, for https, the original name as TLS SNI
  and certificate host name (httpx's documented ``sni_hostname`` request
  extension). A DNS answer that changes between the check and the connection
  (DNS rebinding) therefore never reaches the connection;
* follows at most :data:`MAX_REDIRECTS` redirects itself, checking every hop the
  same way; enforces the size cap on the declared length and while streaming, and
  one deadline for the whole download.

Proxy variables (``HTTP_PROXY``...) are deliberately not used: a proxy would
resolve and connect on its own terms, so the guard could not vouch for the address.
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured, as httpx does, for a private CA.
This is the one place outside the Triton client that opens HTTP connections: it
talks to whatever host a media URL names, never to Triton.

Errors are :mod:`tritonmm.errors`: ``InvalidInput`` for a refused URL, a non-200
answer (403 and 404 included: an expired Dify signature is a bad request, not an
outage) or an oversized body; ``ConnectionFailed`` / ``RequestTimeout`` when the
host cannot be resolved, reached or read in time. Messages name the URL's host and
path but never its query string, where Dify's signatures live.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from functools import lru_cache

import certifi
import httpx

from tritonmm.errors import ConnectionFailed, InvalidInput, RequestTimeout
from tritonmm.url_policy import (
    IPAddress,
    Resolver,
    UrlPolicy,
    check_parsed,
    literal_address,
    normal_host,
    parse_url,
    url_display,
)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def fetch(
    url: str,
    policy: UrlPolicy,
    *,
    max_bytes: int,
    timeout: float,
    what: str,
    resolve: Resolver = socket.getaddrinfo,
) -> bytes:
    """The body of ``url`` (HTTP 200), at most ``max_bytes`` long, within ``timeout`` seconds in all.

    Redirects are followed (at most :data:`MAX_REDIRECTS`), each hop checked
    against ``policy`` before anything is sent to it.
    """
    deadline = time.monotonic() + timeout
    target = parse_url(url, what)
    # trust_env=False: no proxy or netrc, the connection must go where the check says.
    verify = _tls_context(os.environ.get("SSL_CERT_FILE") or certifi.where(), os.environ.get("SSL_CERT_DIR") or None)
    with httpx.Client(trust_env=False, follow_redirects=False, verify=verify) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            addresses = check_parsed(target, policy, resolve, what)
            response = _connect(client, target, addresses, deadline, timeout, what)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    try:
                        target = parse_url(str(target.join(location)), what)
                    except httpx.InvalidURL:
                        raise InvalidInput(f"{what}: {url_display(target)} redirects to an invalid URL") from None
                    continue
                return _read_body(response, target, max_bytes, deadline, timeout, what)
            finally:
                response.close()
    raise InvalidInput(f"{what}: {url_display(url)} redirects more than {MAX_REDIRECTS} times")


@lru_cache(maxsize=4)
def _tls_context(cafile: str, capath: str | None) -> ssl.SSLContext:
    """Certificate verification as httpx does it, SSL_CERT_FILE / SSL_CERT_DIR included (an intranet CA).

    ``trust_env=False`` would drop those variables too; only the proxy settings are
    meant to be ignored. Built once per CA location: loading the bundle takes ~20 ms.
    """
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _remaining(deadline: float, timeout: float, url: httpx.URL, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise RequestTimeout(f"{what}: fetching {url_display(url)} timed out after {timeout:g} s")
    return left


def _connect(
    client: httpx.Client,
    url: httpx.URL,
    addresses: list[IPAddress],
    deadline: float,
    timeout: float,
    what: str,
) -> httpx.Response:
    """Send the GET to the first checked address that accepts a connection; the response is streaming."""
    headers = {
        "Host": url.netloc.decode("ascii"),
        # Images and media are compressed already; identity keeps the size cap on real bytes.
        "Accept-Encoding": "identity",
    }
    extensions = {}
    if url.scheme == "https" and literal_address(normal_host(url), what) is None:
        # TLS names the host, not the IP we connect to: SNI and certificate check use it.
        extensions["sni_hostname"] = normal_host(url)
    failure: Exception | None = None
    for address in addresses:
        try:
            request = client.build_request(
                "GET",
                url.copy_with(host=str(address)),
                headers=headers,
                extensions=extensions,
                timeout=_remaining(deadline, timeout, url, what),
            )
            return client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            failure = exc  # nothing was sent: the next checked address may answer
        except httpx.TimeoutException:
            raise RequestTimeout(f"{what}: fetching {url_display(url)} timed out after {timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ConnectionFailed(f"{what}: cannot fetch {url_display(url)}: {_reason(exc)}") from None
    if isinstance(failure, httpx.ConnectTimeout):
        raise RequestTimeout(f"{what}: fetching {url_display(url)} timed out after {timeout:g} s")
    raise ConnectionFailed(f"{what}: cannot fetch {url_display(url)}: {_reason(failure)}")


def _read_body(
    response: httpx.Response, url: httpx.URL, max_bytes: int, deadline: float, timeout: float, what: str
) -> bytes:
    if response.status_code != 200:
        hint = ""
        if response.status_code in (401, 403):
            hint = " (a signed file link may have expired: Dify's links are valid for FILES_ACCESS_TIMEOUT seconds)"
        raise InvalidInput(f"{what}: fetching {url_display(url)} returned HTTP {response.status_code}{hint}")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InvalidInput(f"{what}: {declared} bytes at {url_display(url)} exceed the {max_bytes}-byte cap")
    chunks, size = [], 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise InvalidInput(f"{what}: {url_display(url)} is larger than the {max_bytes}-byte cap")
            chunks.append(chunk)
            # The read timeout bounds each wait; this bounds a server that drips bytes forever.
            _remaining(deadline, timeout, url, what)
    except httpx.TimeoutException:
        raise RequestTimeout(f"{what}: fetching {url_display(url)} timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ConnectionFailed(f"{what}: cannot fetch {url_display(url)}: {_reason(exc)}") from None
    return b"".join(chunks)


def _reason(exc: Exception | None) -> str:
    text = str(exc) if exc is not None else ""
    return text or (type(exc).__name__ if exc is not None else "no address answered")
