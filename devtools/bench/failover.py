"""Failover: how long traffic takes to leave a server that dies, and to come back when it returns.

Three tritonservers on 127.0.0.1 serve the bench-only ``bench_sink``, each with its own server
id (so an answer says who gave it). One core client is given all three as comma-separated
``server_url`` and ``grpc_endpoint`` lists, as the plugin's credentials take them. Callers send
small unary requests in a loop; after a steady spell the third server's whole process group is
killed (SIGKILL: no goodbye), later it is started again on the same ports.

Measured: how the traffic was spread before the kill and while C was down; requests that
failed and requests the client retried on another server; when the requests in flight at the
kill were all done; the slowest request in the 2 s after it; and how long after the restarted
server was READY its first answer came (the client probes a server it took out on
``/v2/health/ready`` after 1 s, doubling up to 10 s).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from devtools.bench import stats
from devtools.bench.models import SERVER_ID_KEY, SINK, SINK_BLOB, SINK_OUTPUTS, write_sink
from devtools.bench.report_tools import Report
from devtools.bench.stack import WORK, Stack
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient
from tritonmm.transport import failover as failover_policy
from tritonmm.transport.tensors import InputTensor
from tritonmm_server.ops.network import free_ports
from tritonmm_server.ops.repository import render_repository
from tritonmm_server.ops.server import TritonServer

NAME = "failover"
SERVERS = ("A", "B", "C")
CALLERS = 4


def models(quick: bool) -> list[str]:
    return []  # three servers of its own


def checkpoints(quick: bool) -> dict:
    return {}


def _server(server_id: str, ports: list[int]) -> TritonServer:
    source, rendered = WORK / "failover" / "source", WORK / "failover" / server_id
    write_sink(source)
    render_repository(source, rendered, overrides={SINK: {SERVER_ID_KEY: server_id}}, include=[SINK])
    http, grpc, metrics = ports
    return TritonServer(rendered, models=[SINK], http_port=http, grpc_port=grpc, metrics_port=metrics,
                        log_path=WORK / "failover" / f"{server_id}.log", exit_timeout_s=2)  # fmt: skip


class Traffic:
    """Callers sending requests in a loop; each records (start, end, server id or None on failure)."""

    def __init__(self, client: TritonClient) -> None:
        self.client = client
        self.records: list[tuple[float, float, str | None]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call, daemon=True) for _ in range(CALLERS)]

    def _call(self) -> None:
        tensor = InputTensor(SINK_BLOB, (b"ping",))
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                server = self.client.infer(SINK, [tensor], SINK_OUTPUTS)["SERVER"][0].decode()
            except Exception as exc:  # counted, not raised: the measurement is how many there are
                server = None
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self.records.append((began, time.perf_counter(), server))
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def first_from(self, server_id: str, after: float) -> float | None:
        return min((end for began, end, server in list(self.records) if server == server_id and began >= after),
                   default=None)  # fmt: skip


class _Retries(logging.Handler):
    """Counts the failover policy's "trying elsewhere" warnings: requests retried on another server."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "trying elsewhere" in record.getMessage()


def _measure(servers: dict[str, TritonServer], client: TritonClient, progress, steady_s: float) -> dict[str, Any]:
    victim = servers["C"]
    retries = _Retries()
    failover_log = logging.getLogger(failover_policy.__name__)
    failover_log.addHandler(retries)
    try:
        with Traffic(client) as traffic:
            time.sleep(steady_s)
            killed = time.perf_counter()
            progress.step(f"killing server C (pid {victim.pid}) under {CALLERS} callers")
            os.killpg(victim.pid, signal.SIGKILL)
            time.sleep(steady_s)
            victim.stop()  # reap it, remove its shared memory
            progress.step("starting server C again on the same ports")
            restarted = time.perf_counter()
            ports = [victim.ports.http, victim.ports.grpc, victim.ports.metrics]
            servers["C"] = _server("C", ports).start(timeout=300)
            ready = time.perf_counter()
            deadline = ready + 60
            while traffic.first_from("C", ready) is None and time.perf_counter() < deadline:
                time.sleep(0.05)
            back = traffic.first_from("C", ready)
    finally:
        failover_log.removeHandler(retries)
    records = traffic.records
    steady = [end - began for began, end, server in records if server and end < killed]
    in_flight = [end for began, end, _ in records if began <= killed <= end]
    soon_after = [end - began for began, end, _ in records if end >= killed and began < killed + 2.0]
    while_down = [server for began, end, server in records if killed < began and end < restarted]
    before = [server for began, end, server in records if end < killed and server]
    return {
        "requests": len(records),
        "share_before_kill": {s: round(before.count(s) / max(len(before), 1), 3) for s in SERVERS},
        "share_while_down": {s: round(while_down.count(s) / max(len(while_down), 1), 3) for s in SERVERS},
        "steady_latency_ms": stats.summary([1000 * s for s in steady]),
        "failed_requests": sum(1 for _, _, server in records if server is None),
        "retried_requests": retries.count,
        "errors": sorted(set(traffic.errors))[:5],
        "in_flight_at_kill": len(in_flight),
        "in_flight_done_ms": 1000 * (max(in_flight) - killed) if in_flight else 0.0,
        "slowest_after_kill_ms": 1000 * max(soon_after, default=0.0),
        "restart_to_ready_s": ready - restarted,
        "ready_to_first_answer_s": (back - ready) if back else None,
    }


def run(stack: Stack, quick: bool) -> dict:
    ports = free_ports(9)
    servers: dict[str, TritonServer] = {}
    try:
        for index, server_id in enumerate(SERVERS):
            stack.progress.step(f"starting failover server {server_id}")
            servers[server_id] = _server(server_id, ports[3 * index : 3 * index + 3]).start(timeout=300)
        urls = ",".join(servers[s].http_url for s in SERVERS)
        grpc = ",".join(servers[s].grpc_url for s in SERVERS)
        client = TritonClient(ServerSettings.from_credentials({"server_url": urls, "grpc_endpoint": grpc}))
        try:
            result = _measure(servers, client, stack.progress, 3.0 if quick else 6.0)
        finally:
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    return {"callers": CALLERS, **result}


def render(result: dict, report: Report) -> None:
    def share(key: str) -> str:
        return ", ".join(f"{s} {100 * v:.0f}%" for s, v in result[key].items())

    back = result["ready_to_first_answer_s"]
    report.paragraph(
        f"Three local servers, one client given all three (comma-separated credentials), {result['callers']} "
        f"callers sending small unary requests in a loop ({result['requests']} in all); steady latency "
        f"{stats.fmt(result['steady_latency_ms'])} ms. Server C is killed with SIGKILL mid-traffic, then "
        "started again on the same ports."
    )
    report.table(["what", "measured"], [
        ["traffic before the kill", share("share_before_kill")],
        ["traffic while C was down", share("share_while_down")],
        ["requests that failed", result["failed_requests"]],
        ["requests retried on another server (before their first byte)", result["retried_requests"]],
        ["requests in flight at the kill", f"{result['in_flight_at_kill']}, all done within "
         f"{result['in_flight_done_ms']:.0f} ms" if result["in_flight_at_kill"] else "none"],
        ["slowest request in the 2 s after the kill", f"{result['slowest_after_kill_ms']:.0f} ms"],
        ["C restarted → READY", f"{result['restart_to_ready_s']:.1f} s"],
        ["C READY → its first answer again (the client's probe of a server it took out)",
         f"{back:.1f} s" if back is not None else "not within 60 s"],
    ])  # fmt: skip
    if result["errors"]:
        report.paragraph("Errors the callers saw: " + "; ".join(f"`{e}`" for e in result["errors"]))
