"""Which model serves which parts of a chat request.

A chat model takes the media its config declares. Audio has a second path: a
chat model whose config names a speech_to_text model (``tmm.asr_model``) gets
each audio part as that model's transcript (the cascade). A part no path can
take is refused with a message that says so, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tritonmm import speech
from tritonmm.capabilities import model_capabilities
from tritonmm.contract import Capabilities, Feature, Task
from tritonmm.errors import InvalidInput, TritonMMError, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, Part, TextPart
from tritonmm.settings import ServerSettings

LOG = logging.getLogger(__name__)

FEATURE_FOR_MODALITY = {Modality.IMAGE: Feature.VISION, Modality.VIDEO: Feature.VIDEO, Modality.AUDIO: Feature.AUDIO}


def asr_capabilities(settings: ServerSettings, caps: Capabilities) -> Capabilities | None:
    """The cascade's speech model when the chat model names one and it is ready, else None."""
    if not caps.asr_model:
        return None
    try:
        return model_capabilities(settings, caps.asr_model, Task.SPEECH_TO_TEXT)
    except TritonMMError as exc:
        LOG.warning("speech model '%s' for audio parts is not usable: %s", caps.asr_model, exc)
        return None


def chat_features(settings: ServerSettings, caps: Capabilities) -> frozenset[Feature]:
    """What a chat model can be sent, counting audio by cascade: the features to declare to Dify."""
    if Feature.AUDIO not in caps.features and asr_capabilities(settings, caps) is not None:
        return caps.features | {Feature.AUDIO}
    return caps.features


def transcribe_audio_parts(
    messages: list[Message],
    caps: Capabilities,
    settings: ServerSettings,
    model: str,
    load: Callable[[MediaPart, str], bytes],
) -> list[Message]:
    """The messages with each audio part replaced by its transcript, for models without native audio.

    ``load`` turns a part into its bytes (base64 or URL). Models with native audio get the messages unchanged.
    """
    has_audio = any(isinstance(p, MediaPart) and p.modality is Modality.AUDIO for m in messages for p in m.parts)
    if not has_audio or Feature.AUDIO in caps.features:
        return messages
    asr = asr_capabilities(settings, caps)
    if asr is None:
        how = f"its speech model '{caps.asr_model}' is not available" if caps.asr_model else "it names no speech model"
        raise UnsupportedMedia(
            f"model '{model}' does not accept audio: it has no native audio feature and {how} "
            f"(tmm.asr_model in its Triton config)"
        )
    count = 0
    out = []
    for message in messages:
        parts: list[Part] = []
        for part in message.parts:
            if isinstance(part, MediaPart) and part.modality is Modality.AUDIO:
                count += 1
                what = f"audio {count}"
                transcript = speech.transcribe(settings, caps.asr_model, asr, load(part, what), what=what)
                parts.append(TextPart(f"[Transcript of {what}]: {transcript.text}"))
            else:
                parts.append(part)
        out.append(Message(message.role, tuple(parts)))
    return out


def check_chat_media(messages: list[Message], caps: Capabilities, model: str) -> None:
    declared = ", ".join(sorted(f.value for f in caps.features)) or "none"
    images = 0
    for message in messages:
        for part in message.parts:
            if not isinstance(part, MediaPart):
                continue
            if FEATURE_FOR_MODALITY[part.modality] not in caps.features:
                raise UnsupportedMedia(
                    f"model '{model}' does not accept {part.modality.value} input "
                    f"(its Triton config declares features: {declared})"
                )
            images += part.modality is Modality.IMAGE
    if images > caps.max_images:
        raise InvalidInput(f"{images} images in one request; model '{model}' accepts at most {caps.max_images}")
