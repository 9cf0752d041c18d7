"""The LLM handler: Dify prompt messages and tools in, one LLMResultChunk per token out.

Tool calls come back parsed by the server; they are yielded in one chunk
(``content=""``) after the text and before the final chunk with usage and
``finish_reason`` ``tool_calls``, as the SDK's OpenAI-compatible base does.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Mapping

from dify_plugin import LargeLanguageModel
from dify_plugin.config.logger_format import plugin_logger_handler
from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from dify_plugin.entities.model.llm import LLMMode, LLMResult, LLMResultChunk, LLMResultChunkDelta
from dify_plugin.entities.model.message import AssistantPromptMessage, PromptMessage, PromptMessageTool
from models.common import TritonModelMixin, customizable_schema
from models.llm.backends import BackendChat
from models.llm.convert import to_chat_params, to_dify_tool_calls, to_messages, to_tools
from models.llm.rules import THINKING_RULE

from tritonmm import chat
from tritonmm.chat import ChatChunk, ChatParams
from tritonmm.contract import Task
from tritonmm.errors import TritonMMError
from tritonmm.routing import chat_features

logger = logging.getLogger(__name__)
logger.addHandler(plugin_logger_handler)

BUNDLED_MODEL = "chat"  # the predefined model; its YAML holds the parameter rules


class TritonMultimodalLargeLanguageModel(BackendChat, TritonModelMixin, LargeLanguageModel):
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
        params = to_chat_params(model_parameters, stop)
        backend = self.backend(model, credentials)  # a model we did not write (vLLM, TensorRT-LLM, generate)
        if backend is not None:
            chunks = self.open_backend_chat(credentials, backend, prompt_messages, params, tools)
        else:
            caps = self.capabilities(model, credentials)
            chunks = chat.open_chat(client, model, to_messages(prompt_messages), params, caps, to_tools(tools))
        if stream:
            return self._stream(model, credentials, chunks)
        # Blocking callers read the first chunk only: collect it all now (errors mapped by the SDK).
        return iter([self._collect(model, credentials, chunks)])

    def _stream(
        self, model: str, credentials: dict, chunks: Iterator[ChatChunk]
    ) -> Generator[LLMResultChunk, None, None]:
        index = 0
        try:
            for chunk in chunks:
                for message, last in self._messages(chunk):
                    yield self._result_chunk(model, credentials, index, message, chunk if last else None)
                    index += 1
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()  # cancels the Triton request when Dify stops reading

    @staticmethod
    def _messages(chunk: ChatChunk) -> Iterator[tuple[AssistantPromptMessage, bool]]:
        """A chunk's messages, the last flagged: the final one gets a separate chunk for its tool calls."""
        if chunk.tool_calls:
            if chunk.text:
                yield AssistantPromptMessage(content=chunk.text), False
            yield AssistantPromptMessage(content="", tool_calls=to_dify_tool_calls(chunk.tool_calls)), False
            yield AssistantPromptMessage(content=""), True
        else:
            yield AssistantPromptMessage(content=chunk.text), True

    def _result_chunk(
        self, model: str, credentials: dict, index: int, message: AssistantPromptMessage, outcome: ChatChunk | None
    ) -> LLMResultChunk:
        """One chunk; ``outcome``: the final ChatChunk whose usage and finish reason it carries."""
        usage = finish_reason = None
        if outcome is not None and outcome.finish_reason is not None:
            usage = self._calc_response_usage(model, credentials, outcome.prompt_tokens, outcome.completion_tokens)
            finish_reason = outcome.finish_reason
        delta = LLMResultChunkDelta(index=index, message=message, usage=usage, finish_reason=finish_reason)
        return LLMResultChunk(model=model, delta=delta)

    def _collect(self, model: str, credentials: dict, chunks: Iterator[ChatChunk]) -> LLMResultChunk:
        """The whole answer as one chunk: text, tool calls, usage and finish reason."""
        texts: list[str] = []
        last = ChatChunk(text="")
        try:
            for last in chunks:
                texts.append(last.text)
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc
        message = AssistantPromptMessage(content="".join(texts), tool_calls=to_dify_tool_calls(last.tool_calls))
        return self._result_chunk(model, credentials, 0, message, last)

    def get_num_tokens(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        tools: list[PromptMessageTool] | None = None,
    ) -> int:
        """Counted by the model's own tokenizer on the server, image tokens and tools included."""
        if self.counts_own_tokens(model, credentials):
            return 0  # backends we did not write count tokens when they answer: usage comes with the answer
        try:
            client = self.client(credentials)
            caps = client.capabilities(model, Task.CHAT)
            messages = to_messages(prompt_messages)
            chunks = chat.open_chat(client, model, messages, ChatParams(max_tokens=0), caps, to_tools(tools))
            return max((c.prompt_tokens for c in chunks), default=0)
        except TritonMMError as exc:
            logger.warning("token count for %s unavailable: %s", model, exc)
            return 0

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity:
        """Features, context size and the thinking switch come from the model's Triton config."""
        backend = self.backend(model, credentials)
        if backend is not None:
            return self.backend_schema(model, credentials, backend, self._bundled_parameter_rules())
        caps = self.capabilities(model, credentials)
        properties = {ModelPropertyKey.MODE: LLMMode.CHAT.value, ModelPropertyKey.CONTEXT_SIZE: caps.context_size}
        features = chat_features(self.client(credentials), caps)  # audio also by cascade, tool calls by template
        rules = self._bundled_parameter_rules() + ([THINKING_RULE] if caps.thinking_switch else [])
        return customizable_schema(model, ModelType.LLM, caps, properties, rules, features)

    def _bundled_parameter_rules(self) -> list:
        bundled = self.predefined_schema(BUNDLED_MODEL)
        return list(bundled.parameter_rules) if bundled else []

    def predefined_schema(self, model: str) -> AIModelEntity | None:
        return next((m for m in self.predefined_models() if m.model == model), None)
