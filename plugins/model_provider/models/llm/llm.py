"""The LLM handler: Dify prompt messages in, one LLMResultChunk per token out."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Mapping

from dify_plugin import LargeLanguageModel
from dify_plugin.config.logger_format import plugin_logger_handler
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from dify_plugin.entities.model.llm import LLMMode, LLMResult, LLMResultChunk, LLMResultChunkDelta
from dify_plugin.entities.model.message import AssistantPromptMessage, PromptMessage, PromptMessageTool
from models.common import TritonModelMixin, customizable_schema
from models.llm.convert import to_chat_params, to_messages

from tritonmm import chat
from tritonmm.chat import ChatChunk, ChatParams
from tritonmm.contract import Task
from tritonmm.errors import TritonMMError
from tritonmm.routing import chat_features

logger = logging.getLogger(__name__)
logger.addHandler(plugin_logger_handler)

BUNDLED_MODEL = "chat"  # the predefined model; its YAML holds the parameter rules


class TritonMultimodalLargeLanguageModel(TritonModelMixin, LargeLanguageModel):
    TASK = Task.CHAT
    PROBE = staticmethod(chat.probe)

    def _invoke(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        model_parameters: dict,
        tools: list[PromptMessageTool] | None = None,
        stop: list[str] | None = None,
        stream: bool = True,
        user: str | None = None,
    ) -> LLMResult | Generator[LLMResultChunk, None, None]:
        # Everything up to the first token happens here, synchronously, so the
        # SDK maps its errors; the generator maps its own (it runs later).
        client = self.client(credentials)
        caps = self.capabilities(model, credentials)
        params = to_chat_params(model_parameters, stop)
        chunks = chat.open_chat(client, model, to_messages(prompt_messages), params, caps)
        if stream:
            return self._stream(model, credentials, chunks)
        return self._collect(model, credentials, chunks)

    def _stream(
        self, model: str, credentials: dict, chunks: Iterator[ChatChunk]
    ) -> Generator[LLMResultChunk, None, None]:
        try:
            for index, chunk in enumerate(chunks):
                yield self._to_result_chunk(model, credentials, index, chunk)
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # cancels the Triton request when Dify stops reading

    def _to_result_chunk(self, model: str, credentials: dict, index: int, chunk: ChatChunk) -> LLMResultChunk:
        usage = None
        if chunk.finish_reason is not None:
            usage = self._calc_response_usage(model, credentials, chunk.prompt_tokens, chunk.completion_tokens)
        delta = LLMResultChunkDelta(
            index=index,
            message=AssistantPromptMessage(content=chunk.text),
            usage=usage,
            finish_reason=chunk.finish_reason,
        )
        return LLMResultChunk(model=model, delta=delta)

    def _collect(self, model: str, credentials: dict, chunks: Iterator[ChatChunk]) -> LLMResult:
        texts: list[str] = []
        last = ChatChunk(text="")
        try:
            for last in chunks:
                texts.append(last.text)
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc
        usage = self._calc_response_usage(model, credentials, last.prompt_tokens, last.completion_tokens)
        return LLMResult(model=model, message=AssistantPromptMessage(content="".join(texts)), usage=usage)

    def get_num_tokens(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        tools: list[PromptMessageTool] | None = None,
    ) -> int:
        """Counted by the model's own tokenizer on the server, image tokens included."""
        try:
            client = self.client(credentials)
            caps = client.capabilities(model, Task.CHAT)
            chunks = chat.open_chat(client, model, to_messages(prompt_messages), ChatParams(max_tokens=0), caps)
            return max((c.prompt_tokens for c in chunks), default=0)
        except TritonMMError as exc:
            logger.warning("token count for %s unavailable: %s", model, exc)
            return 0

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        """Features and context size come from the model's Triton config."""
        caps = self.capabilities(model, credentials)
        properties = {ModelPropertyKey.MODE: LLMMode.CHAT.value, ModelPropertyKey.CONTEXT_SIZE: caps.context_size}
        features = chat_features(self.client(credentials), caps)  # audio also by cascade
        return customizable_schema(model, ModelType.LLM, caps, properties, self._bundled_parameter_rules(), features)

    def _bundled_parameter_rules(self) -> list:
        bundled = self.predefined_schema(BUNDLED_MODEL)
        return list(bundled.parameter_rules) if bundled else []

    def predefined_schema(self, model: str) -> AIModelEntity | None:
        return next((m for m in self.predefined_models() if m.model == model), None)
