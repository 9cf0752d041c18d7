"""Test fixture: a model with the vLLM backend's interface and answers (triton-inference-server/vllm_backend).

The config is the backend's auto-completed one (decoupled, not batched). Per request, as
the backend's ``GenerateRequest`` reads it: ``text_input`` (a prompt already templated);
``image``, each element a base64-encoded image file; ``stream``; ``exclude_input_in_output``
(absent: the prompt is echoed when not streaming; streaming with an echo is an error);
``sampling_parameters`` JSON (SamplingParams names; an unknown key makes the backend's
parser return None, which fails as its ``lora_name`` lookup does); ``return_finish_reason``
and ``return_num_input_tokens`` / ``return_num_output_tokens``.

Answers: streaming, one response per step with the new text (``text_output``), the last
with the FINAL flag; otherwise one response with the whole text (the prompt first when
echoed). ``finish_reason`` is ``str(None)`` until the last; ``num_output_tokens`` counts
the tokens of each response. Errors: "Error generating stream: ..." with FINAL.

Fixture knobs (config parameters): ``structured_key``, the key structured output comes
under (``structured_outputs`` from vllm_backend 25.12, ``guided_decoding`` before);
``fail_after``: fail after that many streamed responses (a backend error mid-stream).
"""

import base64
import json
import threading

import numpy as np
import triton_python_backend_utils as pb_utils
from engine_client import FINAL, config_parameter, generate, tensor, value, values

# The SamplingParams fields the fixture applies; any other known field is accepted and ignored.
KNOWN = {"n", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "min_tokens", "presence_penalty",
         "frequency_penalty", "repetition_penalty", "ignore_eos", "skip_special_tokens", "lora_name"}  # fmt: skip


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        assert pb_utils.using_decoupled_model_transaction_policy(config), "the vLLM backend is decoupled"
        self.structured_key = config_parameter(args, "structured_key", "structured_outputs")
        self.fail_after = int(config_parameter(args, "fail_after", "0") or 0)

    def execute(self, requests):
        for request in requests:
            threading.Thread(target=self._serve, args=(request,), daemon=True).start()
        return None

    def _serve(self, request):
        sender = request.get_response_sender()
        try:
            self._answer(request, sender)
        except Exception as exc:
            response = pb_utils.InferenceResponse(
                output_tensors=[tensor("text_output", [b"N/A"], np.object_)],
                error=pb_utils.TritonError(f"Error generating stream: {exc}"),
            )
            sender.send(response, flags=FINAL)

    def _answer(self, request, sender):
        prompt = value(request, "text_input")
        images = [base64.b64decode(v) for v in values(request, "image")]
        stream = bool(value(request, "stream", False))
        exclude = value(request, "exclude_input_in_output")
        prepend = (not exclude) if exclude is not None else not stream
        if prepend and stream:
            raise ValueError("When streaming, `exclude_input_in_output` = False is not allowed.")
        sampling = self._sampling(value(request, "sampling_parameters", "{}"))
        if sampling is None:  # what TritonSamplingParams.from_dict returns for a key it cannot take
            raise AttributeError("'NoneType' object has no attribute 'lora_name'")
        wants = {name: bool(value(request, f"return_{name}", False)) for name in
                 ("finish_reason", "num_input_tokens", "num_output_tokens")}  # fmt: skip
        steps, total, prompt_tokens, finish = 0, "", 0, ""
        for step in generate(prompt, images, sampling):
            steps += 1
            total, prompt_tokens, finish = step["total"], step["prompt_tokens"], step["finish"]
            if self.fail_after and steps > self.fail_after:
                raise RuntimeError("the engine lost its GPU")
            if stream:
                if sender.is_cancelled():
                    cancelled = pb_utils.TritonError("Request was cancelled", pb_utils.TritonError.CANCELLED)
                    sender.send(pb_utils.InferenceResponse(error=cancelled), flags=FINAL)
                    return
                outputs = self._outputs(step["delta"], finish or "None", prompt_tokens, 1, wants)
                sender.send(pb_utils.InferenceResponse(outputs), flags=FINAL if finish else 0)
        if not stream:
            text = (prompt if prepend else "") + total
            sender.send(
                pb_utils.InferenceResponse(self._outputs(text, finish, prompt_tokens, steps, wants)), flags=FINAL
            )

    def _sampling(self, raw):
        params = json.loads(raw)
        engine = {"stop_mode": "exclude", "max_tokens": 16}  # vLLM's own default max_tokens
        for key, item in params.items():
            if key == self.structured_key:
                guide = json.loads(item)
                engine.update({"json_schema": guide["json"]} if "json" in guide else {"json_object": True})
            elif key not in KNOWN:
                return None
            elif item is not None:
                engine[key] = item
        return engine

    def _outputs(self, text, finish, prompt_tokens, new_tokens, wants):
        outputs = [tensor("text_output", [text.encode("utf-8")], np.object_)]
        if wants["finish_reason"]:
            outputs.append(tensor("finish_reason", [finish.encode()], np.object_))
        if wants["num_input_tokens"]:
            outputs.append(tensor("num_input_tokens", [prompt_tokens], np.uint32))
        if wants["num_output_tokens"]:
            outputs.append(tensor("num_output_tokens", [new_tokens], np.uint32))
        return outputs
