"""The built-in chat templates: our own compact renderings of each family's prompt format.

Backends that take a prompt string (the vLLM backend, TensorRT-LLM, the generate
endpoint) need the conversation rendered the way the checkpoint was trained. These
write the same text as the families' published templates for the conversations Dify
sends (system, history, images, tools, tool calls and results; the tests compare them
with the published templates), without their every edge case. No BOS token: the
backends' tokenizers add it.

* ``chatml``: ChatML with Qwen2.5's tool layout (``<tool_call>``, the hermes family);
  Qwen2.5, Qwen3, Hermes and other ChatML models. No images.
* ``qwen2_vl``: the same with Qwen2-VL / Qwen2.5-VL image placeholders and their default
  system prompt.
* ``llama3``: Llama 3.1 / 3.3 (header ids, tools in the first user turn, JSON calls).
* ``llama3_vision``: Llama 3.2 Vision: the same with ``<|image|>``.
* ``mistral``: Mistral's v7 layout (``[SYSTEM_PROMPT]``, ``[AVAILABLE_TOOLS]``,
  ``[TOOL_CALLS]``, ``[TOOL_RESULTS]``): Mistral Small 3 and later. No images.
* ``pixtral``: the same with ``[IMG]`` (Pixtral, Mistral Small 3.1).
* ``gemma3``: Gemma 3 turns, ``<start_of_image>``, no tools.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonmm.tool_calls import ToolCallFamily

_CHATML = r"""
{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system=default_system, start=0) -%}
{%- if messages and messages[0].role == 'system' -%}
{%- set ns.system = render(messages[0].content) -%}{%- set ns.start = 1 -%}
{%- endif -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if ns.system -%}{{- ns.system + '\n\n' -}}{%- endif -%}
{{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' -}}
{{- '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}' -}}
{{- '\n</tool_call><|im_end|>\n' -}}
{%- elif ns.system -%}
{{- '<|im_start|>system\n' + ns.system + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages[ns.start:] -%}
{%- if message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + render(message.content) + '\n</tool_response>' -}}
{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- elif message.role == 'assistant' and message.tool_calls -%}
{{- '<|im_start|>assistant' -}}
{%- if message.content -%}{{- '\n' + render(message.content) -}}{%- endif -%}
{%- for call in message.tool_calls -%}
{{- '\n<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' -}}
{{- (call.function.arguments | tojson) + '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\n' -}}
{%- else -%}
{{- '<|im_start|>' + message.role + '\n' + render(message.content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# {VISION} is replaced below: Llama 3.2 Vision drops the system turn for a conversation with
# images and no system message of its own, and writes <|image|> for each image.
_LLAMA3 = r"""
{%- macro text(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' -%}{{- '<|image|>' -}}
{%- elif part.type == 'text' -%}{{- part.text -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(system='', start=0, images=false) -%}
{%- if messages and messages[0].role == 'system' -%}
{%- set ns.system = text(messages[0].content) | trim -%}{%- set ns.start = 1 -%}
{%- endif -%}
{%- set rest = messages[ns.start:] -%}
{%- if VISION -%}{%- for message in rest -%}
{%- if message.content is not string -%}{%- for part in message.content -%}
{%- if part.type == 'image' -%}{%- set ns.images = true -%}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- if ns.start == 1 or not ns.images -%}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
{%- if tools -%}{{- 'Environment: ipython\n' -}}{%- endif -%}
{{- 'Cutting Knowledge Date: December 2023\nToday Date: ' + date_string + '\n\n' + ns.system + '<|eot_id|>' -}}
{%- endif -%}
{%- if tools and rest -%}
{{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
{{- 'Given the following functions, please respond with a JSON for a function call with its proper ' -}}
{{- 'arguments that best answers the given prompt.\n\n' -}}
{{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' -}}
{{- 'Do not use variables.\n\n' -}}
{%- for tool in tools -%}{{- (tool | tojson(indent=4)) + '\n\n' -}}{%- endfor -%}
{{- (text(rest[0].content) | trim) + '<|eot_id|>' -}}
{%- set rest = rest[1:] -%}
{%- endif -%}
{%- for message in rest -%}
{%- if message.role == 'tool' -%}
{{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + (message.content | tojson) + '<|eot_id|>' -}}
{%- elif message.tool_calls -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- for call in message.tool_calls -%}
{%- if not loop.first -%}{{- '; ' -}}{%- endif -%}
{{- '{"name": "' + call.function.name + '", "parameters": ' + (call.function.arguments | tojson) + '}' -}}
{%- endfor -%}
{{- '<|eot_id|>' -}}
{%- else -%}
{{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' -}}
{%- if VISION -%}{{- text(message.content) -}}{%- else -%}{{- text(message.content) | trim -}}{%- endif -%}
{{- '<|eot_id|>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}{%- endif -%}
"""

_MISTRAL = r"""
{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'text' -%}{{- part.text -}}
{%- elif part.type == 'image' -%}{{- '[IMG]' -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for message in messages -%}{%- if message.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}
{%- endfor -%}
{%- for message in messages -%}
{%- if message.role == 'system' -%}
{{- '[SYSTEM_PROMPT]' + render(message.content) + '[/SYSTEM_PROMPT]' -}}
{%- elif message.role == 'user' -%}
{%- if tools and loop.index0 == ns.last_user -%}
{{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' -}}
{%- endif -%}
{%- set content = message.content -%}
{%- if content is not string and content | length == 2 and content[0].type == 'text' and content[1].type == 'image' -%}
{%- set content = [content[1], content[0]] -%}
{%- endif -%}
{{- '[INST]' + render(content) + '[/INST]' -}}
{%- elif message.role == 'assistant' -%}
{%- if message.content -%}{{- render(message.content) -}}{%- endif -%}
{%- if message.tool_calls -%}
{{- '[TOOL_CALLS][' -}}
{%- for call in message.tool_calls -%}
{%- if not loop.first -%}{{- ', ' -}}{%- endif -%}
{{- '{"name": "' + call.function.name + '", "arguments": ' + (call.function.arguments | tojson) -}}
{{- ', "id": "' + call.id + '"}' -}}
{%- endfor -%}
{{- ']' -}}
{%- endif -%}
{{- eos_token -}}
{%- elif message.role == 'tool' -%}
{{- '[TOOL_RESULTS]' + message.tool_call_id + '[TOOL_CONTENT]' + render(message.content) + '[/TOOL_RESULTS]' -}}
{%- endif -%}
{%- endfor -%}
"""

_GEMMA3 = r"""
{%- macro render(content) -%}
{%- if content is string -%}{{- content | trim -}}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' -%}{{- '<start_of_image>' -}}
{%- elif part.type == 'text' -%}{{- part.text | trim -}}{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(prefix='', start=0) -%}
{%- if messages and messages[0].role == 'system' -%}
{%- if messages[0].content is string -%}{%- set ns.prefix = messages[0].content + '\n\n' -%}
{%- else -%}{%- set ns.prefix = messages[0].content[0].text + '\n\n' -%}{%- endif -%}
{%- set ns.start = 1 -%}
{%- endif -%}
{%- for message in messages[ns.start:] -%}
{{- '<start_of_turn>' + ('model' if message.role == 'assistant' else 'user') + '\n' -}}
{{- (ns.prefix if loop.first else '') + render(message.content) + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
"""


@dataclass(frozen=True)
class Family:
    """A built-in template and what it implies: ``images``, the model sees images (declared
    ``vision`` where the interface takes images); ``tool_calls``, the markup of its calls
    (None: no tools)."""

    name: str
    source: str
    images: bool
    tool_calls: ToolCallFamily | None
    eos_token: str = ""
    default_system: str = ""
    mistral_ids: bool = False  # call ids of 9 letters and digits, as Mistral's tokenizers require


def _llama3(vision: bool) -> str:
    return _LLAMA3.replace("VISION", "true" if vision else "false")


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("chatml", _CHATML, images=False, tool_calls=ToolCallFamily.HERMES),
        Family(
            "qwen2_vl",
            _CHATML,
            images=True,
            tool_calls=ToolCallFamily.HERMES,
            default_system="You are a helpful assistant.",
        ),
        Family("llama3", _llama3(False), images=False, tool_calls=ToolCallFamily.LLAMA3),
        Family("llama3_vision", _llama3(True), images=True, tool_calls=ToolCallFamily.LLAMA3),
        Family(
            "mistral", _MISTRAL, images=False, tool_calls=ToolCallFamily.MISTRAL, eos_token="</s>", mistral_ids=True
        ),
        Family("pixtral", _MISTRAL, images=True, tool_calls=ToolCallFamily.MISTRAL, eos_token="</s>", mistral_ids=True),
        Family("gemma3", _GEMMA3, images=True, tool_calls=None),
    )
}
