"""The SSRF guard: URL checks with a stubbed resolver, downloads from real local servers.

No traffic ever leaves loopback: addresses that are not loopback appear only in
the stub resolver's answers to ``check_url``, which connects to nothing. Real
downloads go to http.server instances on 127.0.0.x, allowed by policy.
"""

from __future__ import annotations

import http.server
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tritonmm import media
from tritonmm.errors import ConnectionFailed, InvalidInput, RequestTimeout
from tritonmm.fetch_guard import MAX_REDIRECTS, fetch
from tritonmm.url_policy import UrlPolicy, check_url, dify_files_policy

BODY = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100  # 608 bytes


def resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """getaddrinfo over a fixed table; records each name it is asked for in ``calls``."""

    def resolve(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in table[host]
        ]

    return resolve


PUBLIC = "93.184.215.14"
NAMES = {
    "public.test": [PUBLIC],
    "public6.test": ["2606:4700:4700::1111"],
    "rfc1918.test": ["10.1.2.3"],
    "rfc1918b.test": ["172.16.5.4"],
    "rfc1918c.test": ["192.168.1.1"],
    "metadata.test": ["169.254.169.254"],
    "linklocal.test": ["169.254.10.20"],
    "cgnat.test": ["100.64.0.1"],
    "reserved.test": ["240.0.0.1"],
    "multicast.test": ["224.0.0.251"],
    "broadcast.test": ["255.255.255.255"],
    "ula.test": ["fd00::1"],
    "linklocal6.test": ["fe80::1"],
    "multicast6.test": ["ff02::1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "mapped-loop.test": ["::ffff:127.0.0.1"],
    "nat64.test": ["64:ff9b::7f00:1"],
    "sixtofour.test": ["2002:c0a8:101::1"],
    "loop.test": ["127.0.0.1"],
    "mixed.test": [PUBLIC, "127.0.0.1"],  # one bad address refuses the host
}
STUB = resolver(NAMES)
STRICT = UrlPolicy()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("rfc1918.test", "private"),
        ("rfc1918b.test", "private"),
        ("rfc1918c.test", "private"),
        ("metadata.test", "cloud metadata"),
        ("linklocal.test", "link-local"),
        ("cgnat.test", "shared (carrier-grade NAT)"),
        ("reserved.test", "reserved"),
        ("multicast.test", "multicast"),
        ("broadcast.test", "reserved"),
        ("ula.test", "private"),
        ("linklocal6.test", "link-local"),
        ("multicast6.test", "multicast"),
        ("mapped.test", "private (IPv4 10.0.0.1)"),
        ("mapped-loop.test", "loopback (IPv4 127.0.0.1)"),
        ("nat64.test", "loopback (IPv4 127.0.0.1)"),
        ("sixtofour.test", "private (IPv4 192.168.1.1)"),
        ("loop.test", "loopback"),
        ("mixed.test", "loopback"),
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(host: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_url(f"http://{host}/cat.png?sign=SECRET", STRICT, STUB, what="image 1")
    message = str(raised.value)
    assert message.startswith(f"image 1: refused to fetch http://{host}/cat.png: ")
    assert f" {reason} address" in message
    assert "SECRET" not in message  # a signed query string never reaches a message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:5002/",
        "http://127.1/",
        "http://0x7f000001/",
        "http://2130706433/",
        "http://017700000001/",
        "http://0177.0.0.1/",
        "http://127.000.000.001/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://localhost/",
        "http://LOCALHOST./",
        "http://localhost.:80/",
        "http://api.localhost/",
        "http://0/",
        "http://0.0.0.0:8000/",
        "http://[::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/",  # 169.254.169.254
        "http://10.0.0.1/",
        "http://[fd12:3456::1]/",
        "http://[fe80::1%25eth0]/",
    ],
)
def test_numeric_and_loopback_forms_are_refused_without_resolving(url: str) -> None:
    calls: list[str] = []
    # httpx itself rejects a dotted quad with leading zeros; either way nothing is fetched.
    with pytest.raises(InvalidInput, match="refused to fetch|is not a valid URL"):
        check_url(url, STRICT, resolver({}, calls))
    assert calls == []  # numeric spellings are decoded here, localhost refused by name


def test_numeric_forms_decode_as_inet_aton_does() -> None:
    allow = UrlPolicy(allow_private=True)
    for url in ("http://127.1/", "http://0x7f000001/", "http://2130706433/", "http://017700000001/"):
        assert [str(a) for a in check_url(url, allow, resolver({}))] == ["127.0.0.1"]
    assert [str(a) for a in check_url("http://10.258/", allow, resolver({}))] == ["10.0.1.2"]
    assert [str(a) for a in check_url("http://1.2.3/", UrlPolicy(), resolver({}))] == ["1.2.0.3"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("file:///etc/passwd", "only http"),
        ("gopher://public.test/", "only http"),
        ("ftp://public.test/x", "only http"),
        ("http://user:pass@public.test/", "user info"),
        ("http://public.test@127.0.0.1/", "user info"),
        ("http://public.test\\@127.0.0.1/", "backslash"),
        ("http://public.test/a b", "whitespace"),
        ("http://public.test/\r\nX-Injected: 1", "control characters"),
        ("http:///path", "has no host"),
        ("http://:80/path", "has no host"),
        ("http://1.2.3.4.5/", "neither a host name nor a valid IPv4"),
        ("http://0x/", "neither a host name nor a valid IPv4"),
        ("http://08/", "neither a host name nor a valid IPv4"),
        ("http://public.test:0/", "port 0"),
        ("", "empty"),
    ],
)
def test_malformed_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        check_url(url, STRICT, STUB)


def test_public_addresses_pass_in_resolver_order() -> None:
    assert [str(a) for a in check_url("https://public.test/x.png", STRICT, STUB)] == [PUBLIC]
    assert [str(a) for a in check_url("http://public6.test/", STRICT, STUB)] == ["2606:4700:4700::1111"]
    assert [str(a) for a in check_url("http://public.test./", STRICT, STUB)] == [PUBLIC]  # trailing dot


def test_unresolvable_host_is_a_connection_failure() -> None:
    with pytest.raises(ConnectionFailed, match="cannot resolve nowhere.test"):
        check_url("http://nowhere.test/x", STRICT, STUB)


def test_allow_private_opens_private_networks_but_not_metadata() -> None:
    allow = UrlPolicy(allow_private=True)
    for host in ("rfc1918.test", "linklocal.test", "cgnat.test", "ula.test", "loop.test", "mapped-loop.test"):
        assert check_url(f"http://{host}/", allow, STUB)
    assert check_url("http://localhost/", allow, resolver({"localhost": ["127.0.0.1"]}))
    for host, reason in (("metadata.test", "cloud metadata"), ("multicast.test", "multicast")):
        with pytest.raises(InvalidInput, match=reason):
            check_url(f"http://{host}/", allow, STUB)
    with pytest.raises(InvalidInput, match="unspecified"):
        check_url("http://0.0.0.0/", allow, STUB)


def test_allowed_base_url_passes_whatever_it_resolves_to() -> None:
    policy = UrlPolicy(allowed_base_urls=("http://API:5001/files/",))
    stub = resolver({"api": ["172.18.0.5"]})
    for url in (
        "http://api:5001/files/9f2c/file-preview?timestamp=1&nonce=2&sign=3",
        "http://api:5001/files/tools/abc.png?sign=x",
        "http://api.:5001/files/x",
        "http://api:5001/files",
    ):
        assert [str(a) for a in check_url(url, policy, stub)] == ["172.18.0.5"], url
    for url in (
        "http://api:5001/console/api/setup",  # outside the prefix
        "http://api:5001/filesystem",  # prefixes match whole segments
        "http://api:5001/files/../console",  # dot segments cannot climb out
        "http://api:5001/files/%2e%2e/console",  # nor encoded ones a server may decode
        "https://api:5001/files/x",  # another scheme
        "http://api:5002/files/x",  # another port
        "http://api/files/x",  # the default port is another port
    ):
        with pytest.raises(InvalidInput, match="private address"):
            check_url(url, policy, stub)


def test_dify_files_policy_reads_the_environment() -> None:
    env = {"FILES_URL": "http://localhost:5001/", "INTERNAL_FILES_URL": "http://api:5001"}
    policy = dify_files_policy(environ=env)
    assert policy.allowed_base_urls == ("http://api:5001/files/", "http://localhost:5001/files/")
    assert not policy.allow_private
    assert check_url("http://localhost:5001/files/x", policy, resolver({"localhost": ["127.0.0.1"]}))
    with pytest.raises(InvalidInput, match="loopback name"):
        check_url("http://localhost:5001/v1/chat", policy, resolver({"localhost": ["127.0.0.1"]}))
    # A malformed or empty variable is skipped rather than stopping the plugin.
    assert dify_files_policy(environ={"FILES_URL": "", "INTERNAL_FILES_URL": "api:5001"}).allowed_base_urls == ()
    assert dify_files_policy(allow_private=True, environ={}).allow_private


# --- real downloads from local servers ------------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        super().__init__(address, Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self._send(200, BODY)
        elif path == "/echo-host":
            self._send(200, self.headers.get("Host", "").encode())
        elif path == "/big-declared":
            self._send(200, b"x" * 5000)
        elif path == "/big-streamed":
            # No Content-Length: the cap must hold while streaming.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"x" * 100)
            self.close_connection = True
        elif path in ("/missing", "/forbidden"):
            self._send(404 if path == "/missing" else 403, b"no")
        elif path.startswith("/redirect"):
            target = self.headers.get("X-Target", "")
            self.send_response(302)
            self.send_header("Location", self.server.redirects.get(path, target))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/slow":
            time.sleep(1.5)
            self._send(200, BODY)
        elif path == "/drip":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(40):  # 4 s of one byte every 0.1 s: every read is quick, the whole is not
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
            self.close_connection = True
        else:
            self._send(404, b"unknown")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(host: str = "127.0.0.1", port: int = 0) -> Recorder:
    server = Recorder((host, port))
    server.redirects = {}
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def site() -> Iterator[Recorder]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def other() -> Iterator[Recorder]:
    server = serve()
    yield server
    server.shutdown()
    server.server_close()


def allowed(server: Recorder) -> UrlPolicy:
    return UrlPolicy(allowed_base_urls=(f"http://127.0.0.1:{server.port}/",))


def get(url: str, policy: UrlPolicy, *, max_bytes: int = 10_000, timeout: float = 5.0, **kwargs: object) -> bytes:
    return fetch(url, policy, max_bytes=max_bytes, timeout=timeout, what="image 1", **kwargs)


def test_fetch_returns_the_body(site: Recorder) -> None:
    assert get(f"http://127.0.0.1:{site.port}/ok?sign=abc", allowed(site)) == BODY
    assert site.requests == [("/ok?sign=abc", f"127.0.0.1:{site.port}")]


def test_local_server_is_refused_by_default(site: Recorder) -> None:
    with pytest.raises(InvalidInput, match="127.0.0.1 is a loopback address"):
        get(f"http://127.0.0.1:{site.port}/ok", UrlPolicy())
    assert site.requests == []


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
def test_size_cap_names_the_cap(site: Recorder, path: str) -> None:
    with pytest.raises(InvalidInput, match="1000-byte cap"):
        get(f"http://127.0.0.1:{site.port}{path}", allowed(site), max_bytes=1000)
    assert len(get(f"http://127.0.0.1:{site.port}{path}", allowed(site), max_bytes=5000)) == 5000


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/forbidden", 403)])
def test_http_errors_are_invalid_input_without_the_signature(site: Recorder, path: str, status: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        get(f"http://127.0.0.1:{site.port}{path}?timestamp=1&sign=SECRET", allowed(site))
    message = str(raised.value)
    assert f"returned HTTP {status}" in message
    assert f"127.0.0.1:{site.port}{path}" in message and "SECRET" not in message
    assert ("may have expired" in message) == (status == 403)


def test_redirect_to_a_forbidden_port_never_reaches_it(site: Recorder, other: Recorder) -> None:
    site.redirects["/redirect"] = f"http://127.0.0.1:{other.port}/ok"
    with pytest.raises(InvalidInput, match=f"refused to fetch http://127.0.0.1:{other.port}/ok"):
        get(f"http://127.0.0.1:{site.port}/redirect", allowed(site))
    assert [path for path, _ in site.requests] == ["/redirect"]
    assert other.requests == []  # the second server received nothing


def test_redirect_within_the_policy_is_followed(site: Recorder) -> None:
    site.redirects["/redirect"] = "/ok"  # relative, as servers often send
    assert get(f"http://127.0.0.1:{site.port}/redirect", allowed(site)) == BODY
    assert [path for path, _ in site.requests] == ["/redirect", "/ok"]


def test_redirect_loop_stops(site: Recorder) -> None:
    site.redirects["/redirect"] = "/redirect"
    with pytest.raises(InvalidInput, match=f"redirects more than {MAX_REDIRECTS} times"):
        get(f"http://127.0.0.1:{site.port}/redirect", allowed(site))
    assert len(site.requests) == MAX_REDIRECTS + 1


def test_slow_server_times_out(site: Recorder) -> None:
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="timed out after 0.5 s"):
        get(f"http://127.0.0.1:{site.port}/slow", allowed(site), timeout=0.5)
    assert time.monotonic() - started < 1.4


def test_dripping_server_hits_the_overall_deadline(site: Recorder) -> None:
    started = time.monotonic()
    with pytest.raises(RequestTimeout, match="timed out after 1 s"):
        get(f"http://127.0.0.1:{site.port}/drip", allowed(site), timeout=1.0)
    assert time.monotonic() - started < 2.5


def test_closed_port_is_a_connection_failure(site: Recorder) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(ConnectionFailed, match="cannot fetch"):
            get(f"http://127.0.0.1:{port}/ok", UrlPolicy(allow_private=True))


def _second_loopback_server(port: int) -> Recorder | None:
    try:
        return serve("127.0.0.2", port)
    except OSError:
        return None


def test_dns_rebinding_connects_only_to_the_checked_address(site: Recorder) -> None:
    """The first answer is checked and used; a later, different answer is never asked for.

    127.0.0.2 stands in for the address a rebinding DNS server would return on the
    second lookup: a server listens there on the same port and must see nothing.
    """
    rebound = _second_loopback_server(site.port)
    if rebound is None:
        pytest.skip("cannot bind 127.0.0.2 here")
    try:
        calls: list[str] = []
        answers = iter([["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2"]])

        def rebinding(host: str, port: int, *args: object, **kwargs: object) -> list[tuple]:
            calls.append(host)
            return resolver({host: next(answers)})(host, port)

        policy = UrlPolicy(allowed_base_urls=(f"http://files.test:{site.port}/",))
        body = get(f"http://files.test:{site.port}/echo-host", policy, resolve=rebinding)
        assert body == f"files.test:{site.port}".encode()  # the original Host header
        assert calls == ["files.test"]  # resolved once, for the check
        assert rebound.requests == []
    finally:
        rebound.shutdown()
        rebound.server_close()


def test_unanswering_checked_address_falls_back_to_the_next_checked_one(site: Recorder) -> None:
    # 127.0.0.3 has nothing on this port; the second checked address answers.
    stub = resolver({"files.test": ["127.0.0.3", "127.0.0.1"]})
    body = get(f"http://files.test:{site.port}/echo-host", UrlPolicy(allow_private=True), resolve=stub)
    assert body == f"files.test:{site.port}".encode()


def test_one_bad_address_refuses_the_host_before_any_connection(site: Recorder) -> None:
    stub = resolver({"files.test": [PUBLIC, "127.0.0.1"]})
    with pytest.raises(InvalidInput, match="resolves to 127.0.0.1, which is a loopback address"):
        get(f"http://files.test:{site.port}/ok", UrlPolicy(), resolve=stub)
    assert site.requests == []


# --- https: the pinned IP with the original name for SNI and the certificate -----------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=files.test",
         "-addext", "subjectAltName=DNS:files.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_site(certificate: tuple[Path, Path]) -> Iterator[tuple[Recorder, list[str | None]]]:
    cert, key = certificate
    server = Recorder(("127.0.0.1", 0))
    server.redirects = {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str | None] = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server, names
    server.shutdown()
    server.server_close()


def test_https_sends_sni_and_checks_the_certificate_for_the_name(
    tls_site: tuple[Recorder, list[str | None]], certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, names = tls_site
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test certificate, as a private CA
    stub = resolver({"files.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    policy = UrlPolicy(allow_private=True)
    body = get(f"https://files.test:{server.port}/echo-host", policy, resolve=stub)
    assert body == f"files.test:{server.port}".encode()
    assert names == ["files.test"]  # SNI named the host although the connection went to 127.0.0.1
    # The certificate is checked against the URL's name, not the IP connected to.
    with pytest.raises(ConnectionFailed, match="certificate"):
        get(f"https://other.test:{server.port}/echo-host", policy, resolve=stub)


def test_media_fetch_url_goes_through_the_guard(site: Recorder) -> None:
    with pytest.raises(InvalidInput, match="loopback"):
        media.fetch_url(f"http://127.0.0.1:{site.port}/ok", max_bytes=10_000, timeout=5, what="image 1")
    assert site.requests == []
    policy = UrlPolicy(allow_private=True)
    assert (
        media.fetch_url(f"http://127.0.0.1:{site.port}/ok", max_bytes=10_000, timeout=5, what="x", policy=policy)
        == BODY
    )
