"""The servers a credential set names: comma-separated lists parsed into endpoints, each mistake
refused with the field and the item named; a name's addresses as the endpoint pool connects to them."""

from __future__ import annotations

import socket

import pytest

from tritonmm.errors import InvalidInput
from tritonmm.server_endpoints import ServerEndpoint
from tritonmm.settings import DEFAULT_FAILOVER_TIMEOUT, ServerSettings
from tritonmm.transport.endpoints import expand


def endpoints(server_url: str, grpc_endpoint: str = "") -> list[tuple[str, str]]:
    settings = ServerSettings.from_credentials({"server_url": server_url, "grpc_endpoint": grpc_endpoint})
    return [(e.http_url, e.grpc_target) for e in settings.endpoints]


def test_lists_pair_up_in_order() -> None:
    assert endpoints("http://a:8000, https://b.example.com/, c:9000", "a:8001,b.example.com:443 , [fd00::3]:8001") == [
        ("http://a:8000", "a:8001"),
        ("https://b.example.com", "b.example.com:443"),
        ("http://c:9000", "[fd00::3]:8001"),
    ]


def test_an_empty_grpc_field_means_each_hosts_port_8001() -> None:
    assert endpoints("http://a:8000,http://[fd00::2]:8000") == [
        ("http://a:8000", "a:8001"),
        ("http://[fd00::2]:8000", "[fd00::2]:8001"),
    ]


def test_one_server_reads_as_before() -> None:
    settings = ServerSettings.from_credentials({"server_url": "triton:8000/"})
    assert settings.http_url == "http://triton:8000" and settings.grpc_target == "triton:8001"
    assert settings.failover_timeout == DEFAULT_FAILOVER_TIMEOUT and settings.fallback_model == ""


@pytest.mark.parametrize(
    ("credentials", "message"),
    [
        ({"server_url": "http://a:8000,http://b:8000", "grpc_endpoint": "a:8001"},
         "'grpc_endpoint' lists 1 endpoint(s) and 'server_url' 2: give one gRPC endpoint per server URL"),
        ({"server_url": "http://a:8000,http://b:8000\nhttp://c:8000"},
         "'server_url' item 2 contains a space, line break or control character"),
        ({"server_url": "http://a:8000,ftp://b"}, "'server_url' item 2 must be an http(s) URL"),
        ({"server_url": "http://a:8000,http://b:80000"}, "'server_url' item 2 has a bad port"),
        ({"server_url": "http://a:8000,http://b:x"}, "'server_url' item 2 has a bad port"),
        ({"server_url": "http://:8000"}, "'server_url' must be an http(s) URL"),
        ({"server_url": "http://a:8000,,http://b:8000"}, "'server_url' item 2 is empty: remove the extra comma"),
        ({"server_url": "http://a:8000,http://b:8000", "grpc_endpoint": "a:8001,b"},
         "'grpc_endpoint' item 2 must be host:port"),
        ({"server_url": "http://a", "grpc_endpoint": "a:70000"}, "'grpc_endpoint' has a bad port"),
        ({"server_url": "http://a", "grpc_endpoint": "fd00::1:8001"}, "an IPv6 address in brackets"),
        ({"server_url": "http://a:8000,http://A:8000/"}, "'server_url' names http://A:8000 twice"),
        ({"server_url": "http://a:8000,http://a:9000"}, "two server URLs would share the gRPC endpoint a:8001"),
        ({"server_url": "http://a", "failover_timeout": "-1"}, "'failover_timeout' must be 0 or more seconds"),
        ({"server_url": "http://a", "failover_timeout": "soon"}, "'failover_timeout' must be a number of seconds"),
        ({"server_url": "http://a", "fallback_model": "chat, other"}, "'fallback_model' must be one model name"),
    ],
)  # fmt: skip
def test_each_mistake_is_refused_naming_the_field_and_item(credentials: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        ServerSettings.from_credentials(credentials)
    assert message in str(raised.value)


def test_whitespace_around_items_is_trimmed() -> None:
    assert endpoints(" http://a:8000\n,\thttp://b:8000 ") == [("http://a:8000", "a:8001"), ("http://b:8000", "b:8001")]


def test_failover_settings_are_read() -> None:
    settings = ServerSettings.from_credentials(
        {"server_url": "http://a", "failover_timeout": "0", "fallback_model": " chat_small "}
    )
    assert settings.failover_timeout == 0.0 and settings.fallback_model == "chat_small"


def dns(*ips: str):
    def resolve(host: str, port: int, **kwargs) -> list:
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips]

    return resolve


def test_a_name_becomes_one_address_per_ip_that_speaks_as_the_name() -> None:
    found = expand(ServerEndpoint("http://tritonmm-headless.ns.svc:8000", "tritonmm-headless.ns.svc:8001"),
                   dns("10.1.0.4", "10.1.0.4", "fd00::5"))  # fmt: skip
    assert [key for key, _ in found] == ["10.1.0.4", "fd00::5"]  # each address once
    first, second = (address for _, address in found)
    assert (first.http_base, first.grpc_target) == ("http://10.1.0.4:8000", "10.1.0.4:8001")
    assert (second.http_base, second.grpc_target) == ("http://[fd00::5]:8000", "[fd00::5]:8001")
    assert first.http_options() == {"headers": {"Host": "tritonmm-headless.ns.svc:8000"}}
    assert first.authority == "tritonmm-headless.ns.svc:8001"
    assert first.label == "http://tritonmm-headless.ns.svc:8000 (10.1.0.4)"


def test_an_ip_or_a_grpc_endpoint_on_another_name_is_used_as_configured() -> None:
    for endpoint in (
        ServerEndpoint("http://10.0.0.1:8000", "10.0.0.1:8001"),
        ServerEndpoint("http://a:8000", "b:8001"),
    ):
        [(key, address)] = expand(endpoint, dns("10.9.9.9"))
        assert key == "" and (address.http_base, address.grpc_target) == (endpoint.http_url, endpoint.grpc_target)
        assert address.http_options() == {}


def test_a_name_that_does_not_resolve_now_is_no_answer() -> None:
    def nxdomain(host: str, port: int, **kwargs) -> list:
        raise socket.gaierror(socket.EAI_NONAME, host)

    assert expand(ServerEndpoint("http://gone:8000", "gone:8001"), nxdomain) is None
