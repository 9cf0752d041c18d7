"""Recognising a chat model's interface from its config, each interface's request, and reading its answers."""

from __future__ import annotations

import base64
import json

import pytest

from tests.backend_configs import (
    BLS_IMAGE_INPUTS,
    TRTLLM_INPUTS,
    TRTLLM_OUTPUTS,
    VLLM_INPUTS,
    VLLM_OUTPUTS,
    as_json,
)
from tritonmm.chat import ChatParams
from tritonmm.errors import InvalidInput
from tritonmm.interfaces.answers import AnswerReader, StopFilter
from tritonmm.interfaces.recognise import Interface, recognise
from tritonmm.interfaces.requests import TRTLLM_DEFAULT_MAX_TOKENS, generate_body, tensor_request
from tritonmm.structured_output import parse_response_format
from tritonmm.transport.tensors import decode

VLLM = as_json(VLLM_INPUTS, VLLM_OUTPUTS, backend="vllm")
ENSEMBLE = as_json(
    TRTLLM_INPUTS, TRTLLM_OUTPUTS, platform="ensemble", backend="", max_batch_size=64, decoupled=False,
    steps=["preprocessing", "tensorrt_llm", "postprocessing"],
)  # fmt: skip
BLS = as_json(
    TRTLLM_INPUTS + BLS_IMAGE_INPUTS, TRTLLM_OUTPUTS, max_batch_size=64, parameters={"accumulate_tokens": "true"}
)
PLAIN = as_json(
    [("prompt", "TYPE_STRING", (1,), False), ("max_new_tokens", "TYPE_INT32", (1,), True)],
    [("completion", "TYPE_STRING", (1,), False)],
)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def steps(decoupled: set[str]):
    return lambda name: as_json([], [], name=name, decoupled=name in decoupled)


def sent(tensors) -> dict:
    return {t.spec.name: (decode(t.spec.wire_dtype, t.raw()), list(t.shape)) for t in tensors}


# --- recognition ---------------------------------------------------------------------------


def test_vllm_is_recognised_with_its_image_input() -> None:
    iface = recognise("llm", VLLM)
    assert (iface.kind, iface.decoupled, iface.batched, iface.image_input) == (Interface.VLLM, True, False, "image")


def test_an_ensemble_streams_when_one_of_its_steps_is_decoupled() -> None:
    assert recognise("llm", ENSEMBLE, step_config=steps({"tensorrt_llm"})).decoupled
    assert not recognise("llm", ENSEMBLE, step_config=steps(set())).decoupled
    assert recognise("llm", ENSEMBLE).kind is Interface.TRTLLM_ENSEMBLE


def test_bls_takes_images_as_a_data_url_and_streams_cumulative_text() -> None:
    iface = recognise("llm", BLS)
    assert (iface.kind, iface.batched, iface.cumulative, iface.image_input) == (
        Interface.TRTLLM_BLS, True, True, "image_url_input",
    )  # fmt: skip


def test_our_own_contract_is_left_to_the_contract_path() -> None:
    ours = as_json([], [], parameters={"tmm.task": "chat"})
    assert recognise("chat", ours) is None
    assert recognise("llm", VLLM, choice="tritonmm") is None


def test_the_generate_endpoint_takes_the_names_from_the_form() -> None:
    iface = recognise("llm", PLAIN, text_input="prompt", text_output="completion")
    assert (iface.kind, iface.text_input, iface.text_output) == (Interface.GENERATE, "prompt", "completion")


def test_a_model_that_fits_nothing_is_refused_naming_what_each_interface_needs() -> None:
    with pytest.raises(InvalidInput) as refused:
        recognise("odd", PLAIN)
    message = str(refused.value)
    assert "fits no chat interface" in message
    assert "the vLLM backend needs input 'text_input' (TYPE_STRING)" in message
    assert "input 'sampling_parameters' (TYPE_STRING)" in message
    assert "input 'max_tokens' (TYPE_INT32)" in message
    assert "its inputs: prompt (TYPE_STRING), max_new_tokens (TYPE_INT32)" in message
    assert "can be set in the model's form" in message


def test_a_chosen_interface_the_model_lacks_is_refused_by_what_is_missing() -> None:
    not_decoupled = as_json(VLLM_INPUTS, VLLM_OUTPUTS, decoupled=False)
    with pytest.raises(InvalidInput, match="is not the vLLM backend; .* needs the decoupled transaction policy"):
        recognise("llm", not_decoupled, choice="vllm")
    wrong_dtype = as_json([("text_input", "TYPE_STRING", (1,), False), ("max_tokens", "TYPE_INT64", (1,), False)],
                          TRTLLM_OUTPUTS)  # fmt: skip
    with pytest.raises(InvalidInput, match=r"input 'max_tokens' as TYPE_INT32 \(it is TYPE_INT64\)"):
        recognise("llm", wrong_dtype, choice="trtllm_bls")


# --- requests --------------------------------------------------------------------------------


def test_vllm_request_carries_sampling_json_images_and_the_switches() -> None:
    iface = recognise("llm", VLLM)
    params = ChatParams(max_tokens=5, temperature=0.2, top_p=0.9, top_k=4, seed=7, stop=("END",))
    inputs, outputs = tensor_request(iface, "PROMPT", [b"\x89PNG..."], params, "structured_outputs")
    got = sent(inputs)
    assert got["text_input"] == ([b"PROMPT"], [1])
    assert got["image"] == ([base64.b64encode(b"\x89PNG...")], [1])
    assert json.loads(got["sampling_parameters"][0][0]) == {
        "max_tokens": 5, "temperature": 0.2, "top_p": 0.9, "top_k": 4, "seed": 7, "stop": ["END"],
    }  # fmt: skip
    for flag in ("stream", "exclude_input_in_output", "return_finish_reason", "return_num_input_tokens"):
        assert got[flag] == ([True], [1])
    assert outputs == ["text_output", "finish_reason", "num_input_tokens", "num_output_tokens"]


def test_vllm_structured_output_goes_under_the_key_given_as_a_json_string() -> None:
    iface = recognise("llm", VLLM)
    params = ChatParams(response_format=parse_response_format("json_schema", json.dumps({"schema": SCHEMA})))
    for key in ("structured_outputs", "guided_decoding"):
        sampling = json.loads(sent(tensor_request(iface, "p", [], params, key)[0])["sampling_parameters"][0][0])
        assert json.loads(sampling[key]) == {"json": SCHEMA}
    any_object = ChatParams(response_format=parse_response_format("json_object", None))
    sampling = json.loads(
        sent(tensor_request(iface, "p", [], any_object, "guided_decoding")[0])["sampling_parameters"][0][0]
    )
    assert json.loads(sampling["guided_decoding"]) == {"json_object": True}


def test_trtllm_request_has_one_tensor_per_value_with_the_config_dtypes_and_batch_dimension() -> None:
    iface = recognise("llm", ENSEMBLE, step_config=steps({"tensorrt_llm"}))
    params = ChatParams(temperature=0.5, top_k=3, seed=2**40, stop=("a", "bc"))
    inputs, outputs = tensor_request(iface, "P", [], params, "")
    got = sent(inputs)
    assert got["max_tokens"] == ([TRTLLM_DEFAULT_MAX_TOKENS], [1, 1])
    assert got["temperature"] == ([0.5], [1, 1])
    assert got["top_k"] == ([3], [1, 1])
    assert got["seed"] == ([2**40], [1, 1])
    assert {t.spec.name: t.spec.wire_dtype for t in inputs}["seed"] == "UINT64"
    assert got["stop_words"] == ([b"a", b"bc"], [1, 2])
    assert got["stream"] == ([True], [1, 1])
    assert "top_p" not in got  # not set: the model's default
    assert outputs == ["text_output", "num_input_tokens", "num_output_tokens"]  # no finish_reason output


def test_trtllm_guided_decoding_and_the_bls_image_as_a_jpeg_data_url() -> None:
    iface = recognise("llm", BLS)
    params = ChatParams(max_tokens=9, response_format=parse_response_format("json_schema", json.dumps(SCHEMA)))
    got = sent(tensor_request(iface, "P", [b"JPEGDATA"], params, "")[0])
    assert got["guided_decoding_guide_type"] == ([b"json_schema"], [1, 1])
    assert json.loads(got["guided_decoding_guide"][0][0]) == SCHEMA
    assert got["image_url_input"] == ([b"data:image/jpeg;base64," + base64.b64encode(b"JPEGDATA")], [1, 1])
    assert got["max_tokens"] == ([9], [1, 1])


def test_structured_output_for_a_model_without_guided_decoding_is_refused() -> None:
    plain_trt = as_json(TRTLLM_INPUTS[:4], TRTLLM_OUTPUTS)
    iface = recognise("llm", plain_trt)
    params = ChatParams(response_format=parse_response_format("json_object", None))
    with pytest.raises(InvalidInput, match="cannot give structured output"):
        tensor_request(iface, "P", [], params, "")


def test_generate_body_uses_inputs_by_name_and_parameters_for_the_rest() -> None:
    iface = recognise("llm", PLAIN, text_input="prompt", text_output="completion")
    body = generate_body(iface, "P", ChatParams(max_tokens=4, temperature=0.3), "structured_outputs")
    assert body == {"prompt": "P", "parameters": {"max_tokens": 4, "temperature": 0.3}}
    vllm_body = generate_body(recognise("llm", VLLM, choice="generate"), "P", ChatParams(max_tokens=4), "x")
    assert vllm_body["text_input"] == "P" and vllm_body["stream"] is True
    assert json.loads(vllm_body["sampling_parameters"]) == {"max_tokens": 4}
    assert vllm_body["exclude_input_in_output"] is True and vllm_body["return_num_output_tokens"] is True


# --- answers ---------------------------------------------------------------------------------


def reader(config=VLLM, *, stops=(), max_tokens=None, prompt="", echo=False, **kwargs) -> AnswerReader:
    return AnswerReader(
        recognise("llm", config, **kwargs), stops=stops, max_tokens=max_tokens, prompt=prompt, echo=echo
    )


def test_deltas_pass_through_and_counts_add_up() -> None:
    answer = reader()
    texts = [
        answer.feed({"text_output": [b"Hel"], "finish_reason": [b"None"], "num_input_tokens": [12], "num_output_tokens": [1]}),
        answer.feed({"text_output": [b"lo"], "finish_reason": [b"length"], "num_input_tokens": [12], "num_output_tokens": [2]}),
    ]  # fmt: skip
    assert texts == ["Hel", "lo"]
    assert (answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == (12, 3, "length")


def test_cumulative_text_is_turned_into_deltas() -> None:
    answer = reader(BLS)
    assert [answer.feed({"text_output": [[t]]}) for t in (b"The", b"The cat", b"The cat sat")] == [
        "The",
        " cat",
        " sat",
    ]


def test_generate_events_are_read_like_tensors() -> None:
    answer = reader(PLAIN, choice="generate", text_input="prompt", text_output="completion")
    assert answer.feed({"completion": "abc", "model_name": "odd"}) == "abc"
    assert not answer.counts_known


def test_a_prompt_echo_is_cut_from_a_blocking_answer() -> None:
    answer = reader(prompt="<s>Q:", echo=True)
    assert answer.feed({"text_output": [b"<s>Q: A!"]}) == " A!"


def test_a_stop_sequence_ends_the_text_even_when_the_backend_kept_it() -> None:
    answer = reader(ENSEMBLE, stops=("STOP",), max_tokens=50)
    shown = [answer.feed({"text_output": [[t]], "num_output_tokens": [[1]]}) for t in (b"one ", b"ST", b"OP", b"more")]
    assert shown == ["one ", "", "", ""]
    assert answer.stopped and answer.finish() == "" and answer.finish_reason == "stop"


def test_held_back_text_that_never_became_a_stop_is_released() -> None:
    stops = StopFilter(["</end>"])
    assert stops.feed("x </e") == "x "
    assert stops.feed("arth") == "</earth"
    assert stops.feed(" <") == " "
    assert stops.flush() == "<"


def test_trtllm_answer_that_used_every_token_finished_by_length() -> None:
    answer = reader(ENSEMBLE, max_tokens=2)
    answer.feed({"text_output": [[b"a"]], "num_output_tokens": [[1]]})
    answer.feed({"text_output": [[b"b"]], "num_output_tokens": [[1]]})
    assert answer.finish_reason == "length"


def test_a_character_still_missing_bytes_waits_for_the_next_cumulative_text() -> None:
    answer = reader(BLS)
    shown = [answer.feed({"text_output": [[t.encode()]]}) for t in ("ca", "caf\ufffd", "café", "café \ufffd")]
    assert shown == ["ca", "f", "é", " "]
    assert answer.finish() == "\ufffd"  # bytes that never completed are shown at the end, as decoded
