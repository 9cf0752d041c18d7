"""Text to speech: Dify's text in, MP3 audio out sentence by sentence as the server speaks it."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping

from dify_plugin import TTSModel
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from models.common import TritonModelMixin, customizable_schema

from tritonmm import speech_synthesis
from tritonmm.contract import AUDIO_MP3, Capabilities, Task
from tritonmm.errors import TritonMMError

WORD_LIMIT = 3000  # Dify splits longer texts; the server streams each sentence anyway


class TritonMultimodalTTSModel(TritonModelMixin, TTSModel):
    TASK = Task.TEXT_TO_SPEECH
    PROBE = staticmethod(speech_synthesis.probe)

    def _invoke(
        self,
        model: str,
        tenant_id: str,
        credentials: dict,
        content_text: str,
        voice: str,
        user: str | None = None,
    ) -> Generator[bytes, None, None]:
        # Opened here, synchronously, so the SDK maps errors before the first chunk;
        # the generator maps its own.
        caps = self.capabilities(model, credentials)
        chunks = speech_synthesis.synthesize(
            self.client(credentials), model, caps, content_text, voice=voice, audio_format=AUDIO_MP3
        )
        return self._stream(chunks)

    def _stream(self, chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
        try:
            yield from chunks
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # cancels the Triton request when Dify stops reading

    def get_tts_model_voices(self, model: str, credentials: dict, language: str | None = None) -> list:
        """The voices the server's model has (its tmm.voices), optionally of one language."""
        caps = self.capabilities(model, credentials)
        return [
            {"name": v.name, "value": v.name}
            for v in caps.voices
            if not language or v.language.lower() == language.lower()
        ]

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        caps = self.capabilities(model, credentials)
        return customizable_schema(model, ModelType.TTS, caps, tts_properties(caps))


def tts_properties(caps: Capabilities) -> dict:
    voices = [{"mode": v.name, "name": v.name, "language": [v.language]} for v in caps.voices]
    return {
        ModelPropertyKey.DEFAULT_VOICE: caps.voices[0].name if caps.voices else "",
        ModelPropertyKey.VOICES: voices,
        ModelPropertyKey.WORD_LIMIT: WORD_LIMIT,
        ModelPropertyKey.AUDIO_TYPE: AUDIO_MP3,
        ModelPropertyKey.MAX_WORKERS: 2,
    }
