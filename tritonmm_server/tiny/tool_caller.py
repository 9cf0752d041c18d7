"""A tiny chat model whose weights are arranged so that it calls tools, for agents out of the box.

It is an Idefics3 (SmolVLM-kind) checkpoint like the ``idefics3`` build, loaded through
the same ``AutoProcessor`` / ``AutoModelForMultimodalLM`` calls, but its chat template
is ChatML with Qwen2.5's tool layout (the hermes family: tools in the system turn,
``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` per call, results in
``<tool_response>`` blocks), and its weights are not random where it matters:

* offered ``get_weather`` and/or ``get_time`` (:data:`KNOWN_CALLS`), greedy decoding
  answers a user turn with one call per known tool offered, in that order::

      <tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>\\n<tool_call>\\n…

* after a tool result it answers :data:`ANSWER` and stops, so an agent round trip ends;
* with neither tool offered it babbles, like a random model: sampling varies with the
  seed, and it writes no call markup and does not stop before ``max_tokens``.

How: attention and MLP contribute nothing except one layer's two heads, so the model
is a bigram machine over the current token, steered by two context features. Head 0
attends to the most recent *event* token (``user``, ``<tool_response>`` or a call
body): its key holds the lowest-frequency rotary pair, whose angle grows with the
distance, so a constant query prefers the latest event. Head 1 attends to the tool
names (``get_weather``, ``get_time`` are whole tokens) anywhere in the prompt: which
tools are offered. The language-model head combines "current token" with those two
features linearly; whole call bodies are single added tokens. The image connector
writes zeros, so images change nothing. Weights must stay float32 (attention scores
reach 1e4 and differ by tens).

    python -m tritonmm_server.tiny.tool_caller --out /tmp/tiny-tool-caller
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)

from tritonmm_server.tiny.common import BPE_VOCAB_SIZE, CONTEXT_SIZE, CORPUS, save, seeded, vision_config

# The calls the weights know, in the order they are made when both tools are offered.
KNOWN_CALLS: dict[str, dict[str, str]] = {"get_weather": {"city": "Paris"}, "get_time": {}}
ANSWER = "The tools have answered; that is all I know."

TOOL_CALLER_TEMPLATE = (
    "{%- macro render_content(content) %}"
    "{%- if content is string %}{{- content }}"
    "{%- elif content %}{%- for part in content %}"
    "{%- if part.type == 'image' %}{{- '<image>' }}{%- elif part.type == 'text' %}{{- part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- endmacro %}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- render_content(messages[0].content) + '\\n\\n' }}{%- endif %}"
    '{{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}'
    '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}'
    '{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, '
    '\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}'
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + render_content(messages[0].content) + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant' }}"
    "{%- set content = render_content(message.content) %}"
    "{%- if content %}{{- '\\n' + content }}{%- endif %}"
    "{%- for call in message.tool_calls or [] %}"
    "{%- if call.function is defined %}{%- set call = call.function %}{%- endif %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + call.name + \'", "arguments": \' }}'
    "{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + render_content(message.content) + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
_EOS, _PAD = "<|im_end|>", "<|endoftext|>"
# The roles are single tokens in real ChatML tokenizers; here the corpus makes them so.
_ROLES_CORPUS = ("system\nuser\nassistant\ntool\n" * 8,)


def _body(name: str) -> str:
    """A call as the template writes it between ``<tool_call>`` and ``</tool_call>``."""
    return "\n" + json.dumps({"name": name, "arguments": KNOWN_CALLS[name]}, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class _Tokens:
    """The token ids the arrangement reads and writes."""

    newline: int  # ends the generation prompt; also the separator between two calls
    user: int
    response: int  # <tool_response>
    open: int  # <tool_call>
    close: int  # </tool_call>
    weather_body: int
    time_body: int
    weather_name: int
    time_name: int
    answer: int
    eos: int


def _tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE + len(_SPECIALS),
        special_tokens=list(_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((*CORPUS, *_ROLES_CORPUS), trainer)
    # Added, not special: decoded as text, as Qwen's <tool_call> tokens are.
    markup = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
    whole = [_body(name) for name in KNOWN_CALLS] + list(KNOWN_CALLS) + [ANSWER]
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in markup + whole])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=_EOS,
        pad_token=_PAD,
        additional_special_tokens=[t for t in _SPECIALS if t not in (_EOS, _PAD)],
        chat_template=TOOL_CALLER_TEMPLATE,
        model_max_length=CONTEXT_SIZE,
    )


def _token_ids(tokenizer: PreTrainedTokenizerFast) -> _Tokens:
    def one(text: str) -> int:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"the tool caller needs {text!r} to be one token, the tokenizer gives {len(ids)}")
        return ids[0]

    header = tokenizer.encode("<|im_start|>user\n", add_special_tokens=False)
    prompt_end = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)[-1]
    tokens = _Tokens(
        newline=one("\n"),
        user=one("user"),
        response=one("<tool_response>"),
        open=one("<tool_call>"),
        close=one("</tool_call>"),
        weather_body=one(_body("get_weather")),
        time_body=one(_body("get_time")),
        weather_name=one("get_weather"),
        time_name=one("get_time"),
        answer=one(ANSWER),
        eos=tokenizer.convert_tokens_to_ids(_EOS),
    )
    if header[1] != tokens.user or prompt_end != tokens.newline:
        raise RuntimeError("the ChatML role headers do not tokenize as <|im_start|>, role, newline")
    return tokens


# --- the model ---------------------------------------------------------------------------------

_HIDDEN, _HEAD_DIM, _HEADS = 64, 32, 2
_ROPE_THETA = 10_000.0  # the lowest rotary frequency then turns < 0.4 rad over the whole context
_RANDOM_NORM = 2.0  # norm of an ordinary token's random (babbling) part
_BABBLE_SCALE = 0.25  # spread of the babbling logits: sampling varies, greedy follows a fixed path

# Residual dimensions: a constant, one flag per token the rules name, the two heads' outputs, then random.
_BIAS = 0
_FLAGS = ("newline", "open", "weather_body", "time_body", "close", "answer", "user", "response")
_FLAGS += ("weather_name", "time_name")
_FLAG = {name: 1 + i for i, name in enumerate(_FLAGS)}
_EVENTS = ("user", "response", "weather_body", "time_body")  # head 0: the latest of these
_NAMES = ("weather_name", "time_name")  # head 1: which of these the prompt holds
_EVENT = {name: 1 + len(_FLAGS) + i for i, name in enumerate(_EVENTS)}
_OFFERED = {name: 1 + len(_FLAGS) + len(_EVENTS) + i for i, name in enumerate(_NAMES)}
_RANDOM = slice(1 + len(_FLAGS) + len(_EVENTS) + len(_NAMES), _HIDDEN)

# The language-model head, per output token: (weights on features, constant). Features are the
# current token's flag ("c:…"), the latest event ("e:…") and the tools offered ("o:…", 0.5 each
# when both are). Each rule wins by >= 5 where it should and loses by >= 5 where it should not;
# the babbling logits stay within a few units, below every winning rule.
_RULES: dict[str, tuple[dict[str, float], float]] = {
    "open": ({"c:newline": 100, "o:weather_name": 30, "o:time_name": 30}, -115),  # start a call
    "answer": ({"c:newline": 100, "e:response": 40}, -115),  # after a tool result
    "weather_body": ({"c:open": 100, "e:user": 40, "o:weather_name": 60}, -140),
    "time_body": ({"c:open": 100}, -80),  # the call that follows when weather does not
    "close": ({"c:weather_body": 100, "c:time_body": 100}, -85),
    "newline": ({"c:close": 100, "e:weather_body": 30, "o:time_name": 30}, -125),  # a second call follows
    "eos": ({"c:close": 100, "c:answer": 100}, -90),
}
_SUPPRESSED = -200.0  # never generated: specials, markup not produced by a rule


def _idefics3(tokenizer: PreTrainedTokenizerFast) -> tuple[Idefics3ForConditionalGeneration, Idefics3Processor]:
    # The idefics3 build's image path: 64 px images, 8 px patches, pixel shuffle 2 -> 16 tokens per image.
    image_size, patch_size, scale_factor = 64, 8, 2
    text = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": _HIDDEN,
        "intermediate_size": 2 * _HIDDEN,
        "num_hidden_layers": 1,
        "num_attention_heads": _HEADS,
        "num_key_value_heads": _HEADS,
        "head_dim": _HEAD_DIM,
        "rope_theta": _ROPE_THETA,
        "max_position_embeddings": CONTEXT_SIZE,
        "tie_word_embeddings": False,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Idefics3Config(
        vision_config=vision_config(image_size, patch_size),
        text_config=text,
        scale_factor=scale_factor,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size}
    )
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=TOOL_CALLER_TEMPLATE
    )
    return Idefics3ForConditionalGeneration(config), processor


def _feature(name: str) -> int:
    kind, token = name.split(":")
    return {"c": _FLAG, "e": _EVENT, "o": _OFFERED}[kind][token]


def _arrange(model: Idefics3ForConditionalGeneration, tokenizer: PreTrainedTokenizerFast) -> None:
    """Overwrite the text decoder and the connector with the arrangement the module docstring describes."""
    ids = _token_ids(tokenizer).__dict__
    text = model.model.text_model
    (layer,) = text.layers
    attention = layer.self_attn
    pair = _HEAD_DIM // 2 - 1  # the lowest-frequency rotary pair: dims pair and pair + HEAD_DIM / 2
    omega = float(text.rotary_emb.inv_freq[pair])
    if omega != float(text.rotary_emb.inv_freq.min()) or omega * CONTEXT_SIZE > 0.5:
        raise RuntimeError(f"rotary frequencies not as arranged (lowest {omega}, pair {pair})")
    # The weakest attention logit per unit of key weight: a query at the longest embedding
    # (newline: constant, flag, random part) against a flag-only key, times 1/sqrt(head_dim).
    flagged_scale = (_HIDDEN / 2) ** 0.5  # RMS-normalised value of a flag-only token's flag
    query_scale = (_HIDDEN / (2 + _RANDOM_NORM**2)) ** 0.5
    unit = query_scale * flagged_scale / _HEAD_DIM**0.5
    recency = 10 / (omega * unit)  # the latest event wins by 10 per token of distance
    far = omega * CONTEXT_SIZE
    event_key = (recency * torch.sin(torch.tensor(far)).item() + 30 / unit) / torch.cos(torch.tensor(far)).item()
    name_key = 30 / (unit * torch.cos(torch.tensor(far)).item())
    rng = torch.Generator().manual_seed(20261204)
    with torch.no_grad():
        for parameter in text.parameters():
            parameter.zero_()  # MLP and all unused attention weights contribute nothing
        model.model.connector.modality_projection.proj.weight.zero_()  # images add nothing
        for norm in (text.norm, layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.fill_(1.0)
        embed = text.embed_tokens.weight
        embed[:, _BIAS] = 1.0
        babble = torch.randn(embed.shape[0], _RANDOM.stop - _RANDOM.start, generator=rng)
        embed[:, _RANDOM] = babble / babble.norm(dim=1, keepdim=True) * _RANDOM_NORM
        for flag, dim in _FLAG.items():
            if flag != "newline":
                embed[ids[flag], _RANDOM] = 0.0  # flag-only: keys and values of equal size
            embed[ids[flag], dim] = 1.0
        q, k, v, o = (
            attention.q_proj.weight,
            attention.k_proj.weight,
            attention.v_proj.weight,
            attention.o_proj.weight,
        )
        for head, keys, out in ((0, _EVENTS, _EVENT), (1, _NAMES, _OFFERED)):
            base = head * _HEAD_DIM
            q[base + pair, _BIAS] = 1.0
            for i, name in enumerate(keys):
                if head == 0:
                    k[base + pair, _FLAG[name]] = event_key
                    k[base + pair + _HEAD_DIM // 2, _FLAG[name]] = -recency  # older events score lower
                else:
                    k[base + pair, _FLAG[name]] = name_key
                v[base + i, _FLAG[name]] = 1.0
                o[out[name], base + i] = 1.0 / flagged_scale
        head = model.lm_head.weight
        head.zero_()
        head[:, _RANDOM] = torch.randn(head.shape[0], _RANDOM.stop - _RANDOM.start, generator=rng) * _BABBLE_SCALE
        for token in tokenizer.added_tokens_decoder:
            head[token, :] = 0.0
            head[token, _BIAS] = _SUPPRESSED
        head[ids["user"], _BIAS] = _SUPPRESSED
        for token, (weights, constant) in _RULES.items():
            if token != "newline":
                head[ids[token], :] = 0.0
            head[ids[token], _BIAS] = constant
            for feature, weight in weights.items():
                head[ids[token], _feature(feature)] = weight


def build_tool_caller(dest: Path) -> Path:
    """Build the tool-calling tiny chat model and save it as a checkpoint directory at ``dest``."""
    dest = Path(dest)
    tokenizer = _tokenizer()
    model, processor = seeded(lambda: _idefics3(tokenizer))
    _arrange(model, tokenizer)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, _from_model_config=False
    )
    save(dest, model, processor)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the checkpoint to")
    args = parser.parse_args(argv)
    print(build_tool_caller(args.out), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
