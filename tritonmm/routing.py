"""Which model serves which parts of a chat request.

A chat model takes the media its config declares. Audio has a second path: a
chat model whose config names a speech_to_text model (``tmm.asr_model``) gets
each audio part as that model's transcript (the cascade). A part no path can
take is refused with a message that says so, never dropped.
"""

from __future__ import annotations

import logging

from tritonmm import speech
from tritonmm.chat_wire import media_label
from tritonmm.contract import TOOL_CALL_FEATURES, Capabilities, Feature, Task
from tritonmm.errors import TritonMMError, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, Part, TextPart
from tritonmm.transport import TritonClient

LOG = logging.getLogger(__name__)

# The feature a model needs for each kind of part: documents go to it as page images.
FEATURE_FOR_MODALITY = {
    Modality.IMAGE: Feature.VISION,
    Modality.VIDEO: Feature.VIDEO,
    Modality.AUDIO: Feature.AUDIO,
    Modality.DOCUMENT: Feature.VISION,
}


def asr_capabilities(client: TritonClient, caps: Capabilities) -> Capabilities | None:
    """The cascade's speech model when the chat model names one and it is ready, else None."""
    if not caps.asr_model:
        return None
    try:
        return client.capabilities(caps.asr_model, Task.SPEECH_TO_TEXT)
    except TritonMMError as exc:
        LOG.warning("speech model '%s' for audio parts is not usable: %s", caps.asr_model, exc)
        return None


def chat_features(client: TritonClient, caps: Capabilities) -> frozenset[Feature]:
    """The features to declare to Dify: what a chat model can be sent (audio also by cascade, PDF
    documents as page images wherever it sees images) and tool calls where its template renders tools."""
    features = set(caps.features)
    if Feature.AUDIO not in features and asr_capabilities(client, caps) is not None:
        features.add(Feature.AUDIO)
    if Feature.VISION in features:
        features.add(Feature.DOCUMENT)
    if caps.tool_call_family:
        features |= TOOL_CALL_FEATURES
    return frozenset(features)


def check_chat_media(messages: list[Message], caps: Capabilities, model: str) -> None:
    """Refuse, before anything is loaded, a media part the model cannot take.

    Audio for a model without native audio is left to the cascade
    (:func:`transcribe_audio_parts`), which says why when it cannot take it either.
    """
    declared = ", ".join(sorted(f.value for f in caps.features)) or "none"
    for message in messages:
        for part in message.parts:
            if not isinstance(part, MediaPart):
                continue
            needed = FEATURE_FOR_MODALITY[part.modality]
            if needed in caps.features or needed is Feature.AUDIO:
                continue
            raise UnsupportedMedia(
                f"model '{model}' does not accept {part.modality.value} input "
                f"(its Triton config declares features: {declared})"
            )


def transcribe_audio_parts(
    client: TritonClient, messages: list[Message], caps: Capabilities, model: str
) -> list[Message]:
    """The messages with each audio part replaced by its transcript, for models without native audio.

    Models with native audio get the messages unchanged. Audio parts are numbered
    as everywhere else ("audio 1" is the request's first audio part).
    """
    has_audio = any(isinstance(p, MediaPart) and p.modality is Modality.AUDIO for m in messages for p in m.parts)
    if not has_audio or Feature.AUDIO in caps.features:
        return messages
    asr = asr_capabilities(client, caps)
    if asr is None:
        how = f"its speech model '{caps.asr_model}' is not available" if caps.asr_model else "it names no speech model"
        raise UnsupportedMedia(
            f"model '{model}' does not accept audio: it has no native audio feature and {how} "
            f"(tmm.asr_model in its Triton config)"
        )
    loader = loader_for(Modality.AUDIO)
    count = 0
    out = []
    for message in messages:
        parts: list[Part] = []
        for part in message.parts:
            if isinstance(part, MediaPart) and part.modality is Modality.AUDIO:
                what = media_label(Modality.AUDIO.value, count)
                count += 1
                audio = loader.load(part, what, client.settings)
                transcript = speech.transcribe(client, caps.asr_model, asr, audio, what=what)
                parts.append(TextPart(f"[Transcript of {what}]: {transcript.text}"))
            else:
                parts.append(part)
        out.append(Message(message.role, tuple(parts)))
    return out
