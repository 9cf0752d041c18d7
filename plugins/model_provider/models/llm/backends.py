"""The LLM handler's other path: chat models we did not write (the vLLM backend, TensorRT-LLM's
ensemble and BLS, any model behind Triton's generate endpoint).

The form says how to reach them (``tritonmm.interfaces.options``); the core recognises the
interface from the model's config, renders the prompt and streams ``ChatChunk`` s as our own
path does, so the handler turns both into Dify chunks the same way. Mixed into the handler
before ``TritonModelMixin``: credential validation runs the same named steps for both kinds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dify_plugin.entities.model import AIModelEntity, ModelPropertyKey, ModelType
from dify_plugin.entities.model.llm import LLMMode
from dify_plugin.entities.model.message import PromptMessage, PromptMessageTool
from dify_plugin.errors.model import CredentialsValidateFailedError
from models.common import customizable_schema
from models.llm.convert import to_messages, to_tools
from models.llm.rules import THINKING_RULE

from tritonmm import chat
from tritonmm.chat import ChatChunk, ChatParams
from tritonmm.contract import PARAM_JSON_SCHEMA, PARAM_RESPONSE_FORMAT, Capabilities, Task
from tritonmm.diagnose import check_model
from tritonmm.errors import TritonMMError
from tritonmm.interfaces import session
from tritonmm.interfaces.options import BackendOptions
from tritonmm.interfaces.routes import backend_features
from tritonmm.interfaces.session import BackendModel
from tritonmm.transport import TritonClient

logger = logging.getLogger(__name__)

_STRUCTURED_RULES = frozenset({PARAM_RESPONSE_FORMAT, PARAM_JSON_SCHEMA})


class BackendChat:
    """What the LLM handler does for a model we did not write; ``backend()`` says which kind a model is."""

    def backend(self, model: str, credentials: Mapping[str, Any]) -> BackendModel | None:
        """The model as a backend (None: one of our own models), refused by name when it fits nothing."""
        try:
            return session.resolve(self.client(credentials), model, BackendOptions.from_credentials(credentials))
        except TritonMMError as exc:
            raise self._transform_invoke_error(exc) from exc

    def open_backend_chat(
        self,
        credentials: Mapping[str, Any],
        backend: BackendModel,
        prompt_messages: Sequence[PromptMessage],
        params: ChatParams,
        tools: Sequence[PromptMessageTool] | None,
    ) -> Iterator[ChatChunk]:
        """Send now (errors before the first token raise here); iterate for the answer."""
        client = self.client(credentials)
        return session.open_backend_chat(client, backend, to_messages(prompt_messages), params, to_tools(tools))

    def counts_own_tokens(self, model: str, credentials: Mapping[str, Any]) -> bool:
        """True for a backend: it counts tokens only when it answers (usage comes with the answer),
        so nothing is counted ahead. False for our own models, or when the model cannot be read."""
        try:
            return (
                session.resolve(self.client(credentials), model, BackendOptions.from_credentials(credentials))
                is not None
            )
        except TritonMMError:
            return False

    def backend_schema(
        self, model: str, credentials: Mapping[str, Any], backend: BackendModel, rules: list
    ) -> AIModelEntity:
        """Features from the routes that exist, context size from the form, structured output
        where the interface has guided decoding."""
        caps = backend.caps
        properties = {ModelPropertyKey.MODE: LLMMode.CHAT.value, ModelPropertyKey.CONTEXT_SIZE: caps.context_size}
        kept = [rule for rule in rules if backend.structured_output or rule.name not in _STRUCTURED_RULES]
        if caps.thinking_switch:
            kept.append(THINKING_RULE)
        features = backend_features(self.client(credentials), caps)
        return customizable_schema(model, ModelType.LLM, caps, properties, kept, features)

    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        """The named steps for either kind of model; the probe is one short request."""
        try:
            client = self.client(credentials)
            options = BackendOptions.from_credentials(credentials)
            check_model(
                client,
                model,
                Task.CHAT,
                lambda found: _probe(client, model, found),
                describe=lambda: (
                    session.resolve(client, model, options, fresh=True)
                    or client.capabilities(model, Task.CHAT, fresh=True)
                ),
            )
        except TritonMMError as exc:
            raise CredentialsValidateFailedError(str(exc)) from exc


def _probe(client: TritonClient, model: str, found: BackendModel | Capabilities) -> None:
    if isinstance(found, BackendModel):
        session.probe(client, found)
    else:
        chat.probe(client, model, found)
