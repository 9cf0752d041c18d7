"""What the customizable model's form says about a model we did not write, parsed once.

Dify hands the form over as strings; nothing past here reads the raw credentials.
For models of our own contract these fields are ignored (their config says it all).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tritonmm.errors import InvalidInput
from tritonmm.interfaces.recognise import AUTO, INTERFACE_CHOICES
from tritonmm.interfaces.templates import CUSTOM, TEMPLATE_CHOICES, ChatTemplate, builtin, custom

CRED_CHAT_INTERFACE = "chat_interface"  # auto | tritonmm | vllm | trtllm_ensemble | trtllm_bls | generate
CRED_CHAT_TEMPLATE = "chat_template"  # a built-in family (tritonmm.interfaces.families) or "custom"
CRED_CUSTOM_CHAT_TEMPLATE = "custom_chat_template"  # the pasted template when chat_template is custom
CRED_TEXT_INPUT_NAME = "text_input_name"  # the generate endpoint's prompt input
CRED_TEXT_OUTPUT_NAME = "text_output_name"  # and its text output
CRED_CONTEXT_SIZE = "context_size"  # tokens the model takes (its config does not say)
CRED_AUDIO_MODEL = "audio_model"  # a speech_to_text model for audio parts ("" for none)

DEFAULT_TEMPLATE = "chatml"
DEFAULT_CONTEXT_SIZE = 8192
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True)
class BackendOptions:
    interface: str = AUTO
    template: str = DEFAULT_TEMPLATE
    custom_template: str = ""
    text_input: str = "text_input"
    text_output: str = "text_output"
    context_size: int = DEFAULT_CONTEXT_SIZE
    audio_model: str = ""

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, Any]) -> BackendOptions:
        interface = _text(credentials, CRED_CHAT_INTERFACE) or AUTO
        if interface not in INTERFACE_CHOICES:
            raise InvalidInput(
                f"'{CRED_CHAT_INTERFACE}' must be one of {', '.join(INTERFACE_CHOICES)}, got {interface!r}"
            )
        template = _text(credentials, CRED_CHAT_TEMPLATE) or DEFAULT_TEMPLATE
        if template not in TEMPLATE_CHOICES:
            raise InvalidInput(f"'{CRED_CHAT_TEMPLATE}' must be one of {', '.join(TEMPLATE_CHOICES)}, got {template!r}")
        return cls(
            interface=interface,
            template=template,
            custom_template=str(credentials.get(CRED_CUSTOM_CHAT_TEMPLATE) or ""),
            text_input=_tensor_name(credentials, CRED_TEXT_INPUT_NAME, "text_input"),
            text_output=_tensor_name(credentials, CRED_TEXT_OUTPUT_NAME, "text_output"),
            context_size=_context_size(credentials),
            audio_model=_text(credentials, CRED_AUDIO_MODEL),
        )

    def chat_template(self) -> ChatTemplate:
        """The template prompts are rendered with; a pasted one is checked here."""
        if self.template != CUSTOM:
            return builtin(self.template)
        if not self.custom_template.strip():
            raise InvalidInput(f"'{CRED_CHAT_TEMPLATE}' is custom but '{CRED_CUSTOM_CHAT_TEMPLATE}' is empty")
        return custom(self.custom_template)


def _text(credentials: Mapping[str, Any], key: str) -> str:
    return str(credentials.get(key) or "").strip()


def _tensor_name(credentials: Mapping[str, Any], key: str, default: str) -> str:
    name = _text(credentials, key) or default
    if not _TENSOR_NAME.match(name):
        raise InvalidInput(f"'{key}' must be a tensor name (letters, digits, '_', '.', '-'), got {name!r}")
    return name


def _context_size(credentials: Mapping[str, Any]) -> int:
    raw = _text(credentials, CRED_CONTEXT_SIZE)
    if not raw:
        return DEFAULT_CONTEXT_SIZE
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"'{CRED_CONTEXT_SIZE}' must be a whole number of tokens, got {raw!r}") from None
    if value <= 0:
        raise InvalidInput(f"'{CRED_CONTEXT_SIZE}' must be positive, got {value}")
    return value
