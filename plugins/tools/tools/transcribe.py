from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from dify_plugin.file.entities import FileType
from tools import support

from tritonmm import speech
from tritonmm.contract import Task
from tritonmm.media import Modality
from tritonmm.subtitles import to_srt, to_vtt


class TranscribeTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        model = support.text(tool_parameters, "model", "speech_to_text")
        [file] = support.files(tool_parameters, "file")[:1]
        # A video is fetched under the video cap; the server transcribes its sound track.
        modality = Modality.VIDEO if file.type == FileType.VIDEO else Modality.AUDIO
        data = support.download(credentials, file, modality, "the recording")
        server = support.client(credentials)
        caps = server.capabilities(model, Task.SPEECH_TO_TEXT)
        transcript = speech.transcribe(
            server,
            model,
            caps,
            data,
            language=support.text(tool_parameters, "language") or None,
            prompt=support.text(tool_parameters, "prompt") or None,
            what="the recording",
        )
        segments = [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()} for s in transcript.segments
        ]
        stem = (file.filename or "transcript").rsplit(".", 1)[0]
        yield self.create_text_message(transcript.text)
        yield self.create_json_message(
            {"language": transcript.language, "duration": round(transcript.duration, 3), "segments": segments}
        )
        yield self.create_variable_message("text", transcript.text)
        yield self.create_variable_message("language", transcript.language)
        yield self.create_variable_message("duration", round(transcript.duration, 3))
        srt = to_srt(transcript.segments).encode("utf-8")
        vtt = to_vtt(transcript.segments).encode("utf-8")
        yield self.create_blob_message(srt, meta={"mime_type": "application/x-subrip", "filename": f"{stem}.srt"})
        yield self.create_blob_message(vtt, meta={"mime_type": "text/vtt", "filename": f"{stem}.vtt"})
