from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage
from tools import support

from tritonmm import contract, speech_synthesis
from tritonmm.contract import Task
from tritonmm.errors import InvalidInput

MIME = {contract.AUDIO_MP3: "audio/mpeg", contract.AUDIO_WAV: "audio/wav"}


class SpeakTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        credentials = self.runtime.credentials
        model = support.text(tool_parameters, "model", "text_to_speech")
        audio_format = support.text(tool_parameters, "format", contract.AUDIO_MP3)
        if audio_format not in MIME:
            raise InvalidInput(f"'format' must be one of {', '.join(MIME)}, got {audio_format!r}")
        server = support.client(credentials)
        caps = server.capabilities(model, Task.TEXT_TO_SPEECH)
        voice = speech_synthesis.pick_voice(caps, model, support.text(tool_parameters, "voice") or None)
        text = support.text(tool_parameters, "text")
        audio = b"".join(
            speech_synthesis.synthesize(server, model, caps, text, voice=voice.name, audio_format=audio_format)
        )
        meta = {"mime_type": MIME[audio_format], "filename": f"speech.{audio_format}"}
        yield self.create_blob_message(audio, meta=meta)
        yield self.create_json_message({"voice": voice.name, "format": audio_format, "bytes": len(audio)})
        yield self.create_variable_message("voice", voice.name)
