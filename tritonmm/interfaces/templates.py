"""Chat templates for backends that take a prompt string: a built-in family, or one pasted by the user.

Rendering happens in Jinja's sandbox (``ImmutableSandboxedEnvironment``): a pasted
template is data from the form, and the sandbox keeps it from reaching Python
objects. The environment follows what Hugging Face's ``apply_chat_template`` offers
templates (``trim_blocks``, ``lstrip_blocks``, loop controls, a ``tojson`` that keeps
non-ASCII text and key order, ``raise_exception``, ``strftime_now``), so a published
template renders here as it does there.

A pasted template may be the Jinja text itself, the ``chat_template`` value of a
``tokenizer_config.json`` copied with its quotes (a JSON string: newlines survive a
one-line form field that way), or that whole file (a JSON object); a list of named
templates takes ``default`` (``tool_use`` when tools are offered).
"""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from tritonmm.errors import InvalidInput
from tritonmm.interfaces.families import FAMILIES
from tritonmm.tool_calls import ToolCallFamily, detect_tool_support

CUSTOM = "custom"
TEMPLATE_CHOICES = (*FAMILIES, CUSTOM)
MAX_TEMPLATE_CHARS = 100_000


class TemplateRefused(InvalidInput):
    """The template raised (``raise_exception``) or failed on this conversation."""


@dataclass(frozen=True)
class ChatTemplate:
    """How prompts are rendered for one model, and what that implies for its features.

    ``images``: image parts get the family's placeholder (vision can be declared);
    ``tool_family``: the markup of its tool calls (None: tools cannot be offered);
    ``string_arguments``: past calls' arguments go in as JSON text rather than objects;
    ``content_lists``: every message's content is a list of parts (templates that iterate
    it), else a string when it is text only.
    """

    name: str
    source: str
    images: bool
    tool_family: ToolCallFamily | None
    string_arguments: bool = False
    content_lists: bool = False
    eos_token: str = ""
    default_system: str = ""
    mistral_ids: bool = False
    thinking_switch: bool = False  # the template reads enable_thinking
    tool_source: str = ""  # a pasted list's "tool_use" template, for requests that offer tools

    def render(self, context: dict[str, Any], *, with_tools: bool = False) -> str:
        source = self.tool_source if with_tools and self.tool_source else self.source
        variables = {
            "bos_token": "",  # the backends' tokenizers add it
            "eos_token": self.eos_token,
            "default_system": self.default_system,
            "date_string": datetime.date.today().strftime("%d %b %Y"),
            **context,
        }
        try:
            return _compiled(source).render(**variables)
        except TemplateRefused:
            raise
        except SecurityError as exc:
            raise InvalidInput(f"the chat template '{self.name}' tried something the sandbox forbids: {exc}") from None
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidInput(f"the chat template '{self.name}' failed on this conversation: {exc}") from None


def builtin(name: str) -> ChatTemplate:
    family = FAMILIES[name]
    return ChatTemplate(
        name=family.name,
        source=family.source,
        images=family.images,
        tool_family=family.tool_calls,
        eos_token=family.eos_token,
        default_system=family.default_system,
        mistral_ids=family.mistral_ids,
    )


def custom(pasted: str) -> ChatTemplate:
    """A pasted template, checked now: InvalidInput names what is wrong with it."""
    source, tool_source = _unwrap(pasted)
    for text in filter(None, (source, tool_source)):
        _compiled(text)  # a syntax error is refused here, when the model is set up
    support = detect_tool_support(tool_source or source)
    lists = _iterates_content(source)
    return ChatTemplate(
        name=CUSTOM,
        source=source,
        images=lists and "image" in source,
        tool_family=support.family if support.supports_tool_calls else None,
        string_arguments=support.string_arguments,
        content_lists=lists,
        thinking_switch="enable_thinking" in source,
        tool_source=tool_source,
    )


def _unwrap(pasted: str) -> tuple[str, str]:
    """(template, tool-use template or "") from what was pasted."""
    text = pasted.strip()
    if not text:
        raise InvalidInput("the custom chat template is empty: paste the model's Jinja chat template")
    if len(text) > MAX_TEMPLATE_CHARS:
        raise InvalidInput(f"the custom chat template has {len(text)} characters; at most {MAX_TEMPLATE_CHARS}")
    if not text.startswith(('"', '{"', "[{")):  # Jinja text itself ("{%", "{{", "[INST]"...)
        return text, ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"the custom chat template looks like JSON but is not valid JSON: {exc}") from None
    if isinstance(value, dict):
        value = value.get("chat_template")
    if isinstance(value, list):
        named = {str(t.get("name")): str(t.get("template", "")) for t in value if isinstance(t, dict)}
        if "default" not in named:
            raise InvalidInput(f"the pasted templates are named {sorted(named)}; none is named 'default'")
        return named["default"], named.get("tool_use", "")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            "the custom chat template is JSON without a template: paste the Jinja text, the "
            "chat_template value of tokenizer_config.json (with its quotes) or that whole file"
        )
    return value, ""


def _iterates_content(source: str) -> bool:
    """Does the template loop over a message's content (so it takes a list of parts)?"""
    for loop in _ENV.parse(source).find_all(jinja2.nodes.For):
        for node in (loop.iter, *loop.iter.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, jinja2.nodes.Name))):
            if isinstance(node, jinja2.nodes.Getattr) and node.attr == "content":
                return True
            if isinstance(node, jinja2.nodes.Getitem) and getattr(node.arg, "value", None) == "content":
                return True
            if isinstance(node, jinja2.nodes.Name) and node.name == "content":
                return True
    return False


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise TemplateRefused(f"the chat template refused the conversation: {message}")


def _strftime_now(format: str) -> str:
    return datetime.datetime.now().strftime(format)


_ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
_ENV.filters["tojson"] = _tojson
_ENV.globals["raise_exception"] = _raise_exception
_ENV.globals["strftime_now"] = _strftime_now


@functools.lru_cache(maxsize=32)
def _compiled(source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInput(f"the chat template is not valid Jinja: line {exc.lineno}: {exc.message}") from None
