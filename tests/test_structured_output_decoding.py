"""Grammar-constrained decoding on the tiny random chat model: the answer fits the format anyway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor, LogitsProcessorList

from tritonmm_server.backend.errors import InputError
from tritonmm_server.engines.chat.constrained import (
    ConstraintLogitsProcessor,
    StructuredOutput,
    parse_request_format,
)
from tritonmm_server.engines.chat.params import GenerationParams
from tritonmm_server.engines.chat.token_stream import Sampler
from tritonmm_server.tiny.build import build_tiny_model

# Nested objects, arrays of objects, enums, required and optional properties. Strings,
# arrays and integers are bounded so that a random model, which never chooses to close
# a string, still ends its document within the token budget.
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "status": {"enum": ["draft", "final", "archived"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 2},
                    "done": {"type": "boolean"},
                },
                "required": ["name", "done"],
                "additionalProperties": False,
            },
        },
        "owner": {
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 9}, "role": {"enum": ["a", "b"]}},
            "required": ["id", "role"],
            "additionalProperties": False,
        },
    },
    "required": ["title", "status", "items", "owner"],
    "additionalProperties": False,
}
MAX_TOKENS = 400


class Tiny:
    """The tiny Idefics3 chat checkpoint, loaded as the chat engine loads it, and a prompt."""

    def __init__(self, directory: Path) -> None:
        self.processor = AutoProcessor.from_pretrained(directory)
        self.model = AutoModelForMultimodalLM.from_pretrained(directory).eval()
        self.tokenizer = self.processor.tokenizer
        self.eos = sorted({self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id})
        self.vocab_size = self.model.config.get_text_config().vocab_size
        self.structured = StructuredOutput(self.tokenizer, eos_token_ids=self.eos, vocab_size=self.vocab_size)

    def prompt(self, text: str = "Describe the project as JSON.") -> dict[str, torch.Tensor]:
        conversation = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        return self.processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )

    def generate(self, fmt: Any, params: GenerationParams, max_tokens: int = MAX_TOKENS) -> tuple[str, bool]:
        """(text, ended by end-of-sequence) of one constrained generation, sampled by the engine's Sampler."""
        inputs = self.prompt()
        prompt_tokens = inputs["input_ids"].shape[1]
        constraint = ConstraintLogitsProcessor(self.structured.constraint(fmt), prompt_tokens)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=self.eos,
                pad_token_id=self.eos[0],
                logits_processor=LogitsProcessorList([constraint, Sampler(params)]),
            )
        new = out[0, prompt_tokens:].tolist()
        return self.tokenizer.decode(new, skip_special_tokens=True), new[-1] in self.eos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return Tiny(build_tiny_model("idefics3", tmp_path_factory.mktemp("tiny") / "idefics3"))


def json_schema_format(schema: Any = SCHEMA) -> Any:
    return parse_request_format("json_schema", json.dumps({"schema": schema, "name": "llm_response"}))


@pytest.mark.parametrize(
    "params",
    [GenerationParams(temperature=0), *(GenerationParams(temperature=1.0, seed=seed) for seed in (1, 2, 3))],
    ids=["greedy", "sampled-1", "sampled-2", "sampled-3"],
)
def test_answers_validate_against_a_nested_schema(tiny: Tiny, params: GenerationParams) -> None:
    text, ended = tiny.generate(json_schema_format(), params)
    assert ended, f"no end of sequence within {MAX_TOKENS} tokens: {text!r}"
    document = json.loads(text)
    jsonschema.validate(document, SCHEMA)
    assert document["items"] and all(item["name"] is not None for item in document["items"])


def test_unconstrained_the_tiny_model_writes_no_json(tiny: Tiny) -> None:
    """The control: without the constraint the same model and seed give no JSON document."""
    inputs = tiny.prompt()
    with torch.inference_mode():
        out = tiny.model.generate(
            **inputs,
            max_new_tokens=60,
            do_sample=False,
            eos_token_id=tiny.eos,
            pad_token_id=tiny.eos[0],
            logits_processor=LogitsProcessorList([Sampler(GenerationParams(temperature=1.0, seed=1))]),
        )
    text = tiny.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize("params", [GenerationParams(temperature=0), GenerationParams(temperature=1.0, seed=5)])
def test_json_object_gives_a_json_object(tiny: Tiny, params: GenerationParams) -> None:
    text, ended = tiny.generate(parse_request_format("json_object", None), params)
    assert ended, f"no end of sequence within {MAX_TOKENS} tokens: {text!r}"
    assert isinstance(json.loads(text), dict)


def test_too_few_tokens_end_with_an_unfinished_document(tiny: Tiny) -> None:
    """max_tokens first: generation stops (finish reason length), the text is a prefix, not JSON."""
    text, ended = tiny.generate(json_schema_format(), GenerationParams(temperature=0), max_tokens=8)
    assert not ended
    assert text.startswith('{"title": ')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_constraints_in_one_batch_each_follow_their_own_format(tiny: Tiny) -> None:
    """Two requests decode in one forward pass per step, each row masked by its own constraint."""
    formats = [json_schema_format(), json_schema_format({"type": "array", "items": {"enum": [1, 2]}, "maxItems": 3})]
    constraints = [tiny.structured.constraint(fmt) for fmt in formats]
    samplers = [Sampler(GenerationParams(temperature=1.0, seed=seed)) for seed in (7, 8)]
    prompts = [tiny.prompt("Describe the project."), tiny.prompt("Numbers, please.")]
    width = max(p["input_ids"].shape[1] for p in prompts)
    rows = [[tiny.eos[0]] * (width - p["input_ids"].shape[1]) + p["input_ids"][0].tolist() for p in prompts]
    mask = [[0] * (width - p["input_ids"].shape[1]) + [1] * p["input_ids"].shape[1] for p in prompts]
    generated: list[list[int]] = [[], []]
    for _ in range(MAX_TOKENS):
        live = [i for i in range(2) if not generated[i] or generated[i][-1] not in tiny.eos]
        if not live:
            break
        with torch.inference_mode():
            logits = tiny.model(input_ids=torch.tensor(rows), attention_mask=torch.tensor(mask)).logits[:, -1]
        logits = logits.clone()  # a normal tensor: masked in place outside inference mode, as the engine may
        for i in range(2):
            token = tiny.eos[0]  # a finished row only pads
            if i in live:
                constraints[i].mask_logits(logits[i])
                token = int(samplers[i](None, logits[i][None]).argmax())
                constraints[i].accept(token)
                generated[i].append(token)
            rows[i].append(token)
            mask[i].append(1 if i in live else 0)
    texts = [tiny.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
    assert all(g[-1] in tiny.eos for g in generated), texts
    assert all(c.is_finished for c in constraints)
    jsonschema.validate(json.loads(texts[0]), SCHEMA)
    assert isinstance(json.loads(texts[1]), list) and set(json.loads(texts[1])) <= {1, 2}


def test_is_finished_once_only_end_of_sequence_is_left(tiny: Tiny) -> None:
    constraint = tiny.structured.constraint(json_schema_format({"type": "object", "properties": {}}))
    for token in tiny.tokenizer.encode("{}", add_special_tokens=False):
        assert not constraint.is_finished
        constraint.accept(token)
    assert constraint.is_finished
    row = torch.zeros(tiny.vocab_size)
    constraint.mask_logits(row)
    assert torch.isfinite(row).nonzero().flatten().tolist() == tiny.eos


def test_a_token_past_the_mask_is_a_server_error(tiny: Tiny) -> None:
    constraint = tiny.structured.constraint(parse_request_format("json_object", None))
    with pytest.raises(
        RuntimeError, match=r"token \d+ does not fit the response format: .*doesn't satisfy the grammar"
    ):
        constraint.accept(tiny.tokenizer.encode("x", add_special_tokens=False)[0])


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "strin"}, "json_schema 'llm_response' is not a valid JSON schema: at $.type: 'strin' is not valid"),
        (
            {"type": "object", "properties": {"a": {"type": "integer", "minimum": "five"}}},
            "json_schema 'llm_response' is not a valid JSON schema: at $.properties.a.minimum: 'five' is not of type",
        ),
        (
            {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
            "json_schema 'llm_response' cannot be enforced by structured output: Unimplemented keys: [\"uniqueItems\"]",
        ),
        (
            {"type": "integer", "minimum": 5, "maximum": 2},
            "json_schema 'llm_response' cannot be enforced by structured output: Unsatisfiable schema: "
            "minimum (5) is greater than maximum (2)",
        ),
        (
            {"type": "string", "pattern": "(?<=a)b"},
            "json_schema 'llm_response' cannot be enforced by structured output: regex parse error",
        ),
        (
            {"$ref": "https://example.com/schema.json"},
            "json_schema 'llm_response' cannot be enforced by structured output: Resource 'https://example.com",
        ),
    ],
    ids=["unknown type", "wrong keyword value", "unsupported keyword", "unsatisfiable", "look-behind", "remote ref"],
)
def test_a_bad_schema_is_refused_before_generation_naming_the_problem(tiny: Tiny, schema: dict, message: str) -> None:
    with pytest.raises(InputError) as caught:
        tiny.structured.constraint(json_schema_format(schema))
    assert str(caught.value).startswith(message)


def test_request_parameters_that_break_the_format_are_input_errors() -> None:
    with pytest.raises(InputError, match="response_format must be one of text, json_object, json_schema, got 'yaml'"):
        parse_request_format("yaml", None)
    with pytest.raises(InputError, match="json_schema is not valid JSON"):
        parse_request_format("json_schema", "{nope")


def test_checked_grammars_are_cached_per_schema_and_bounded(tiny: Tiny) -> None:
    structured = StructuredOutput(tiny.tokenizer, eos_token_ids=tiny.eos, vocab_size=tiny.vocab_size, cache_size=2)
    formats = [json_schema_format({"enum": [n]}) for n in range(3)]
    structured.constraint(formats[0])
    structured.constraint(formats[0])
    assert structured.cached_schemas() == 1
    structured.constraint(formats[1])
    structured.constraint(formats[2])
    assert structured.cached_schemas() == 2
    # a refused schema is not cached, and is refused again
    for _ in range(2):
        with pytest.raises(InputError):
            structured.constraint(json_schema_format({"type": "strin"}))
    assert structured.cached_schemas() == 2


def test_a_logits_row_of_the_wrong_width_is_refused(tiny: Tiny) -> None:
    constraint = tiny.structured.constraint(parse_request_format("json_object", None))
    with pytest.raises(ValueError, match=f"expected one row of {tiny.vocab_size} logits, got shape"):
        constraint.mask_logits(torch.zeros(tiny.vocab_size + 1))
