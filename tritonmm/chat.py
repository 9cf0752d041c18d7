"""Chat requests in neutral types: build the tensors, stream the answer back.

The plugin's LLM handler converts Dify prompt messages into ``Message`` and
calls ``open_chat``; nothing here knows Dify.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from tritonmm import contract, media, routing
from tritonmm.contract import Capabilities
from tritonmm.errors import InvalidInput, ServerError
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm.transport import InferStream, InputTensor, stream_infer


@dataclass(frozen=True)
class ChatParams:
    """Generation parameters; ``None`` leaves the server's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        values = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        if self.stop:
            values[contract.PARAM_STOP] = list(self.stop)
        return json.dumps(values)


@dataclass(frozen=True)
class ChatChunk:
    """One generated token's text; the last chunk also carries the outcome."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def build_inputs(
    messages: list[Message], params: ChatParams, caps: Capabilities, settings: ServerSettings, model: str
) -> list[InputTensor]:
    messages = routing.transcribe_audio_parts(messages, caps, settings, model, lambda p, w: _load(p, w, settings))
    routing.check_chat_media(messages, caps, model)
    blobs: dict[Modality, list[bytes]] = {modality: [] for modality in _MEDIA_TENSORS}
    wire_messages = []
    for message in messages:
        content = []
        for part in message.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
                continue
            bucket = blobs[part.modality]
            what = f"{part.modality.value} {len(bucket) + 1}"
            bucket.append(_load(part, what, settings))
            content.append({"type": part.modality.value, "index": len(bucket) - 1})
        wire_messages.append({"role": message.role, "content": content})
    inputs = [
        InputTensor(contract.CHAT_MESSAGES, (json.dumps(wire_messages).encode(),)),
        InputTensor(contract.CHAT_PARAMS, (params.to_json().encode(),)),
    ]
    for modality, spec in _MEDIA_TENSORS.items():
        if blobs[modality]:
            inputs.append(InputTensor(spec, tuple(blobs[modality])))
    return inputs


_MEDIA_TENSORS = {modality: contract.CHAT_MEDIA_TENSORS[modality.value] for modality in Modality}


def _load(part: MediaPart, what: str, settings: ServerSettings) -> bytes:
    limits = settings.media
    cap = {
        Modality.IMAGE: limits.image_max_bytes,
        Modality.VIDEO: limits.video_max_bytes,
        Modality.AUDIO: limits.audio_max_bytes,
    }[part.modality]
    if part.data:
        data = part.data
    elif part.base64_data:
        data = media.decode_base64(part.base64_data, what)
    elif part.url:
        data = media.fetch_url(
            part.url, max_bytes=cap, timeout=limits.fetch_timeout, what=what, policy=settings.url_policy
        )
    else:
        raise InvalidInput(f"{what} has neither base64_data nor url")
    if part.modality is Modality.IMAGE:
        if part.low_detail:
            limits = replace(limits, image_max_side=min(limits.image_max_side, limits.low_detail_max_side))
        return media.prepare_image(data, what, limits)
    if part.modality is Modality.AUDIO:
        return media.check_audio(data, what, limits)
    return media.check_video(data, what, limits)


def open_chat(
    settings: ServerSettings, model: str, messages: list[Message], params: ChatParams, caps: Capabilities
) -> Iterator[ChatChunk]:
    """Validate and send the request now; the returned iterator streams the answer.

    Everything that can fail before the first token (bad media, unreachable
    server) raises here, synchronously.
    """
    inputs = build_inputs(messages, params, caps, settings, model)
    outputs = [spec.name for spec in contract.CHAT_OUTPUTS]
    return _chunks(stream_infer(settings, model, inputs, outputs), model)


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
                )
                return
            if text is not None:
                yield ChatChunk(text=text.decode("utf-8", "replace"))
        raise ServerError(f"model '{model}' ended the stream without a final response")
    finally:
        stream.close()


def _first(outputs: dict[str, list], name: str):
    values = outputs.get(name)
    return values[0] if values else None


def probe(settings: ServerSettings, model: str, caps: Capabilities) -> None:
    """One-token request: proves the model loads inputs and streams an answer."""
    messages = [Message("user", (TextPart("Hello"),))]
    for _ in open_chat(settings, model, messages, ChatParams(max_tokens=1, temperature=0.0), caps):
        pass
