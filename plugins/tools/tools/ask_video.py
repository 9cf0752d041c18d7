from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from tools import support

from tritonmm.media import Modality
from tritonmm.messages import MediaPart


class AskVideoTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        [file] = support.files(tool_parameters, "video")[:1]
        video = MediaPart(Modality.VIDEO, data=support.download(credentials, file, Modality.VIDEO, "the video"))
        pieces = support.answer(
            credentials,
            support.text(tool_parameters, "model", "chat"),
            support.text(tool_parameters, "question"),
            [video],
            support.integer(tool_parameters, "max_tokens", 512, 1, 8192),
        )
        answer = []
        for piece in pieces:
            answer.append(piece)
            yield self.create_stream_variable_message("answer", piece)
        yield self.create_text_message("".join(answer))
