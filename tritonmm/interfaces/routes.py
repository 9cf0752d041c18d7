"""Media for a backend that takes images at most: each part turned into something it takes.

* images go as they are (loaded, checked and downscaled by the image loader);
* a video becomes frames from the bundled ``video_frames`` model when the server has it,
  each frame an image with its time in the text before it;
* audio becomes its transcript through the speech model the form names
  (``tritonmm.routing``'s cascade);
* anything else (documents; video or images a model cannot see) is refused by name,
  before anything is sent.
"""

from __future__ import annotations

from tritonmm import routing, vision_tools
from tritonmm.chat_wire import media_label
from tritonmm.contract import FRAMES_UNIFORM, Capabilities, Feature, Task
from tritonmm.errors import InvalidInput, TritonMMError, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.media_loaders import loader_for
from tritonmm.messages import MediaPart, Message, Part, TextPart
from tritonmm.transport import TritonClient

VIDEO_FRAMES_MODEL = "video_frames"  # the bundled model's name (model_repository/video_frames)
FRAMES_PER_VIDEO = 8


def prepare_media(
    client: TritonClient, model: str, caps: Capabilities, messages: list[Message], *, frames_model: str, label: str
) -> tuple[list[Message], list[bytes]]:
    """The messages with only text and image parts left, and the images' bytes in order.

    ``caps`` are the backend's features as declared; ``label`` names its interface in
    refusals ("the vLLM backend").
    """
    for message in messages:
        for part in message.parts:
            if isinstance(part, MediaPart) and part.modality is Modality.DOCUMENT:
                raise UnsupportedMedia(f"model '{model}' ({label}) does not take documents")
    routing.check_chat_media(messages, caps, model)
    messages = routing.transcribe_audio_parts(client, messages, caps, model)
    if any(_has(m, Modality.VIDEO) for m in messages):
        messages = _videos_to_frames(client, messages, frames_model, model)
    images = [part for message in messages for part in message.parts if isinstance(part, MediaPart)]  # images only
    if len(images) > caps.max_images:
        raise InvalidInput(
            f"model '{model}' ({label}) takes at most {caps.max_images} image(s) per request; this one has "
            f"{len(images)} (video frames count as images)"
        )
    loader = loader_for(Modality.IMAGE)
    blobs = [loader.load(part, media_label("image", i), client.settings) for i, part in enumerate(images)]
    return messages, blobs


def _has(message: Message, modality: Modality) -> bool:
    return any(isinstance(p, MediaPart) and p.modality is modality for p in message.parts)


def _videos_to_frames(client: TritonClient, messages: list[Message], frames_model: str, model: str) -> list[Message]:
    if not frames_model:
        raise UnsupportedMedia(
            f"model '{model}' does not take video, and the server has no '{VIDEO_FRAMES_MODEL}' model"
        )
    loader = loader_for(Modality.VIDEO)
    max_side = client.settings.media.image_max_side
    count = 0
    out = []
    for message in messages:
        parts: list[Part] = []
        for part in message.parts:
            if not (isinstance(part, MediaPart) and part.modality is Modality.VIDEO):
                parts.append(part)
                continue
            what = media_label(Modality.VIDEO.value, count)
            count += 1
            video = loader.load(part, what, client.settings)
            frames, duration = vision_tools.video_frames(
                client, frames_model, video, mode=FRAMES_UNIFORM, count=FRAMES_PER_VIDEO, max_side=max_side
            )
            parts.append(TextPart(f"[{what}: {duration:.1f} s, {len(frames)} frames]"))
            for frame in frames:
                parts.append(TextPart(f"\n[{what} at {frame.timestamp:.1f} s]"))
                parts.append(MediaPart(Modality.IMAGE, data=frame.jpeg, mime_type="image/jpeg"))
        out.append(Message(message.role, tuple(parts), message.tool_calls, message.tool_call_id, message.name))
    return out


def frames_route(client: TritonClient) -> str:
    """The video-frames model's name when the server has it ready, else ""."""
    try:
        client.capabilities(VIDEO_FRAMES_MODEL, Task.VIDEO_FRAMES)
    except TritonMMError:  # absent, not loaded, or something else: no route
        return ""
    return VIDEO_FRAMES_MODEL


def backend_features(client: TritonClient, caps: Capabilities) -> frozenset[Feature]:
    """The features to declare: the routes above, audio by cascade, tool calls from the template.
    No documents: no backend here renders PDF pages."""
    return routing.chat_features(client, caps) - {Feature.DOCUMENT}
