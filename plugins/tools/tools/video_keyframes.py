from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from tools import support

from tritonmm import contract, vision_tools
from tritonmm.media import Modality
from tritonmm.messages import MediaPart

CAPTION_QUESTION = "Describe this video frame in one sentence."
CAPTION_TOKENS = 64


class VideoKeyframesTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        [file] = support.files(tool_parameters, "video")[:1]
        video = support.download(credentials, file, Modality.VIDEO, "the video")
        frames, duration = vision_tools.video_frames(
            support.client(credentials),
            support.text(tool_parameters, "model", "video_frames"),
            video,
            mode=support.text(tool_parameters, "mode", contract.FRAMES_KEYFRAMES),
            count=support.integer(tool_parameters, "count", 8, 1, 64),
        )
        caption_model = support.text(tool_parameters, "caption_model", "chat")
        captions = support.truthy(tool_parameters, "caption")
        listed = []
        for number, frame in enumerate(frames, start=1):
            name = f"frame_{number:03d}_{frame.timestamp:09.3f}s.jpg"
            entry: dict[str, Any] = {"index": number, "timestamp": round(frame.timestamp, 3), "filename": name}
            if captions:
                image = MediaPart(Modality.IMAGE, data=frame.jpeg)
                pieces = support.answer(credentials, caption_model, CAPTION_QUESTION, [image], CAPTION_TOKENS)
                entry["caption"] = "".join(pieces).strip()
            listed.append(entry)
            yield self.create_blob_message(frame.jpeg, meta={"mime_type": "image/jpeg", "filename": name})
        yield self.create_json_message({"duration": round(duration, 3), "frames": listed})
        yield self.create_variable_message("count", len(listed))
        yield self.create_text_message(
            "\n".join(f"{e['timestamp']:.2f}s {e.get('caption', e['filename'])}" for e in listed)
        )
