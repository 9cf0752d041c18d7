"""Speech to text: the audio file Dify hands over in, the transcript out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from dify_plugin import Speech2TextModel
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from models.common import TritonModelMixin, customizable_schema

from tritonmm import speech
from tritonmm.contract import Task
from tritonmm.media import Modality
from tritonmm.settings import DEFAULT_MEDIA_LIMITS

# Model credentials (the customizable form) that steer transcription.
CRED_LANGUAGE = "asr_language"
CRED_PROMPT = "asr_prompt"
EXTENSIONS = "wav,mp3,m4a,aac,ogg,oga,opus,flac,webm,mp4,mpeg,mpga"


class TritonMultimodalSpeech2TextModel(TritonModelMixin, Speech2TextModel):
    TASK = Task.SPEECH_TO_TEXT
    PROBE = staticmethod(speech.probe)

    def _invoke(self, model: str, credentials: dict, file: IO[bytes], user: str | None = None) -> str:
        client = self.client(credentials)
        caps = self.capabilities(model, credentials)
        transcript = speech.transcribe(
            client,
            model,
            caps,
            file.read(),
            language=credentials.get(CRED_LANGUAGE) or None,
            prompt=credentials.get(CRED_PROMPT) or None,
        )
        return transcript.text

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        caps = self.capabilities(model, credentials)
        properties = {
            ModelPropertyKey.FILE_UPLOAD_LIMIT: DEFAULT_MEDIA_LIMITS.max_bytes(Modality.AUDIO) // 2**20,
            ModelPropertyKey.SUPPORTED_FILE_EXTENSIONS: EXTENSIONS,
        }
        return customizable_schema(model, ModelType.SPEECH2TEXT, caps, properties)
