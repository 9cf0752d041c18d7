"""How a chat request becomes tensors, without a server: media by index, images
shrunk before sending, parts a model cannot take refused by name."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from tests import media_fixtures as fx
from tritonmm import chat, contract
from tritonmm.contract import Capabilities, Feature, Task
from tritonmm.errors import InvalidInput, UnsupportedMedia
from tritonmm.media import Modality
from tritonmm.messages import MediaPart, Message, TextPart
from tritonmm.settings import ServerSettings
from tritonmm.transport import TritonClient

SETTINGS = ServerSettings.from_credentials({"server_url": "http://127.0.0.1:1"})
CLIENT = TritonClient(SETTINGS)  # never called: building the tensors needs no server
VISION = Capabilities(Task.CHAT, frozenset({Feature.VISION}), 4096, 2, "tiny")
VISION_VIDEO = Capabilities(Task.CHAT, frozenset({Feature.VISION, Feature.VIDEO}), 4096, 2, "tiny")


def image(data: bytes, *, low: bool = False) -> MediaPart:
    return MediaPart(Modality.IMAGE, base64_data=base64.b64encode(data).decode(), low_detail=low)


def tensors(messages: list[Message], caps: Capabilities = VISION, params: chat.ChatParams | None = None) -> dict:
    inputs = chat.build_inputs(messages, params or chat.ChatParams(), caps, CLIENT, "m")
    return {t.spec.name: t.elements for t in inputs}


def width(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as img:
        return img.size[0]


def test_media_are_referenced_by_index_and_sent_as_raw_bytes() -> None:
    png = fx.png()
    out = tensors([Message("user", (TextPart("compare"), image(png), image(png)))])
    wire = json.loads(out[contract.CHAT_MESSAGES.name][0])
    assert wire == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "compare"},
                {"type": "image", "index": 0},
                {"type": "image", "index": 1},
            ],
        }
    ]
    assert out[contract.CHAT_IMAGES.name] == (png, png)  # small PNGs travel unchanged
    assert contract.CHAT_VIDEOS.name not in out


def test_detail_low_shrinks_more_than_high() -> None:
    big = fx.jpeg(2000, 1000)
    high = tensors([Message("user", (image(big),))])[contract.CHAT_IMAGES.name][0]
    low = tensors([Message("user", (image(big, low=True),))])[contract.CHAT_IMAGES.name][0]
    assert width(high) == SETTINGS.media.image_max_side
    assert width(low) == SETTINGS.media.low_detail_max_side


def test_params_json_keeps_only_what_was_set() -> None:
    params = chat.ChatParams(max_tokens=0, temperature=0.0, stop=("END",))
    raw = tensors([Message("user", (TextPart("hi"),))], params=params)[contract.CHAT_PARAMS.name][0]
    assert json.loads(raw) == {"max_tokens": 0, "temperature": 0.0, "stop": ["END"]}


def test_video_refused_when_the_config_lacks_it() -> None:
    part = MediaPart(Modality.VIDEO, base64_data=base64.b64encode(b"\0\0\0\x18ftypisom").decode())
    with pytest.raises(UnsupportedMedia, match="does not accept video input .*features: vision"):
        tensors([Message("user", (part,))])


def test_too_many_images_refused() -> None:
    with pytest.raises(
        InvalidInput, match="3 image parts in one request; model 'm' takes at most 2 of each media kind"
    ):
        tensors([Message("user", (image(fx.png()),) * 3)])


def test_max_images_caps_each_kind_not_the_sum() -> None:
    png = fx.png()
    mp4 = base64.b64encode(b"\0\0\0\x18ftypisom" + b"\0" * 16).decode()
    video = MediaPart(Modality.VIDEO, base64_data=mp4)
    out = tensors([Message("user", (image(png), image(png), video, video))], caps=VISION_VIDEO)  # 2 + 2: allowed
    assert len(out[contract.CHAT_IMAGES.name]) == len(out[contract.CHAT_VIDEOS.name]) == 2
    with pytest.raises(InvalidInput, match="3 video parts"):
        tensors([Message("user", (image(png), video)), Message("user", (video, video))], caps=VISION_VIDEO)


def test_media_are_numbered_from_1_per_kind_across_messages() -> None:
    png = fx.png()
    messages = [Message("user", (image(png),)), Message("user", (TextPart("and"), image(png), image(b"not a picture")))]
    with pytest.raises(UnsupportedMedia, match="^image 3: "):
        tensors(messages, caps=Capabilities(Task.CHAT, frozenset({Feature.VISION}), 4096, 8, "tiny"))
    wire = json.loads(tensors(messages[:1] + [Message("user", (image(png),))])[contract.CHAT_MESSAGES.name][0])
    assert [m["content"][0] for m in wire] == [{"type": "image", "index": 0}, {"type": "image", "index": 1}]


def test_too_many_images_refused_before_any_is_read() -> None:
    unreachable = MediaPart(Modality.IMAGE, url="http://127.0.0.1:1/never-fetched.png")
    with pytest.raises(InvalidInput, match="3 image parts"):
        tensors([Message("user", (unreachable,) * 3)])
