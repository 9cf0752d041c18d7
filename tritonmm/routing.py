"""Which model serves which parts of a request.

Today a chat model takes the media its config declares and nothing else; a
part it cannot take is refused with a message that says so, never dropped.
The speech issue adds the cascade (audio -> ASR model -> transcript) here.
"""

from __future__ import annotations

from tritonmm.contract import Capabilities, Feature
from tritonmm.errors import InvalidInput, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message

FEATURE_FOR_MODALITY = {Modality.IMAGE: Feature.VISION, Modality.VIDEO: Feature.VIDEO, Modality.AUDIO: Feature.AUDIO}


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
