"""Chat requests in neutral types: build the tensors, stream the answer back.

The plugin's LLM handler converts Dify prompt messages into ``Message`` (and Dify's
tools into ``Tool``) and calls ``open_chat``; nothing here knows Dify. The tool calls
the model makes come back on the last chunk, parsed by the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from tritonmm import chat_wire, contract, routing
from tritonmm.contract import Capabilities
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, TextPart, Tool
from tritonmm.structured_output import ResponseFormat
from tritonmm.tool_calls import ToolCall
from tritonmm.transport import InferStream, InputTensor, TritonClient


@dataclass(frozen=True)
class ChatParams:
    """Generation parameters; ``None`` leaves the server's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    response_format: ResponseFormat | None = None  # None: free text
    enable_thinking: bool | None = None  # None: the template's default

    def to_json(self) -> str:
        values = {k: v for k, v in asdict(self).items() if v not in (None, ()) and k != "response_format"}
        if self.stop:
            values[contract.PARAM_STOP] = list(self.stop)
        if self.response_format is not None:
            values.update(self.response_format.to_params())
        return json.dumps(values)


@dataclass(frozen=True)
class ChatChunk:
    """One generated token's text; the last chunk also carries the outcome."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()  # the last chunk: the calls the model made


def build_inputs(
    messages: list[Message],
    params: ChatParams,
    caps: Capabilities,
    client: TritonClient,
    model: str,
    tools: Sequence[Tool] = (),
) -> list[InputTensor]:
    """The request's tensors: ``MESSAGES_JSON`` (``tritonmm.chat_wire``), the params, the
    tools offered and one tensor per media kind, each part loaded by its kind's loader.

    A kind the model cannot take is refused before anything is read; more than
    ``tmm.max_images`` parts of one kind before any image or video is read (counted
    after the audio cascade, as the model receives them: transcripts are text); tools
    for a model whose template renders none before anything is sent.
    """
    if tools and not caps.tool_call_family:
        raise InvalidInput(
            f"model '{model}' cannot call tools: its chat template renders none "
            f"({contract.KEY_TOOL_CALL_FAMILY} is empty in its Triton config)"
        )
    routing.check_chat_media(messages, caps, model)
    messages = routing.transcribe_audio_parts(client, messages, caps, model)
    wire, media_parts = _to_wire(messages)
    try:
        chat_wire.check_media_counts(wire, caps.max_images, model)
    except chat_wire.WireError as exc:
        raise InvalidInput(str(exc)) from None
    blobs: dict[Modality, list[bytes]] = {modality: [] for modality in Modality}
    for part, what in media_parts:
        blobs[part.modality].append(loader_for(part.modality).load(part, what, client.settings))
    inputs = [
        InputTensor(contract.CHAT_MESSAGES, (chat_wire.encode_messages(wire),)),
        InputTensor(contract.CHAT_PARAMS, (params.to_json().encode(),)),
    ]
    if tools:
        inputs.append(InputTensor(contract.CHAT_TOOLS, (_tools_json(tools),)))
    for modality in Modality:
        if blobs[modality]:
            inputs.append(InputTensor(contract.CHAT_MEDIA_TENSORS[modality.value], tuple(blobs[modality])))
    return inputs


def _to_wire(messages: list[Message]) -> tuple[list[chat_wire.WireMessage], list[tuple[MediaPart, str]]]:
    """The wire messages, and each media part in tensor order with its label ("image 1")."""
    counts = dict.fromkeys(Modality, 0)
    media_parts: list[tuple[MediaPart, str]] = []
    wire = []
    for message in messages:
        parts = []
        for part in message.parts:
            if isinstance(part, TextPart):
                parts.append(chat_wire.text_part(part.text))
                continue
            index = counts[part.modality]
            counts[part.modality] += 1
            wire_part = chat_wire.media_part(part.modality.value, index)
            parts.append(wire_part)
            media_parts.append((part, wire_part.label))
        wire.append(
            chat_wire.WireMessage(message.role, tuple(parts), message.tool_calls, message.tool_call_id, message.name)
        )
    return wire, media_parts


def _tools_json(tools: Sequence[Tool]) -> bytes:
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InvalidInput(f"two tools are named {duplicates[0]!r}: each tool needs a name of its own")
    offered = [{"name": t.name, "description": t.description, "parameters": dict(t.parameters)} for t in tools]
    return json.dumps(offered, ensure_ascii=False).encode("utf-8")


def open_chat(
    client: TritonClient,
    model: str,
    messages: list[Message],
    params: ChatParams,
    caps: Capabilities,
    tools: Sequence[Tool] = (),
) -> Iterator[ChatChunk]:
    """Validate and send the request now; the returned iterator streams the answer.

    Everything that can fail before the first token (bad media, unreachable
    server) raises here, synchronously.
    """
    inputs = build_inputs(messages, params, caps, client, model, tools)
    outputs = [spec.name for spec in contract.CHAT_OUTPUTS]
    return _chunks(client.stream_infer(model, inputs, outputs), model)


def _chunks(stream: InferStream, model: str) -> Iterator[ChatChunk]:
    try:
        for response in stream:
            out = response.outputs
            reason = _first(out, contract.CHAT_FINISH_REASON.name)
            text = _first(out, contract.CHAT_TEXT.name)
            if reason:
                yield ChatChunk(
                    text=(text or b"").decode("utf-8", "replace"),
                    finish_reason=reason.decode(),
                    prompt_tokens=int(_first(out, contract.CHAT_PROMPT_TOKENS.name) or 0),
                    completion_tokens=int(_first(out, contract.CHAT_COMPLETION_TOKENS.name) or 0),
                    tool_calls=_tool_calls(_first(out, contract.CHAT_TOOL_CALLS.name), model),
                )
                return
            if text is not None:
                yield ChatChunk(text=text.decode("utf-8", "replace"))
        raise ServerError(f"model '{model}' ended the stream without a final response")
    finally:
        stream.close()


def _tool_calls(raw: bytes | None, model: str) -> tuple[ToolCall, ...]:
    """The calls of ``TOOL_CALLS_JSON``; absent (a model that makes none) is no call."""
    if not raw:
        return ()
    try:
        calls = json.loads(raw)
        return tuple(ToolCall(str(c["id"]), str(c["name"]), _object_text(c["arguments"])) for c in calls)
    except (ValueError, TypeError, KeyError) as exc:
        raise ServerError(f"model '{model}' sent a malformed {contract.CHAT_TOOL_CALLS.name}: {exc}") from None


def _object_text(arguments: object) -> str:
    if not isinstance(arguments, str) or not isinstance(json.loads(arguments), dict):
        raise ValueError("arguments must be the JSON text of an object")
    return arguments


def _first(outputs: dict[str, list], name: str):
    values = outputs.get(name)
    return values[0] if values else None


def probe(client: TritonClient, model: str, caps: Capabilities) -> None:
    """One-token request: proves the model loads inputs and streams an answer."""
    messages = [Message("user", (TextPart("Hello"),))]
    for _ in open_chat(client, model, messages, ChatParams(max_tokens=1, temperature=0.0), caps):
        pass
