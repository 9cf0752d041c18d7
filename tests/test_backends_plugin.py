"""Conformance: the LLM through the built package, driven as the daemon drives it, against fixture
models with the interfaces of the vLLM backend, TensorRT-LLM (ensemble and BLS) and a model on the
generate endpoint (tests/backend_fixtures.py), all generating with the tiny chat checkpoint."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor

from devtools.plugin_harness import PluginError, PluginProcess
from tests import media_fixtures as fx

SMOLVLM = (Path(__file__).parent / "fixtures" / "chat_templates" / "smolvlm-instruct.jinja").read_text()
CHATML_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSay hello<|im_end|>\n<|im_start|>assistant\n"
)
GENERATE = {"chat_interface": "generate", "text_input_name": "prompt", "text_output_name": "completion"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def conversation(*parts: dict, text: str = "Say hello") -> list[dict]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "data": text}, *parts]},
    ]


def image_part(data: bytes) -> dict:
    return {"type": "image", "format": "png", "mime_type": "image/png", "base64_data": base64.b64encode(data).decode()}


def video_part(data: bytes) -> dict:
    return {"type": "video", "format": "mp4", "mime_type": "video/mp4", "base64_data": base64.b64encode(data).decode()}


def request(credentials: dict, model: str, messages: list[dict], *, stream: bool = True, stop=(), **params) -> dict:
    return {
        "provider": "triton_multimodal", "model_type": "llm", "model": model, "credentials": credentials,
        "prompt_messages": messages, "model_parameters": {"max_tokens": 6, "temperature": 0.0, **params},
        "tools": [], "stop": list(stop), "stream": stream,
    }  # fmt: skip


def invoke(plugin: PluginProcess, credentials: dict, model: str, messages=None, **kwargs) -> list[dict]:
    return plugin.call("model", "invoke_llm", request(credentials, model, messages or conversation(), **kwargs))


def text_of(chunks: list[dict]) -> str:
    return "".join(c["delta"]["message"]["content"] for c in chunks)


def usage(chunks: list[dict]) -> dict:
    return chunks[-1]["delta"]["usage"]


def assert_streamed(chunks: list[dict], max_tokens: int = 6) -> None:
    """One chunk per piece of text, then the last with usage (from the backend) and finish_reason."""
    assert [c["delta"]["index"] for c in chunks] == list(range(len(chunks)))
    assert all(c["delta"]["usage"] is None and c["delta"]["finish_reason"] is None for c in chunks[:-1])
    assert all(c["delta"]["message"]["content"] for c in chunks[:-1])
    last = chunks[-1]["delta"]
    assert last["finish_reason"] in ("stop", "length")
    assert 1 <= len(chunks) - 1 <= last["usage"]["completion_tokens"] <= max_tokens
    assert last["usage"]["prompt_tokens"] > 0


@pytest.fixture(scope="module")
def reference(tiny_model):
    """Greedy generation by the tiny checkpoint itself: what the backends must have answered."""
    checkpoint = tiny_model("idefics3")
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForMultimodalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    eos = set(processor.tokenizer.all_special_ids) & {processor.tokenizer.eos_token_id, *_ids(model)}

    def generate(prompt: str, max_tokens: int) -> str:
        inputs = processor(text=prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, pad_token_id=min(eos))
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        new = new[: next((i for i, t in enumerate(new) if t in eos), len(new))]
        return processor.tokenizer.decode(new, skip_special_tokens=True)

    return generate


def _ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return eos if isinstance(eos, list) else [eos]


# --- the vLLM backend --------------------------------------------------------------------------


def test_vllm_streams_the_checkpoints_own_answer_token_by_token(plugin, credentials, reference) -> None:
    chunks = invoke(plugin, credentials, "vllm_llm")
    assert_streamed(chunks)
    assert text_of(chunks) == reference(CHATML_PROMPT, 6)


def test_vllm_blocking_call_is_the_streamed_answer_in_one_chunk(plugin, credentials) -> None:
    streamed = invoke(plugin, credentials, "vllm_llm")
    [blocking] = invoke(plugin, credentials, "vllm_llm", stream=False)
    assert blocking["delta"]["message"]["content"] == text_of(streamed)
    assert blocking["delta"]["usage"]["completion_tokens"] == usage(streamed)["completion_tokens"]


def test_vllm_takes_an_image_with_a_pasted_template(plugin, credentials) -> None:
    form = {**credentials, "chat_template": "custom", "custom_chat_template": json.dumps(SMOLVLM)}
    schema = plugin.call("model", "get_ai_model_schemas", {**request(form, "vllm_llm", []), "model_type": "llm"})
    assert {"vision", "video"} <= set(schema[0]["model_schema"]["features"])
    text_only = usage(invoke(plugin, form, "vllm_llm", conversation(text="What is this?")))
    with_image = invoke(plugin, form, "vllm_llm", conversation(image_part(fx.png()), text="What is this?"))
    assert_streamed(with_image)
    assert usage(with_image)["prompt_tokens"] > text_only["prompt_tokens"]  # the image's tokens, counted by the model


def test_a_video_reaches_an_image_only_backend_as_frames(plugin, credentials) -> None:
    form = {**credentials, "chat_template": "custom", "custom_chat_template": json.dumps(SMOLVLM)}
    one_image = usage(invoke(plugin, form, "vllm_llm", conversation(image_part(fx.png(64, 64)), text="?")))
    chunks = invoke(plugin, form, "vllm_llm", conversation(video_part(fx.mp4(seconds=2.0)), text="What happens?"))
    assert_streamed(chunks)
    assert usage(chunks)["prompt_tokens"] > 2 * one_image["prompt_tokens"]  # several frames, each an image


def test_stop_words_end_the_answer_before_them(plugin, credentials, reference) -> None:
    full = reference(CHATML_PROMPT, 6)
    word = next(full[i : i + 2] for i in range(1, len(full) - 1) if full[i : i + 2].strip() == full[i : i + 2])
    for model in ("vllm_llm", "trtllm_bls"):
        chunks = invoke(plugin, credentials, model, stop=[word])
        assert text_of(chunks) == full[: full.index(word)], model
        assert chunks[-1]["delta"]["finish_reason"] == "stop"


def test_structured_output_reaches_an_older_vllm_backend_under_its_own_key(plugin, credentials) -> None:
    params = {"response_format": "json_schema", "json_schema": json.dumps({"schema": SCHEMA, "name": "city"})}
    chunks = invoke(plugin, credentials, "vllm_llm_old", max_tokens=12, **params)
    assert text_of(chunks).startswith('{"city": "')  # the grammar wrote it; a random model would not


def test_a_backend_error_mid_stream_ends_the_stream_with_the_mapped_error(plugin, credentials) -> None:
    seen = []
    with pytest.raises(PluginError) as raised:
        for message in plugin.stream("model", "invoke_llm", request(credentials, "vllm_midstream", conversation())):
            seen.append(message.data)
    assert raised.value.error_type == "InvokeServerUnavailableError"
    assert "the engine lost its GPU" in raised.value.message
    assert 1 <= len(seen) <= 2 and plugin.alive()


# --- TensorRT-LLM ----------------------------------------------------------------------------------


def test_trtllm_ensemble_streams_each_steps_tokens(plugin, credentials) -> None:
    chunks = invoke(plugin, credentials, "trtllm_ensemble", chat_template="llama3")
    assert_streamed(chunks)


def test_trtllm_bls_cumulative_text_arrives_as_deltas(plugin, credentials, reference) -> None:
    chunks = invoke(plugin, credentials, "trtllm_bls")
    assert_streamed(chunks)
    assert text_of(chunks) == reference(CHATML_PROMPT, 6)


def test_trtllm_bls_takes_its_image_as_a_data_url(plugin, credentials) -> None:
    form = {**credentials, "chat_template": "custom", "custom_chat_template": json.dumps(SMOLVLM)}
    text_only = usage(invoke(plugin, form, "trtllm_bls", conversation(text="What is this?")))
    chunks = invoke(plugin, form, "trtllm_bls", conversation(image_part(fx.png()), text="What is this?"))
    assert usage(chunks)["prompt_tokens"] > text_only["prompt_tokens"]
    with pytest.raises(PluginError) as raised:  # its image input holds one image
        invoke(plugin, form, "trtllm_bls", conversation(image_part(fx.png()), image_part(fx.png()), text="?"))
    assert raised.value.error_type == "InvokeBadRequestError" and "at most 1 image" in raised.value.message


# --- the generate endpoint -----------------------------------------------------------------------


def test_generate_endpoint_streams_events_from_a_model_with_its_own_names(plugin, credentials) -> None:
    chunks = invoke(plugin, {**credentials, **GENERATE, "chat_template": "chatml"}, "generate_llm")
    assert text_of(chunks)
    assert chunks[-1]["delta"]["finish_reason"] in ("stop", "length")


def test_generate_endpoint_error_event_after_200_is_mapped(plugin, credentials) -> None:
    with pytest.raises(PluginError) as raised:
        invoke(plugin, {**credentials, **GENERATE}, "generate_midstream")
    assert raised.value.error_type == "InvokeServerUnavailableError"
    assert "generation failed half way" in raised.value.message


# --- the form, the schema and validation ---------------------------------------------------------


def schema_of(plugin, credentials, model) -> dict:
    [answer] = plugin.call("model", "get_ai_model_schemas", {**request(credentials, model, []), "model_type": "llm"})
    return answer["model_schema"]


def test_features_and_rules_follow_each_interface(plugin, credentials) -> None:
    vllm = schema_of(plugin, credentials, "vllm_llm")
    assert sorted(vllm["features"]) == ["multi-tool-call", "stream-tool-call", "tool-call"]  # chatml: no images
    assert {"response_format", "json_schema"} <= {r["name"] for r in vllm["parameter_rules"]}
    assert vllm["model_properties"]["context_size"] == 8192
    generate = schema_of(plugin, {**credentials, **GENERATE, "chat_template": "gemma3"}, "generate_llm")
    assert generate["features"] == []  # text only on that path, and Gemma 3 renders no tools
    assert "response_format" not in {r["name"] for r in generate["parameter_rules"]}


def test_validation_probes_a_backend_and_refuses_a_model_that_fits_nothing(plugin, credentials) -> None:
    data = {
        "provider": "triton_multimodal",
        "model_type": "llm",
        "model": "trtllm_ensemble",
        "credentials": credentials,
    }
    [answer] = plugin.call("model", "validate_model_credentials", data)
    assert answer["result"] is True
    with pytest.raises(PluginError) as raised:
        plugin.call("model", "validate_model_credentials", {**data, "model": "nofit_llm"})
    assert raised.value.error_type == "CredentialsValidateFailedError"
    assert "fits no chat interface" in raised.value.message
    assert "input 'text_input' (TYPE_STRING)" in raised.value.message
