"""Triton's generate extension, streaming: ``POST /v2/models/<m>/generate_stream``.

The request is one JSON object (inputs by name, e.g. ``text_input``; anything that
is not an input becomes a request parameter) and the answer is Server-Sent Events,
one ``data:`` event (a JSON object, outputs by name) per model response. The HTTP
status belongs to the first response only: a later failure arrives as an
``{"error": ...}`` event after a 200, so every event is checked. A request that fails
before inference starts gets a JSON error body with an error status instead.

Closing a :class:`GenerateStream` closes its HTTP response: the server sees the
connection go and cancels the request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import httpx

from tritonmm.errors import ServerError
from tritonmm.transport.errors import from_server_message, translated
from tritonmm.transport.http import raise_for_status


def open_generate_stream(
    http_client: httpx.Client,
    url: str,
    body: dict[str, Any],
    *,
    model: str,
    target: str,
    headers: Mapping[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
    on_close: Callable[[], None] | None = None,
) -> GenerateStream:
    """Send the request now (connection errors and an error status raise here). ``headers`` and
    ``extensions`` go with the request (the client's Host and TLS name when it connects to an IP);
    ``on_close`` runs once when the stream is closed."""
    request = http_client.build_request(
        "POST", url, json=body, headers={"Accept": "text/event-stream", **(headers or {})}, extensions=extensions
    )
    with translated(target, model):
        response = http_client.send(request, stream=True)
        if response.status_code != 200:
            try:
                response.read()
            finally:
                response.close()
            raise_for_status(response, model)
    return GenerateStream(response, model, target, on_close)


class GenerateStream:
    """The events of one ``generate_stream`` call, as dicts; ``close()`` ends the call."""

    def __init__(
        self, response: httpx.Response, model: str, target: str, on_close: Callable[[], None] | None = None
    ) -> None:
        self._response = response
        self._model = model
        self._target = target
        self._on_close = on_close

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            with translated(self._target, self._model):
                for data in event_data(self._response.iter_lines()):
                    yield self._event(data)
        finally:
            self.close()

    def _event(self, data: str) -> dict[str, Any]:
        try:
            event = json.loads(data)
        except ValueError:
            raise ServerError(f"model '{self._model}' sent an event that is not JSON: {data[:200]!r}") from None
        if not isinstance(event, dict):
            raise ServerError(f"model '{self._model}' sent an event that is not a JSON object: {data[:200]!r}")
        if "error" in event:
            raise from_server_message(str(event["error"]), self._model)
        return event

    def close(self) -> None:
        self._response.close()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def event_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each Server-Sent Event in ``lines`` (several ``data:`` lines of one event
    joined by newlines, as the SSE rules say); comments and other fields are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
