"""A chat with a model we did not write: resolve what it is, send the conversation, stream the answer.

:func:`resolve` reads the model's config (kept briefly per client, as capabilities are)
and returns a :class:`BackendModel`: its interface, the chat template from the form,
and the features that follow (images where the interface takes them and the template
places them, video through frames, audio through a speech model, tool calls where the
template renders tools). :func:`open_backend_chat` then returns ``ChatChunk`` s exactly
as ``tritonmm.chat.open_chat`` does for our own models, so the LLM handler treats both
alike. Everything up to the first response happens before it returns, so errors
before the first token raise there.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tritonmm.capabilities import TTL
from tritonmm.chat import ChatChunk, ChatParams
from tritonmm.contract import FINISH_TOOL_CALLS, Capabilities, Feature, Task
from tritonmm.errors import InvalidInput, ModelNotReady, ServerError
from tritonmm.interfaces.answers import AnswerReader
from tritonmm.interfaces.options import BackendOptions
from tritonmm.interfaces.prompt import render_prompt
from tritonmm.interfaces.recognise import Interface, ModelInterface, recognise
from tritonmm.interfaces.requests import VLLM_STRUCTURED_KEYS, generate_body, supports_structured_output, tensor_request
from tritonmm.interfaces.routes import frames_route, prepare_media
from tritonmm.interfaces.templates import ChatTemplate
from tritonmm.messages import Message, TextPart, Tool
from tritonmm.tool_calls import ToolCallStream
from tritonmm.transport import TritonClient

LOG = logging.getLogger(__name__)

DEFAULT_MAX_IMAGES = 8
BLS_MAX_IMAGES = 1  # image_url_input holds one image per request
# What the vLLM backend answers when it cannot read sampling_parameters (an unknown key makes
# its parser return None): the structured-output key of the other vllm_backend version is tried.
_SAMPLING_REFUSED = "'NoneType' object has no attribute 'lora_name'"


@dataclass(frozen=True)
class BackendModel:
    interface: ModelInterface
    template: ChatTemplate
    caps: Capabilities  # the features as declared, the form's context size and speech model
    frames_model: str = ""  # the video-frames model, "" when video has no route

    @property
    def structured_output(self) -> bool:
        return supports_structured_output(self.interface)


_cache: weakref.WeakKeyDictionary[TritonClient, dict] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()
_structured_keys: dict[tuple[str, str], str] = {}  # (server, model) -> the key its vLLM backend took
_said_no_counts: set[tuple[str, str]] = set()


def resolve(client: TritonClient, model: str, options: BackendOptions, *, fresh: bool = False) -> BackendModel | None:
    """The model as a backend we speak to, or None when it follows our own contract.

    Kept for ``capabilities.TTL`` seconds per client; ``fresh`` reads again.
    """
    key = (model, options)
    with _cache_lock:
        entries = _cache.setdefault(client, {})
        hit = entries.get(key)
    if hit and not fresh and time.monotonic() - hit[0] < TTL:
        return hit[1]
    backend = _read(client, model, options)
    with _cache_lock:
        _cache.setdefault(client, {})[key] = (time.monotonic(), backend)
    return backend


def _read(client: TritonClient, model: str, options: BackendOptions) -> BackendModel | None:
    config = client.model_config(model)
    iface = recognise(
        model,
        config,
        choice=options.interface,
        text_input=options.text_input,
        text_output=options.text_output,
        step_config=client.model_config,
    )
    if iface is None:
        return None
    if not client.is_model_ready(model):
        raise ModelNotReady(f"model '{model}' is in the repository of {client.url} but not loaded (not ready)")
    template = options.chat_template()
    vision = bool(iface.image_input) and template.images
    frames = frames_route(client) if vision else ""
    features = {feature for feature, on in ((Feature.VISION, vision), (Feature.VIDEO, bool(frames))) if on}
    caps = Capabilities(
        task=Task.CHAT,
        features=frozenset(features),
        context_size=options.context_size,
        max_images=BLS_MAX_IMAGES if iface.kind is Interface.TRTLLM_BLS else DEFAULT_MAX_IMAGES,
        weights="checkpoint",
        asr_model=options.audio_model,
        tool_call_family=template.tool_family.value if template.tool_family else "",
        thinking_switch=template.thinking_switch,
    )
    return BackendModel(iface, template, caps, frames)


def open_backend_chat(
    client: TritonClient,
    backend: BackendModel,
    messages: list[Message],
    params: ChatParams,
    tools: Sequence[Tool] = (),
) -> Iterator[ChatChunk]:
    """Send the conversation now; the returned iterator streams the answer (one chunk per
    piece of text, the last with the outcome, the token counts and any tool calls)."""
    iface, template = backend.interface, backend.template
    if tools and template.tool_family is None:
        raise InvalidInput(f"model '{iface.model}' cannot call tools: its chat template ({template.name}) renders none")
    messages, images = prepare_media(
        client, iface.model, backend.caps, messages, frames_model=backend.frames_model, label=iface.label
    )
    prompt = render_prompt(template, messages, tools, params.enable_thinking)
    first, responses, close = _start(client, backend, prompt, images, params)
    reader = AnswerReader(iface, stops=params.stop, max_tokens=params.max_tokens, prompt=prompt, echo=_may_echo(iface))
    calls = ToolCallStream(template.tool_family, [t.name for t in tools]) if tools and template.tool_family else None
    return _chunks(first, responses, close, reader, calls, (client.url, iface.model))


def probe(client: TritonClient, backend: BackendModel) -> None:
    """One short request: proves the model takes our prompt and answers."""
    hello = [Message("user", (TextPart("Hello"),))]
    for _ in open_backend_chat(client, backend, hello, ChatParams(max_tokens=1, temperature=0.0)):
        pass


def _start(
    client: TritonClient, backend: BackendModel, prompt: str, images: list[bytes], params: ChatParams
) -> tuple[Mapping[str, Any] | None, Iterator[Mapping[str, Any]], Callable[[], None]]:
    """Open the request and wait for its first response (None if it ended without one)."""
    iface = backend.interface
    remembered = _structured_keys.get((client.url, iface.model))
    keys = [remembered] if remembered else list(VLLM_STRUCTURED_KEYS)
    for attempt, key in enumerate(keys):
        retry = params.response_format is not None and attempt + 1 < len(keys)
        try:
            responses, close = _open(client, iface, prompt, images, params, key)
        except ServerError as exc:  # the transport waits for the first response: its errors come here
            if retry and _SAMPLING_REFUSED in str(exc):
                LOG.info("model '%s' did not take '%s'; trying '%s'", iface.model, key, keys[attempt + 1])
                continue
            raise
        try:
            first = next(responses, None)
        except ServerError as exc:
            close()
            if retry and _SAMPLING_REFUSED in str(exc):
                LOG.info("model '%s' did not take '%s'; trying '%s'", iface.model, key, keys[attempt + 1])
                continue
            raise
        except BaseException:
            close()
            raise
        if params.response_format is not None:
            _structured_keys[(client.url, iface.model)] = key
        return first, responses, close
    raise AssertionError("unreachable: the last attempt returns or raises")


def _open(
    client: TritonClient, iface: ModelInterface, prompt: str, images: list[bytes], params: ChatParams, key: str
) -> tuple[Iterator[Mapping[str, Any]], Callable[[], None]]:
    if iface.kind is Interface.GENERATE:
        events = client.stream_generate(iface.model, generate_body(iface, prompt, params, key))
        return iter(events), events.close
    inputs, outputs = tensor_request(iface, prompt, images, params, key)
    stream = client.stream_infer(iface.model, inputs, outputs)  # type: ignore[arg-type]  # shaped tensors
    return (response.outputs for response in stream), stream.close


def _may_echo(iface: ModelInterface) -> bool:
    """A blocking answer repeats the prompt when the echo could not be switched off."""
    return not iface.decoupled and "exclude_input_in_output" not in iface.inputs


def _chunks(
    first: Mapping[str, Any] | None,
    responses: Iterator[Mapping[str, Any]],
    close: Callable[[], None],
    reader: AnswerReader,
    calls: ToolCallStream | None,
    where: tuple[str, str],
) -> Iterator[ChatChunk]:
    try:
        pending = [first] if first is not None else []
        while True:
            outputs = pending.pop() if pending else next(responses, None)
            if outputs is None:
                break
            text = reader.feed(outputs)
            text = calls.feed(text) if calls else text
            if text:
                yield ChatChunk(text=text)
            if reader.stopped:
                break  # closing the stream below cancels the rest on the server
        tail = reader.finish()
        tool_calls: tuple = ()
        if calls:
            tail = calls.feed(tail)
            end = calls.finish()
            tail, tool_calls = tail + end.text, end.calls
        if not reader.counts_known:
            _say_no_counts(where)
        yield ChatChunk(
            text=tail,
            finish_reason=FINISH_TOOL_CALLS if tool_calls else reader.finish_reason,
            prompt_tokens=reader.prompt_tokens,
            completion_tokens=reader.completion_tokens,
            tool_calls=tool_calls,
        )
    finally:
        close()


def _say_no_counts(where: tuple[str, str]) -> None:
    """Once per (server, model): usage is not guessed with some other tokenizer."""
    model = where[1]
    if where not in _said_no_counts:
        _said_no_counts.add(where)
        LOG.warning(
            "model '%s' returns no token counts (no return_num_input_tokens / return_num_output_tokens "
            "inputs): usage is reported as 0 tokens, not estimated",
            model,
        )
